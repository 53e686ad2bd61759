"""Batches of decoded images for a streaming pass: :func:`iterate`.

Why grain, and how it is used
-----------------------------
``grain`` is the JAX ecosystem's data loader: a ``MapDataset`` over a
random-access source is deterministic by construction (element ``j`` is
always the same image whatever the number of workers), which is what exact,
resumable, sharded results need. :func:`iterate` builds
``grain.MapDataset.range(m).map(decode)`` over this process's own image
indices and reads it with ``to_iter_dataset(ReadOptions(num_threads=workers,
prefetch_buffer_size=...))``: grain's reader threads decode and resize
``workers`` images at a time, and keep up to ``prefetch`` batches decoded
ahead of the consumer, so while the accelerator (or XLA's CPU threads) runs
batch ``t`` the next batches are being decoded.

Threads, not grain's worker processes (``mp_prefetch``): Pillow releases the
GIL while it decodes and resizes (the whole cost of an image), so threads
scale; processes would have to fork a process in which JAX already runs
threads (unsafe: JAX warns that ``os.fork()`` may deadlock) or spawn fresh
interpreters that re-import JAX and need a picklable source, and every
decoded batch would cross a pipe or shared memory.

Measured with ``scripts/bench_loader.py`` (200 JPEGs 640x480, quality 90 ->
224 px, batch 32, on a 2-core dev VM shared with other jobs, load average
~7.5): decode + resize costs 2.2 ms of CPU per image (grain's thread
bookkeeping adds ~0.13 ms); ``iterate`` alone gave a median 222 / 217 / 131
/ 165 images/s with 0 / 1 / 2 / 4 threads -- the two CPUs were saturated by
other jobs, so threads could not add throughput there (on free cores each
adds up to ~450 images/s of this kind, as Pillow decodes without the GIL).
With a consumer that sleeps 0.25 s per batch, as an accelerator step would,
2 threads gave 105 images/s against 72 with none; the ideal overlap,
``n / max(decode, compute)``, is 114. ``tests/test_dataset_io.py`` checks
the overlap with a slow source.

Memory: a file is refused from its header when over the pixel limit
(:func:`jaxconvviz.images.max_image_pixels`); below it, each thread holds
at most one decoded image (3 bytes a pixel, twice during a mode
conversion), plus ``prefetch * batch_size`` decoded ``size x size`` images
waiting in grain's buffer.

Bad files never stop the stream: a worker turns :class:`BadImage` into a
record, the consumer puts ``index = -1`` and zeros in that slot, appends
``(index, name, reason)`` to ``Batch.bad`` and warns once
(:class:`BadImageWarning`, one line). Slots keep their global positions, so
indices never shift.

Sharding: the global order from ``start`` is cut into steps of
``batch_size * count`` images; in each step process ``rank`` gets images
``[p + rank * batch_size, p + (rank + 1) * batch_size)``. Every process
yields the same number of batches (``ceil((n - start) / (batch_size *
count))``, slots past the end padded with ``index = -1``), so per-batch
collectives line up; ``Batch.end`` is the global position after the step
(``min(p + batch_size * count, n)``), the same on every process: a
checkpoint taken after a batch resumes with ``start=end``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from jaxconvviz.dataset.sources import (
    NO_IMAGE,
    BadImage,
    DataSource,
    decode,
    open_source,
)
from jaxconvviz.errors import InputError, InputWarning

__all__ = ["Batch", "BadImageWarning", "default_workers", "iterate", "shard_positions"]


class BadImageWarning(InputWarning):
    """A dataset file was skipped (one per file; the message is one line)."""


class Batch(NamedTuple):
    """One process's share of one step.

    Attributes:
      images: uint8 ``(B, size, size, 3)`` RGB; zeros where ``index == -1``.
      index: int32 ``(B,)`` global image index, -1 for padding or a bad file.
      transforms: float32 ``(B, 6)`` :meth:`Transform.as_array` rows (zeros
        where ``index == -1``).
      bad: ``[(index, name, reason)]`` of this batch's bad files.
      end: global position after this step (resume with ``start=end``).
    """

    images: np.ndarray
    index: np.ndarray
    transforms: np.ndarray
    bad: list
    end: int


def default_workers() -> int:
    """Decoding threads when ``workers=None``: the CPUs this process may use
    (at most 32). On an accelerator host decoding is the bottleneck, so every
    core helps; on a CPU-only run the threads share the cores with XLA's
    compute, which only costs some switching."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(32, n))


def _positive(v, name: str, *, zero: bool = False) -> int:
    lo = 0 if zero else 1
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
        kind = "a non-negative" if zero else "a positive"
        raise InputError(f"{name} must be {kind} int; got {v!r}.")
    return int(v)


def shard_positions(n: int, *, batch_size: int, start: int = 0,
                    shard: tuple[int, int] = (0, 1)) -> np.ndarray:
    """int64 ``(steps, batch_size)``: the global positions process
    ``shard[0]`` of ``shard[1]`` reads in each step (values ``>= n`` are
    padding). ``steps`` is the same for every rank."""
    rank, count = shard
    step = batch_size * count
    steps = -(-(n - start) // step) if n > start else 0
    p = start + step * np.arange(steps, dtype=np.int64)[:, None]
    return p + rank * batch_size + np.arange(batch_size, dtype=np.int64)[None, :]


def _check_shard(shard) -> tuple[int, int]:
    ok = (isinstance(shard, tuple | list) and len(shard) == 2
          and all(isinstance(v, int | np.integer) and not isinstance(v, bool)
                  for v in shard))
    if not ok or not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise InputError(f"shard must be (rank, count) with 0 <= rank < count; got "
                         f"{shard!r}.")
    return int(shard[0]), int(shard[1])


def iterate(ds, *, size: int, batch_size: int, start: int = 0,
            shard: tuple[int, int] = (0, 1), workers: int | None = None,
            prefetch: int = 2) -> Iterator[Batch]:
    """Decoded, resized batches of ``ds`` for this process (module docstring).

    Args:
      ds: a :class:`DataSource` or anything :func:`open_source` takes.
      size: model input side, pixels (images become ``size x size`` by the
        Keras rule, :data:`~jaxconvviz.dataset.sources.RESIZE_RULE`).
      batch_size: images per process per step.
      start: global position to start at (a checkpoint's ``Batch.end``).
      shard: ``(rank, count)``: this process and the number of processes.
      workers: decoding threads (None: :func:`default_workers`; 0: decode in
        the consuming thread, nothing overlaps).
      prefetch: batches decoded ahead of the consumer.

    Yields:
      :class:`Batch` per step; a bad file is warned about once
      (:class:`BadImageWarning`) and listed in ``Batch.bad``.
    """
    ds = open_source(ds)
    size = _positive(size, "size")
    batch_size = _positive(batch_size, "batch_size")
    start = _positive(start, "start", zero=True)
    prefetch = _positive(prefetch, "prefetch", zero=True)
    rank, count = _check_shard(shard)
    workers = default_workers() if workers is None else _positive(
        workers, "workers", zero=True)
    n = len(ds)
    if start > n:
        raise InputError(f"start must be in [0, {n}] (the source has {n} images); "
                         f"got {start}.")
    return _batches(ds, n, size, batch_size, start, (rank, count), workers, prefetch)


def _load(ds: DataSource, n: int, size: int, pos: int):
    if pos >= n:
        return pos, None, None, None
    try:
        a, t = decode(ds, pos, size=size)
        return pos, a, t.as_array(), None
    except BadImage as e:
        return pos, None, None, e.reason


def _records(ds, n, size, flat: np.ndarray, workers: int, buffer: int):
    """An iterator of ``_load`` records for positions ``flat``, and its
    ``close``. With workers, grain's threads start decoding now (before the
    first ``next``: the first batch overlaps the caller's compile)."""
    if workers == 0 or len(flat) == 0:
        return (_load(ds, n, size, int(p)) for p in flat), lambda: None
    import grain

    dataset = grain.MapDataset.range(len(flat)).map(
        lambda j: _load(ds, n, size, int(flat[j])))
    opts = grain.ReadOptions(num_threads=workers, prefetch_buffer_size=max(buffer, 1))
    it = iter(dataset.to_iter_dataset(opts))
    start = getattr(it, "start_prefetch", None)
    if start is not None:
        start()
    return it, getattr(it, "close", lambda: None)


def _batches(ds, n, size, batch_size, start, shard, workers, prefetch):
    pos = shard_positions(n, batch_size=batch_size, start=start, shard=shard)
    records, close = _records(ds, n, size, pos.reshape(-1), workers,
                              max(prefetch, 1) * batch_size)
    return _assemble(ds, n, size, batch_size, start, shard, pos, records, close)


def _assemble(ds, n, size, batch_size, start, shard, pos, records, close):
    try:
        yield from _steps(ds, n, size, batch_size, start, shard, pos, records)
    finally:  # also on break / KeyboardInterrupt: stop grain's threads
        close()


def _steps(ds, n, size, batch_size, start, shard, pos, records):
    step = batch_size * shard[1]
    for s in range(len(pos)):
        images = np.zeros((batch_size, size, size, 3), np.uint8)
        index = np.full((batch_size,), -1, np.int32)
        transforms = np.zeros((batch_size, 6), np.float32)
        bad = []
        for b in range(batch_size):
            p, a, t, reason = next(records)
            if p != pos[s, b]:  # pragma: no cover - grain keeps order
                raise RuntimeError(f"loader order broken: got {p}, expected "
                                   f"{pos[s, b]}")
            if a is not None:
                images[b], index[b], transforms[b] = a, p, t
            elif reason is not None:
                name = ds.name(p)
                bad.append((int(p), name, reason))
                transforms[b] = NO_IMAGE
                # repr: a name with a newline still makes one line
                warnings.warn(f"skipped image {p} ({name!r}): {reason}",
                              BadImageWarning, stacklevel=2)
        yield Batch(images, index, transforms, bad,
                    int(min(start + (s + 1) * step, n)))
