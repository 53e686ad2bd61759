"""Architecture rules: compute never imports Pillow/matplotlib/h5py; the caffe
mean and the RGB<->BGR flip live only in preprocess.py; the CLI frame works."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import jaxconvviz as jcv
from jaxconvviz.cli import main

PKG = Path(jcv.__file__).parent

#: Modules that may import Pillow / matplotlib / h5py (file IO, plotting, the
#: CLI, the report). Everything else is compute.
IO_MODULES = re.compile(
    r"jaxconvviz\.(images|cli|__main__|_atomic|plotting(\..*)?|commands(\..*)?"
    r"|report(\..*)?|models\.weights(\..*)?"
    r"|models\.keras_import|models\.keras_export|models\.zoo(\..*)?"
    r"|views\.heatmaps|dataset\.(sources|loader|checkpoint))$")


def _modules() -> list[str]:
    out = []
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(".".join(parts))
    return out


COMPUTE = [m for m in _modules() if not IO_MODULES.match(m)]


@pytest.mark.slow
def test_compute_modules_do_not_import_io_or_plotting():
    """Every compute module imports (a missing one fails, never skips) and
    none of them pulls in Pillow, matplotlib, h5py, Keras or torch."""
    assert "jaxconvviz.featureviz.filters" in COMPUTE
    code = (
        "import importlib, sys\n"
        f"for m in {COMPUTE!r}:\n"
        "    importlib.import_module(m)\n"
        "bad = [m for m in ('matplotlib', 'PIL', 'h5py', 'keras', 'torch') "
        "if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "", f"compute modules imported {r.stdout.strip()}"


def _private_uses(path: Path) -> list[str]:
    """``from jaxconvviz.x import _y`` and ``mod._y`` on an imported jaxconvviz
    module, in one source file. A package's private modules (``_engine``,
    ``_plan``) are its own: its modules may import them (their names are
    then the package's internals), no other package may."""
    tree = ast.parse(path.read_text())
    modules: set[str] = set()
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "jaxconvviz"):
            for a in node.names:
                base = PKG.parent / node.module.replace(".", "/") / a.name
                is_module = base.with_suffix(".py").exists() or base.is_dir()
                own = is_module and base.parent == path.parent
                if (a.name.startswith("_") and not a.name.startswith("__")
                        and not own):
                    bad.append(f"{node.module}.{a.name}")
                    continue
                if is_module:
                    modules.add(a.asname or a.name)  # a module, not a name
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("jaxconvviz") and a.asname:
                    modules.add(a.asname)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in modules and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            bad.append(f"{node.value.id}.{node.attr}")
    return bad


def test_no_private_names_cross_modules():
    """A name that another module needs is public (no ``_x`` imports)."""
    offenders = {str(f.relative_to(PKG)): _private_uses(f)
                 for f in sorted(PKG.rglob("*.py"))}
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}


def test_every_public_module_declares_all():
    missing = []
    for m in _modules():
        leaf = m.rsplit(".", 1)[-1]
        if leaf.startswith("_") or m.startswith("jaxconvviz.commands"):
            continue
        f = PKG.parent / (m.replace(".", "/") + ".py")
        if not f.exists():
            f = PKG.parent / m.replace(".", "/") / "__init__.py"
        if "__all__" not in f.read_text():
            missing.append(m)
    assert missing == []


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


@pytest.mark.slow
def test_python_dash_m_runs():
    r = subprocess.run([sys.executable, "-m", "jaxconvviz", "--version"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and jcv.__version__ in r.stdout
