"""Benchmark cases: each times the library's batched path and, in the same
process, the baseline it replaces, and returns JSON-ready records.

Case texts are ``KIND:ARG:ARG...`` (:func:`parse_case`):

* ``filters:LAYER:SIZE:N``  filter patterns of the first N filters of LAYER.
  Baseline: the notes' loop, one filter at a time (JAX; PyTorch with peers).
* ``atlas:SIZE``  :func:`jaxconvviz.filter_atlas` over every conv layer.
* ``notes:SIZE[:NTIME]``  the one-at-a-time loops alone (JAX, PyTorch with
  peers) on every conv layer, timed on NTIME filters per layer and scaled to
  the full atlas (the baseline of the atlas targets, as its own case so a GPU
  probe can run it separately).
* ``gradcam:N:SIZE``  Grad-CAM of N images, batched vs a per-image loop
  (and pytorch-grad-cam with peers).
* ``activations:N:SIZE``, ``loops:LAYER:SIZE:N``, ``channel:LAYER:SIZE:N``,
  ``probe:LAYER:SIZE:N``: see each function.
* ``examples:N:SIZE``, ``examples_memory:N1:N2:SIZE``: the dataset pass
  (:mod:`benchmarks.dataset_cases`).
* Peer speed cases (:mod:`benchmarks.peer_cases`): ``render``,
  ``cam``, ``resnet50``; ``directions:LAYER:SIZE:STEPS:N``
  (:mod:`benchmarks.direction_cases`, issue 32).

:func:`run_case` never drops a case: an exception becomes a record with the
error; every record is stamped with the environment (device kind, jax and
jaxlib versions, precision, git commit), dtype, chunk sizes, the device's
peak memory for the case and, where a dense peak is known, MFU.
"""

from __future__ import annotations

__all__ = ["CASES", "parse_case", "run_case"]

import time
import traceback
from collections.abc import Callable

from benchmarks import peer_cases as pc
from benchmarks.context import Ctx
from benchmarks.dataset_cases import case_examples, case_examples_memory
from benchmarks.direction_cases import case_directions
from benchmarks.filter_cases import (
    case_atlas,
    case_channel,
    case_filters,
    case_loops,
    case_notes,
)
from benchmarks.image_cases import case_activations, case_gradcam
from benchmarks.records import add_utilisation, stamp
from benchmarks.timing import CaseMemory, log

CASES: dict[str, Callable[..., list[dict]]] = {
    "filters": case_filters, "atlas": case_atlas, "notes": case_notes,
    "gradcam": case_gradcam, "activations": case_activations,
    "loops": case_loops, "channel": case_channel,
    "examples": case_examples, "examples_memory": case_examples_memory,
    "render": pc.case_render, "cam": pc.case_cam, "resnet50": pc.case_resnet50,
    "directions": case_directions,
}


def parse_case(text: str) -> tuple[str, list]:
    """``"filters:block3_conv1:64:16"`` -> ``("filters", ["block3_conv1", 64, 16])``.

    Raises:
      ValueError: an unknown kind (names the accepted ones).
    """
    parts = text.split(":")
    kind = parts[0]
    if kind not in CASES:
        raise ValueError(f"unknown case kind {kind!r} in case {text!r}; one of "
                         f"{sorted(CASES)}")
    return kind, [p if not p.isdigit() else int(p) for p in parts[1:]]


def run_case(ctx: Ctx, text: str, *, own_process: bool = False) -> list[dict]:
    """Run one case; never raises for the case's own failure.

    Returns its records, each stamped (environment, dtype, chunks), with the
    device's peak memory for the case and MFU where a peak is known; a
    failure (a bad case text included) is one record with ``error`` and the
    traceback's last lines.
    """
    t0 = time.perf_counter()
    with CaseMemory(own_process) as mem:
        try:
            kind, cargs = parse_case(text)
            recs = CASES[kind](ctx, *cargs)
        except Exception as e:  # noqa: BLE001 - a failed case is a result
            log(f"case {text} failed: {type(e).__name__}: {e}")
            recs = [{"case": text, "kind": text.split(":")[0],
                     "error": f"{type(e).__name__}: {e}",
                     "traceback": traceback.format_exc().splitlines()[-6:]}]
    memory = mem.record()
    wall = time.perf_counter() - t0
    out = []
    for r in recs:
        r = stamp(r, ctx.env)
        r["memory"] = memory
        r["case_wall_s"] = wall
        if "tflops" in r and "error" not in r:
            add_utilisation(r, ctx.env)
        out.append(r)
    return out
