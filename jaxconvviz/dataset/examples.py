"""``jcv.dataset_examples``: every unit's top dataset examples and statistics.

The host loop around :mod:`jaxconvviz.dataset.stream`: it opens the source
(:func:`~jaxconvviz.dataset.sources.open_source`, which refuses an empty or
unreadable one before any compute), iterates this process's shard of it in
decoded batches (:func:`~jaxconvviz.dataset.loader.iterate`: grain worker
threads decode while the devices compute), puts each batch on the local
devices (split over a 1-D ``Mesh``) and calls the one jitted
:func:`~jaxconvviz.dataset.stream.update`. Every ``checkpoint_every``
images, at the end, and on Ctrl-C (single process) the states of all
processes are gathered (``process_allgather``) and merged; process 0
writes the checkpoint. Memory does not grow with the dataset except for
the per-image names and transforms (24 bytes each).
"""

from __future__ import annotations

import math
import sys
import time
from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxconvviz._interrupt import before_forced_exit
from jaxconvviz._types import Params
from jaxconvviz.backend import bind
from jaxconvviz.dataset import checkpoint as ckpt
from jaxconvviz.dataset import stream
from jaxconvviz.dataset.loader import iterate
from jaxconvviz.dataset.result import DatasetExamples, LayerExamples
from jaxconvviz.dataset.sources import open_source
from jaxconvviz.errors import InputError
from jaxconvviz.featureviz.progress import format_seconds
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.models.predict import check_layers
from jaxconvviz.models.receptive import receptive_field
from jaxconvviz.models.vgg import resolve_model
from jaxconvviz.run import Run

#: ``Run.batch_size=None``: images per device and step.
DEFAULT_BATCH = {"cpu": 16}
DEFAULT_BATCH_ACCEL = 64
#: Off a terminal, one progress line per this many seconds at most.
LINE_SECONDS = 10.0
_TAG = "jaxconvviz-dataset-examples-checkpoint/1"
_AXIS = "batch"


def _positive(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise InputError(f"{name} must be a positive int; got {v!r}.")
    return int(v)


def _default_size(model: ConvNet) -> int:
    h, w, _ = model.input_shape
    return int(h) if h is not None and h == w else 224


class _Reporter:
    """Images/s and ETA through ``Run.progress`` (process 0 only): a tqdm
    bar on a terminal, else a line at most every :data:`LINE_SECONDS`; a
    callable gets ``(done, total)`` after every batch."""

    def __init__(self, progress, total: int):
        self.total, self.fn, self.bar = total, None, None
        self.t0 = self.last = time.perf_counter()
        if progress is None or progress is False or jax.process_index() != 0:
            return
        if progress is True:
            stream_ = sys.stderr
            if getattr(stream_, "isatty", lambda: False)():
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="img", desc="examples",
                                file=stream_, leave=False)
            else:
                self.fn = self._line
        else:
            self.fn = progress

    def _line(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self.last < LINE_SECONDS:
            return
        self.last = now
        el = now - self.t0
        rate = done / el if el > 0 else math.nan
        left = (total - done) / rate if rate and rate > 0 else math.nan
        print(f"examples: {done}/{total} images, {rate:.1f} images/s, "
              f"{format_seconds(el)} elapsed, ~{format_seconds(left)} left",
              file=sys.stderr, flush=True)

    def __call__(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
        elif self.fn is not None:
            self.fn(done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _wait(tree) -> None:
    """Wait for ``tree``'s arrays by polling, so the main thread keeps running
    Python and takes Ctrl-C at once (a blocking wait would hold it inside the
    runtime until the batch finishes; see :mod:`jaxconvviz._interrupt`)."""
    leaves = jax.tree.leaves(tree)
    while not all(x.is_ready() for x in leaves):
        time.sleep(0.005)


def _flat(state: dict, layers) -> dict:
    return {f"{i}:{f}": np.asarray(v) for i, name in enumerate(layers)
            for f, v in state[name].items()}


def _unflat(arrays: dict, layers) -> dict:
    out = {name: {} for name in layers}
    for key, v in arrays.items():
        i, _, f = key.partition(":")
        if i.isdigit():
            out[layers[int(i)]][f] = v
    return out


def _gather(state, transforms, bad, program):
    """Every process's state merged (a collective when there are several),
    with the transforms and bad files of all processes."""
    host = jax.tree.map(np.asarray, state)
    if jax.process_count() == 1:
        return host, transforms, list(bad)
    from jax.experimental import multihost_utils as mh

    every = mh.process_allgather(host)  # leaves (P, ...)
    states = [jax.tree.map(lambda a, p=p: a[p], every) for p in range(
        jax.process_count())]
    merged = stream.merge_states(states, program)
    tr = mh.process_allgather(transforms)
    transforms = tr.max(axis=0) + tr.min(axis=0)  # each row is set by one process
    text = "\n".join(f"{i}\t{n}\t{r}".replace("\0", "") for i, n, r in bad).encode()
    size = int(mh.process_allgather(np.asarray(len(text))).max())
    buf = np.zeros(size + 1, np.uint8)
    buf[:len(text)] = np.frombuffer(text, np.uint8)
    rows = []
    for b in mh.process_allgather(buf):
        for line in bytes(b).rstrip(b"\0").decode().splitlines():
            i, n, r = line.split("\t", 2)
            rows.append((int(i), n, r))
    return merged, transforms, sorted(rows)


def _meta(ds, program, geoms, size, border, model) -> dict:
    return {"format": _TAG, "fingerprint": ds.fingerprint(), "n": len(ds),
            "layers": [g.name for g in geoms], "k": program.k, "size": size,
            "border": border, "model": model.name_,
            "channels": [g.channels for g in geoms]}


def _resume(folder, want: dict):
    got = ckpt.load(folder)
    if got is None:
        return None
    arrays, meta = got
    for key in ("format", "fingerprint", "n", "layers", "k", "size", "border",
                "model", "channels"):
        if meta.get(key) != want[key]:
            raise InputError(
                f"checkpoint {str(folder)!r} belongs to another pass: its {key} is "
                f"{str(meta.get(key))[:80]!r}, this pass's is {str(want[key])[:80]!r}; "
                "use another checkpoint folder or resume=False.")
    return arrays, meta


class Plan(NamedTuple):
    """What :func:`prepare` resolves before any compute."""

    model: ConvNet  # bound to its backend, in the compute dtype
    layers: tuple[str, ...]
    size: int
    geoms: tuple
    program: stream.Program
    batch_size: int  # images per process and step
    rows: object  # sharding (or device) of a batch
    repl: object  # sharding (or device) of the params and the state


def prepare(params: Params, *, model: ConvNet | None = None, layers=None, k: int = 9,
            run: Run | None = None, border: str = "exclude",
            size: int | None = None) -> Plan:
    """Check the arguments of :func:`dataset_examples` and build its one
    compiled program (also the benchmark's in-memory baseline)."""
    model = resolve_model(params, model=model)
    run = Run() if run is None else run
    if not isinstance(run, Run):
        raise InputError(f"run must be None or a jcv.Run(...); got {run!r:.80}.")
    layers = check_layers(model, model.conv_layers if layers is None else layers,
                          model.layer_names)
    layers = tuple(dict.fromkeys(layers))
    k = _positive(k, "k")
    size = _default_size(model) if size is None else _positive(size, "size")
    geoms = stream.geometry(model, layers, size, border)
    rank = jax.process_index()
    devs = tuple(d for d in (run.devices or jax.local_devices())
                 if d.process_index == rank)
    if not devs:
        raise InputError("run.devices names no device of this process.")
    per = DEFAULT_BATCH.get(devs[0].platform, DEFAULT_BATCH_ACCEL)
    bs = run.batch_size or per * len(devs)
    bs = -(-bs // len(devs)) * len(devs)
    if run.dtype != "float32":
        model = model.with_dtype(jax.numpy.dtype(run.dtype))
    model = bind(model, library_gradients=False)
    if len(devs) > 1:
        mesh = Mesh(np.asarray(devs, dtype=object), (_AXIS,))
        rows, repl = NamedSharding(mesh, P(_AXIS)), NamedSharding(mesh, P())
    else:
        rows = repl = devs[0]
    program = stream.make_program(model, geoms, k, repl if len(devs) > 1 else None)
    return Plan(model, layers, size, geoms, program, bs, rows, repl)


def dataset_examples(params: Params, source, *, layers=None, k: int = 9,
                     model: ConvNet | None = None, run: Run | None = None,
                     border: str = "exclude", checkpoint=None,
                     checkpoint_every: int = 1000, resume: bool = False,
                     size: int | None = None) -> DatasetExamples:
    """Each unit's top-k dataset examples and its statistics, in one streamed pass.

    Args:
      params: the model's weights.
      source: a folder (recursive; .jpg .jpeg .png .webp .bmp .gif), a glob,
        a list of paths, a ``.txt`` file of paths, an RGB array ``(n, h, w,
        3)`` in [0, 255], or a grain ``RandomAccessDataSource``
        (:func:`~jaxconvviz.dataset.sources.open_source`). The global image
        index is the position in its sorted order.
      layers: layer names (spatial or dense); None: every conv layer.
      k: examples per unit.
      model: the network; None infers the VGG16 preset from ``params``.
      run: :class:`~jaxconvviz.Run`: ``batch_size`` images per process and
        step (rounded up to a multiple of the devices; None: 16 per CPU
        device, 64 per accelerator), ``devices`` (this process's devices
        the batch is split over; None: all local devices), ``dtype``,
        ``progress`` (images/s and the ETA).
      border: ``"exclude"`` leaves out positions whose receptive field lies
        more than half outside the image (of the top-k and the statistics);
        ``"keep"`` and ``"mark"`` keep them (the same computation; the
        result always flags border examples in :attr:`LayerExamples.border`).
        A layer with no position mostly inside the image (a deep layer at a
        small size) keeps its most central ones, flagged, with a
        :class:`~jaxconvviz.dataset.stream.BorderWarning`.
      checkpoint: a folder for checkpoints (None: none).
      checkpoint_every: images between checkpoints.
      resume: continue from ``checkpoint`` when it holds one of this pass
        (same source, layers, k, size, border, model); the result equals an
        uninterrupted pass's.
      size: side of the model input the images are resized to (None: the
        model's fixed input size, else 224).

    Returns:
      :class:`~jaxconvviz.dataset.result.DatasetExamples` (on every
      process; process 0 should write it). Under ``jax.distributed`` each
      process reads its own shard of the images.

    Raises:
      InputError: bad arguments or an empty/unreadable source, before any
        compute.
    """
    plan = prepare(params, model=model, layers=layers, k=k, run=run,
                   border=border, size=size)
    checkpoint_every = _positive(checkpoint_every, "checkpoint_every")
    ds = open_source(source)
    model, geoms, program = plan.model, plan.geoms, plan.program
    layers, size, bs, rows, repl = plan.layers, plan.size, plan.batch_size, \
        plan.rows, plan.repl
    rank, count = jax.process_index(), jax.process_count()
    k, run = program.k, Run() if run is None else run

    n = len(ds)
    start, state = 0, stream.init_state(geoms, k)
    transforms = np.zeros((n, 6), np.float32)
    bad: list = []
    meta = _meta(ds, program, geoms, size, border, model)
    if resume and checkpoint is not None:
        got = _resume(checkpoint, meta)
        if got is not None:
            arrays, m = got
            start = int(m["end"])
            if rank == 0:  # the merged state lives on process 0 only
                bad = [(int(b[0]), str(b[1]), str(b[2])) for b in m["bad"]]
                state = _unflat(arrays, layers)
                transforms = arrays["transforms"].astype(np.float32)
    params = jax.device_put(params, repl)
    state = jax.device_put(state, repl)
    report = _Reporter(run.progress, n)
    report(start)

    def save(st, end):
        merged, tr, b = _gather(st, transforms, bad, program)
        if rank == 0:
            ckpt.save(checkpoint, {**_flat(merged, layers), "transforms": tr},
                      {**meta, "end": int(end), "bad": [list(x) for x in b]})

    # (state, images done): one name, rebound in one step, so Ctrl-C at any
    # moment saves a state and a position that belong together
    at = (state, start)
    # the newest (state, images done) whose computation has finished: what a
    # Ctrl-C saves without waiting for the batch in flight
    ready = at
    last_saved, prev = start, None

    def save_ready() -> str | None:  # on Ctrl-C, and from the CLI's backstop
        if checkpoint is None or count != 1 or ready[1] <= last_saved:
            return None
        save(*ready)
        return (f"(the checkpoint in {str(checkpoint)!r} holds {ready[1]:,} "
                "images: `--resume` continues)")

    try:
        with before_forced_exit(save_ready):
            for batch in iterate(ds, size=size, batch_size=bs, start=start,
                                 shard=(rank, count)):
                images = jax.device_put(batch.images, rows)
                index = jax.device_put(np.asarray(batch.index, np.int32), rows)
                new = stream.update(params, at[0], images, index, program=program)
                ok = batch.index >= 0
                transforms[batch.index[ok]] = batch.transforms[ok]
                bad.extend((int(i), str(nm), str(r)) for i, nm, r in batch.bad)
                at = (new, int(batch.end))
                if prev is not None:  # at most two batches in flight
                    _wait(prev[0])
                    ready = prev
                prev = at
                report(at[1])
                if checkpoint is not None and at[1] // checkpoint_every > \
                        last_saved // checkpoint_every and at[1] < n:
                    save(*at)
                    last_saved = at[1]
            if prev is not None:  # the last batch: a Ctrl-C now still saves it
                _wait(prev[0])
                ready = prev
    except KeyboardInterrupt:
        save_ready()
        raise
    finally:
        report.close()
    state, done = at
    merged, transforms, bad = _gather(state, transforms, sorted(set(bad)), program)
    if checkpoint is not None and rank == 0 and done > last_saved:
        ckpt.save(checkpoint, {**_flat(merged, layers), "transforms": transforms},
                  {**meta, "end": int(done), "bad": [list(x) for x in bad]})
    final = stream.finalize(merged, geoms)
    out = {}
    for g in geoms:
        f = final[g.name]
        field = None
        if g.name in model.spatial_layers:
            rf = receptive_field(model, g.name, (size, size))
            field = (rf.size, rf.jump, rf.start)
        out[g.name] = LayerExamples(
            value=f["value"], index=f["index"], position=f["position"],
            border=f["border"], mean=f["mean"], std=f["std"], max=f["max"],
            frac_pos=f["frac_pos"], hist=f["hist"],
            bin_edges=stream.BIN_EDGES.copy(), count=f["count"],
            images=f["images"], hw=g.hw, field=field)
    return DatasetExamples(
        layers=out, names=[ds.name(i) for i in range(n)],
        bad=sorted((int(i), str(nm), str(r)) for i, nm, r in bad),
        transforms=transforms, input_hw=(size, size), k=k,
        model_name=model.name_, border=border, fingerprint=ds.fingerprint())


__all__ = ["Plan", "dataset_examples", "prepare"]
