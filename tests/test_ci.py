"""CI cannot hide a gap: it runs the README's test command, shows skips and
the slowest tests, and fails when an oracle test is skipped."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_command(n: int) -> str:
    text = (ROOT / "README.md").read_text()
    pattern = (r"\*\*" + str(n) + r"\..*?\*\*\s*(?:<!--.*?-->\s*)*```bash\n(.*?)```")
    blocks = re.findall(pattern, text, re.S)
    assert blocks, f"README command {n} not found"
    return blocks[0].strip()


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    cmd = _readme_command(2)
    assert cmd in ci, (cmd, ci)
    assert "-rs" in cmd and "--durations=20" in cmd
    assert "JAXCONVVIZ_REQUIRE_ORACLE=1" in ci


@pytest.mark.slow
def test_a_skipped_oracle_test_fails_the_run(tmp_path):
    """The conftest hook: with JAXCONVVIZ_REQUIRE_ORACLE=1 a skipped test that
    uses the Keras oracle fails the session; without it, it is reported."""
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_x.py").write_text(
        "import pytest\n"
        "def test_oracle(keras):\n"
        "    pytest.skip('pretend Keras is missing')\n"
        "def test_plain():\n"
        "    pass\n")

    def run(require: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "JAXCONVVIZ_REQUIRE_ORACLE": require,
               "JAX_PLATFORMS": "cpu"}
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "--rootdir", str(tmp_path), str(tmp_path)],
            capture_output=True, text=True, env=env, cwd=tmp_path)

    strict = run("1")
    assert strict.returncode == 1, strict.stdout[-2000:]
    assert "oracle/parity test(s) skipped (FAILED" in strict.stdout
    assert "test_oracle" in strict.stdout
    lax = run("0")
    assert lax.returncode == 0, lax.stdout[-2000:]
    assert "1 oracle/parity test(s) skipped (warning)" in lax.stdout
