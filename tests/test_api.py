"""One consistent public API: the same name and position for the same thing
in every function, and a README table that lists every signature."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import jaxconvviz as jcv

ROOT = Path(__file__).resolve().parents[1]

#: Names whose meaning is fixed across the package; where a function takes
#: one, it is keyword-only (``layer`` may instead be the second positional
#: argument, right after ``params``).
KEYWORD_ONLY = ("model", "key", "size", "class_index", "dtype", "devices",
                "batch_size", "progress")


def _functions():
    for name in jcv.__all__:
        obj = getattr(jcv, name)
        if inspect.isfunction(obj):
            yield name, inspect.signature(obj)


def test_params_come_first_then_images_or_layer():
    bad = []
    for name, sig in _functions():
        names = list(sig.parameters)
        if "params" in names and names[0] != "params":
            bad.append(f"{name}: params is argument {names.index('params')}")
        if "params" in names and len(names) > 1:
            second = sig.parameters[names[1]]
            if second.kind is second.POSITIONAL_OR_KEYWORD and not (
                    names[1] in ("images_rgb", "image_rgb", "images", "layer", "x",
                                 "path", "source")
                    or names[1].startswith("params_")):
                bad.append(f"{name}: second argument is {names[1]!r}")
        if "images" in names and "images_rgb" in names:
            bad.append(f"{name}: both images and images_rgb")
    assert bad == []


def test_shared_options_are_keyword_only():
    bad = []
    for name, sig in _functions():
        for opt in KEYWORD_ONLY:
            p = sig.parameters.get(opt)
            if p is not None and p.kind is not p.KEYWORD_ONLY:
                bad.append(f"{name}({opt})")
        p = sig.parameters.get("layer")
        if p is not None and p.kind is not p.KEYWORD_ONLY:
            names = list(sig.parameters)
            at = names.index("layer")  # right after params, or params, images
            if not (at == 1 or (at == 2 and names[1] in (
                    "images", "images_rgb", "image_rgb", "source"))):
                bad.append(f"{name}(layer) is positional argument {at}")
    assert bad == []


def test_target_layer_defaults_to_the_models_choice():
    """Functions that take a target layer for attribution default to None =
    ``model.default_layer`` (block5_conv3 for VGG16), never a VGG16 name."""
    for fn in (jcv.grad_cam, jcv.cam, jcv.grad_cam_with_scores):
        assert inspect.signature(fn).parameters["layer"].default is None
    assert jcv.VGG16().default_layer == "block5_conv3"


@pytest.mark.slow
def test_api_table_is_current():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "api_table.py"),
                        "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_one_class_label_format():
    """Every command and figure names a class as ``jcv.class_label`` does:
    the name then the index for a named output, ``class k`` otherwise."""
    assert jcv.class_label(386) == "African_elephant (386)"
    assert jcv.class_label(0) == "tench (0)"
    assert jcv.class_label(9, 10) == "class 9"
    names = (("a", "cat"), ("b", "dog"))
    assert jcv.class_label(1, 2, class_index=names) == "dog (1)"
    with pytest.raises(ValueError, match="0..9; got 10"):
        jcv.class_label(10, 10)


def test_version_backend_and_run_are_exported():
    """``__version__`` lives in its own module (pyproject reads it there);
    ``Backend``, ``backend`` and ``Run`` are the package's, not copies."""
    import tomllib

    from jaxconvviz import _version
    from jaxconvviz.backend import config
    from jaxconvviz.run import Run

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "jaxconvviz._version.__version__"}
    assert jcv.__version__ == _version.__version__
    # the subpackage itself is the context manager (it stays importable)
    import jaxconvviz.backend as backend_pkg

    assert jcv.Backend is config.Backend and jcv.backend is backend_pkg
    assert jcv.Run is Run
    assert {"Backend", "backend", "Run", "class_label"} <= set(jcv.__all__)
    with jcv.backend(conv3x3="winograd"):
        assert config.default_backend().conv3x3 == "winograd"
    assert config.default_backend().conv3x3 == "auto"
