"""Images/s of the dataset loader alone (``jaxconvviz.dataset.loader.iterate``):
one JSON document on stdout. Usage::

    python scripts/bench_loader.py                      # 200 JPEGs, workers 0 1 2 4
    python scripts/bench_loader.py --folder DIR --size 224 --workers 0 8 16
    python scripts/bench_loader.py --compute 0.25       # + a sleeping 'device' step

Without ``--folder`` it writes ``--n`` distinct 640x480 JPEG crops (quality
90) of the bundled elephant photo to a temporary folder. For each worker
count it reports the median images/s of ``--reps`` full passes and the CPU
milliseconds per image (decode + resize + loader bookkeeping), plus the
machine's CPU count and load average: on a shared machine the load decides
whether threads can help. ``--compute S`` sleeps S seconds per batch in the
consumer (an accelerator step that leaves the CPU free) to show the overlap:
the ideal is ``n / max(n / decode_rate, batches * S)``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from jaxconvviz.dataset.loader import iterate  # noqa: E402
from jaxconvviz.dataset.sources import open_source  # noqa: E402
from jaxconvviz.images import ELEPHANT_PHOTO  # noqa: E402


def make_jpegs(root: Path, n: int, hw=(480, 640), seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with Image.open(ELEPHANT_PHOTO) as im:
        ele = np.asarray(im.convert("RGB"))
    h, w = hw
    for k in range(n):
        y = int(rng.integers(0, ele.shape[0] - 2 * h + 1))
        x = int(rng.integers(0, ele.shape[1] - 2 * w + 1))
        Image.fromarray(ele[y:y + 2 * h, x:x + 2 * w]).reduce(2).save(
            root / f"img{k:04d}.jpg", quality=90)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one_pass(ds, *, size, batch_size, workers, compute):
    c, t = _cpu(), time.perf_counter()
    for _ in iterate(ds, size=size, batch_size=batch_size, workers=workers):
        if compute:
            time.sleep(compute)
    wall = time.perf_counter() - t
    return len(ds) / wall, (_cpu() - c) / len(ds) * 1e3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--folder")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2, 4])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--compute", type=float, default=0.0)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = a.folder
        if folder is None:
            folder = tmp
            make_jpegs(Path(tmp), a.n)
        ds = open_source(folder)
        one_pass(ds, size=a.size, batch_size=a.batch_size, workers=1, compute=0)
        rows = []
        for w in a.workers:
            runs = [one_pass(ds, size=a.size, batch_size=a.batch_size, workers=w,
                             compute=a.compute) for _ in range(a.reps)]
            rate = statistics.median(r[0] for r in runs)
            cpu_ms = statistics.median(r[1] for r in runs)
            rows.append({"workers": w, "images_per_s": round(rate, 1),
                         "cpu_ms_per_image": round(cpu_ms, 3),
                         "runs_images_per_s": [round(r[0], 1) for r in runs]})
            print(json.dumps(rows[-1]), file=sys.stderr)
    out = {"images": len(ds), "size": a.size, "batch_size": a.batch_size,
           "compute_s_per_batch": a.compute, "cpus": len(os.sched_getaffinity(0)),
           "loadavg_1min": os.getloadavg()[0], "results": rows}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
