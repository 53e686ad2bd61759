"""Every example in the README runs, as a new user would run it.

Each fenced ``python``/``bash``/``sh`` block of README.md is one test: Python
blocks run in a fresh interpreter, shell blocks line by line in ``bash``,
both in an empty folder (a user's working directory) that sees the clone's
``scripts/`` (the README runs them as ``python scripts/...``). A block preceded by
``<!-- readme-test: skip REASON -->`` is not run (the install commands, which
CI runs itself, and examples that need a download or a cluster); the reason
is required and the skipped blocks are few (at most 10). ``<!-- readme-test: timeout S
-->`` sets the block's time limit (default 300 s on a 2-core CPU).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(
    r"((?:<!--\s*readme-test:[^>]*-->\s*\n)*)```(python|bash|sh)\n(.*?)```", re.S)
DIRECTIVE = re.compile(r"<!--\s*readme-test:\s*(\w+)\s*(.*?)\s*-->")


def _blocks():
    text = README.read_text()
    out = []
    for m in FENCE.finditer(text):
        directives = dict(DIRECTIVE.findall(m.group(1)))
        line = text[: m.start(2)].count("\n") + 1
        out.append((line, m.group(2), m.group(3), directives))
    return out


BLOCKS = _blocks()


def test_readme_blocks_are_found_and_few_are_skipped():
    assert len(BLOCKS) >= 5
    skipped = [(ln, d["skip"]) for ln, _, _, d in BLOCKS if "skip" in d]
    assert all(reason for _, reason in skipped), skipped
    assert len(skipped) <= 10, skipped
    assert "../shared" not in README.read_text()
    # the user's path only: measurement logs and knob rationale live in docs/
    assert len(README.read_text().splitlines()) <= 450


@pytest.mark.slow
@pytest.mark.parametrize("line, lang, code, directives", BLOCKS,
                         ids=[f"README.md:{b[0]}" for b in BLOCKS])
def test_readme_example_runs(line, lang, code, directives, tmp_path):
    if "skip" in directives:
        pytest.skip(f"README.md:{line}: {directives['skip']}")
    timeout = float(directives.get("timeout", 300))
    (tmp_path / "scripts").symlink_to(ROOT / "scripts")
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "MPLBACKEND": "Agg",
           "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    if lang == "python":
        argv = [sys.executable, "-c", code]
    else:
        argv = ["bash", "-euo", "pipefail", "-c", code]
    r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, (
        f"README.md:{line} ({lang}) failed with {r.returncode}:\n"
        f"{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
