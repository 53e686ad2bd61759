"""Architecture rules: compute never imports Pillow/matplotlib/h5py; the caffe
mean and the RGB<->BGR flip live only in preprocess.py; the CLI frame works."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import jaxconvviz as jcv
from jaxconvviz.cli import main

PKG = Path(jcv.__file__).parent
COMPUTE = ["jaxconvviz", "jaxconvviz.models.convnet", "jaxconvviz.models.predict",
           "jaxconvviz.models.preprocess", "jaxconvviz.featureviz.filters",
           "jaxconvviz.attribution.gradcam", "jaxconvviz.views.activation_grids",
           "jaxconvviz.views.kernels", "jaxconvviz.featureviz.atlas"]


def test_compute_modules_do_not_import_io_or_plotting():
    code = (
        "import importlib, importlib.util, sys\n"
        f"for m in {COMPUTE!r}:\n"
        "    if importlib.util.find_spec(m) is not None: importlib.import_module(m)\n"
        "bad = [m for m in ('matplotlib', 'PIL', 'h5py', 'keras', 'torch') "
        "if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "", f"compute modules imported {out}"


def test_caffe_constants_only_in_preprocess():
    pattern = re.compile(r"103\.939|116\.779|123\.68|\[\.\.\., ::-1\]")
    offenders = [p.name for p in PKG.rglob("*.py")
                 if p.name != "preprocess.py" and pattern.search(p.read_text())]
    assert offenders == []


def test_cli_help_and_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "COMMAND" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and jcv.__version__ in capsys.readouterr().out


def test_cli_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_python_dash_m_runs():
    r = subprocess.run([sys.executable, "-m", "jaxconvviz", "--version"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and jcv.__version__ in r.stdout
