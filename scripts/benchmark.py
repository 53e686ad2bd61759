"""Benchmark jaxconvviz against the one-at-a-time method of the notes and the
peers: one JSON document on stdout (progress on stderr).

The cases, timing, FLOP counts and records live in the checkout's top-level
:mod:`benchmarks` package (not in the wheel); this is its command line. Usage::

    python scripts/benchmark.py --smoke                        # CI, seconds
    python scripts/benchmark.py --out bench.json               # default cases
    python scripts/benchmark.py --dtype bfloat16 --cases atlas:128
    python scripts/benchmark.py --peers --cases filters:block3_conv1:64:64
    python scripts/benchmark.py --peers --cases cam:gradcam:4:224,resnet50:4:224
    python scripts/benchmark.py --plot a.json=H200 b.json --out docs/benchmarks.png

See ``python scripts/benchmark.py --help`` for every option and
``benchmarks/cases.py`` for the case kinds.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
