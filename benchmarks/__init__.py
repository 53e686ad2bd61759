"""Benchmarks of jaxconvviz that cannot flatter: cases, timing, FLOP counts,
dense-peak tables and JSON records. Not part of the wheel: a top-level package
of the checkout, run by ``scripts/benchmark.py``.

Modules, each importing only those above it:

* :mod:`~benchmarks.timing`, :mod:`~benchmarks.records`,
  :mod:`~benchmarks.targets`, :mod:`~benchmarks.torch_peers`,
  :mod:`~benchmarks.flops`: timing, compile counting and the device's per-case
  peak memory (``memory_stats()``; "not available" on XLA:CPU, never the
  process RSS); the environment every record carries (device kind,
  jax/jaxlib, precision, git commit), the dense-peak table with its sources
  and MFU; the issues' targets as target/measured/met; the optional PyTorch
  peers; the analytic FLOP count and XLA's cost analysis.
* :mod:`~benchmarks.context`: :class:`~benchmarks.context.Ctx`, what every
  case shares.
* :mod:`~benchmarks.filter_cases`, :mod:`~benchmarks.image_cases`,
  :mod:`~benchmarks.peer_cases`: the cases (lucent and pytorch-grad-cam side
  by side in the peer cases; absent peers are recorded as absent).
* :mod:`~benchmarks.cases`: the case registry and
  :func:`~benchmarks.cases.run_case`, which records a failed case with its
  error instead of dropping it.
* :mod:`~benchmarks.plot`, :mod:`~benchmarks.cli`: the figures and
  ``scripts/benchmark.py``'s command line.

This package imports the library; the library never imports it.
"""

from __future__ import annotations

__all__ = ["cases", "cli", "context", "filter_cases", "flops", "image_cases",
           "peer_cases", "plot", "records", "targets", "timing", "torch_peers"]
