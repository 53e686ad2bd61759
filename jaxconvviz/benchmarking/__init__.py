"""Benchmarks of jaxconvviz that cannot flatter: cases, timing, FLOP counts,
dense-peak tables and JSON records.

* :mod:`~jaxconvviz.benchmarking.cases`: the cases (filters, atlas, notes'
  loops, Grad-CAM, ...) and :func:`~jaxconvviz.benchmarking.cases.run_case`,
  which records a failed case with its error instead of dropping it.
* :mod:`~jaxconvviz.benchmarking.peer_cases`: lucent and pytorch-grad-cam
  side by side (optional peers; absent ones are recorded as absent).
* :mod:`~jaxconvviz.benchmarking.flops`: the analytic count and XLA's cost
  analysis of the compiled programs.
* :mod:`~jaxconvviz.benchmarking.timing`: timing, compile counting, the
  device's per-case peak memory (``memory_stats()``; "not available" on
  XLA:CPU, never the process RSS).
* :mod:`~jaxconvviz.benchmarking.records`: the environment every record
  carries (device kind, jax/jaxlib, precision, git commit), the dense-peak
  table with its sources, MFU.
* :mod:`~jaxconvviz.benchmarking.targets`: the issues' targets as
  target/measured/met.
* :mod:`~jaxconvviz.benchmarking.cli`: ``scripts/benchmark.py``.

This package imports the library; the library never imports it.
"""

from __future__ import annotations

__all__ = ["cases", "cli", "flops", "peer_cases", "plot", "records", "targets",
           "timing", "torch_peers"]
