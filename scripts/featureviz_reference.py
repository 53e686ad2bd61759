"""Save today's filter_patterns / filter_atlas outputs as test references.

Run once before changing the feature-visualization engine:

    JAX_PLATFORMS=cpu python scripts/featureviz_reference.py

writes ``tests/data/featureviz_reference.npz``: for each case the raw
optimised tensors and the activation they reach (``filter_activation``).
tests/test_render.py::test_book_style_keeps_todays_results compares the
refactored engine with it (bitwise where the compiled computation is
unchanged, otherwise the activation within 1e-3 relative).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np

import jaxconvviz as jcv

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: name -> (weights, function, kwargs). Shared with the test.
CASES = {
    "tiny_patterns": ("tiny", "patterns", dict(
        layer="block3_conv1", filter_indices=[0, 3, 5], steps=5, size=32)),
    "tiny_patterns_pre": ("tiny", "patterns", dict(
        layer="block2_conv2", filter_indices=[1, 2], steps=4, size=32,
        pre_activation=True)),
    "tiny_patterns_rgb": ("tiny", "patterns", dict(
        layer="block1_conv2", filter_indices=[0, 1, 2, 3], steps=3, size=24,
        preprocess=True, step_size=0.5)),
    "tiny_atlas": ("tiny", "atlas", dict(
        layers=["block1_conv1", "block3_conv2"], filters_per_layer=3, size=32,
        steps=4)),
    "hed_patterns": ("hed", "patterns", dict(
        layer="block3_conv1", filter_indices=[0, 1, 2, 3], steps=5, size=48)),
    "hed_atlas": ("hed", "atlas", dict(
        layers=["block1_conv1", "block4_conv1"], filters_per_layer=2, size=40,
        steps=3)),
}


def tiny_params():
    model = jcv.tiny_vgg16(include_top=True)
    p = model.init_params(jax.random.key(42))
    return {k: v for k, v in p.items() if k not in ("fc1", "fc2", "predictions")}


def _style(kw):
    """The cases' keywords (0.x spelling) as a Book style and the rest."""
    kw = dict(kw)
    names = ("steps", "size", "step_size", "preprocess", "pre_activation")
    style = jcv.Book(**{n: kw.pop(n) for n in names if n in kw})
    return style, kw


def run_case(params, kind, kw):
    """``{name: (images, activation)}`` for one case (atlas: one per layer)."""
    key = jax.random.key(7)
    style, rest = _style(kw)
    if kind == "patterns":
        x = jcv.filter_patterns(params, key=key, style=style, **rest)
        act = jcv.filter_activation(params, x, kw["layer"], kw["filter_indices"],
                                    preprocess=kw.get("preprocess", False))
        return {"": (np.asarray(x), np.asarray(act))}
    res = jcv.filter_atlas(params, key=key, style=style, **rest)
    out = {}
    for layer, x in res.items():
        idx = range(x.shape[0])
        act = jcv.filter_activation(params, x, layer, idx)
        out[f"/{layer}"] = (np.asarray(x), np.asarray(act))
    return out


def main() -> None:
    from jaxconvviz.models.weights import load_vgg16

    weights = {"tiny": tiny_params(), "hed": load_vgg16("hed")}
    arrays = {}
    for name, (w, kind, kw) in CASES.items():
        for sub, (x, act) in run_case(weights[w], kind, kw).items():
            arrays[f"{name}{sub}:x"] = x
            arrays[f"{name}{sub}:act"] = act
            print(name + sub, x.shape, act)
    path = ROOT / "tests" / "data" / "featureviz_reference.npz"
    np.savez_compressed(path, **arrays)
    print("wrote", path, path.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
