"""``jaxconvviz activation-atlas`` and ``jaxconvviz factorize`` on the tiny
VGG16 preset (a .keras file), the atlas page in headless
Chromium."""

from __future__ import annotations

import re

import numpy as np
import pytest

from jaxconvviz.cli import main


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory, tiny_model, tiny_params):
    """The tiny VGG16 preset (32 px, with its top) as a .keras file."""
    import jaxconvviz as jcv

    path = tmp_path_factory.mktemp("w") / "tiny_vgg16.keras"
    jcv.save_keras_model(tiny_params, path, model=tiny_model)
    return path


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    rng = np.random.RandomState(0)
    cols = np.array([[220, 30, 30], [30, 60, 220], [40, 200, 40]], np.float32)
    a = cols[np.arange(12) % 3][:, None, None] + rng.randn(12, 32, 32, 3) * 20
    path = tmp_path_factory.mktemp("d") / "colours.npy"
    np.save(path, np.clip(a, 0, 255).astype(np.uint8))
    return path


@pytest.mark.slow
def test_activation_atlas_command(tmp_path, tiny_npz, colours, capsys):
    pytest.importorskip("umap")
    out = tmp_path / "atlas"
    assert main(["activation-atlas", str(colours), "--layer", "block2_conv2",
                 "--grid", "4", "--samples", "300", "--image-size", "32",
                 "--size", "32", "--steps", "8", "--model", str(tiny_npz),
                 "--preprocess", "caffe", "--out", str(out)]) == 0
    said = capsys.readouterr()
    assert "estimated" in said.out and "cells" in said.out
    assert re.search(r"\d+/12 images", said.err)  # the sampling progress
    from .conftest import decode_png

    img = decode_png(out / "atlas_block2_conv2.png")
    assert img.shape == (128, 128, 3)
    page = (out / "atlas_block2_conv2.html").read_text()
    assert page.count('class="cell"') >= 2 and "colours.npy[" in page
    z = np.load(out / "atlas_block2_conv2.npz")
    assert z["directions"].shape[1] == 4 and z["counts"].min() >= 3

    from .test_report import _browser

    r = _browser(["--virtual-time-budget=10000", "--dump-dom",
                  (out / "atlas_block2_conv2.html").resolve().as_uri() + "#selftest"])
    assert r.returncode == 0, r.stderr[-2000:]
    body = dict(re.findall(r'data-([\w-]+)="([^"]*)"',
                           re.search(r"<body([^>]*)>", r.stdout).group(1)))
    assert body.get("selftest") == "done", body
    assert int(body["cells"]) == len(z["counts"]) and body["shown"] == "1"
    assert int(body["patches"]) >= 1


def test_factorize_command(tmp_path, tiny_npz, capsys):
    pytest.importorskip("sklearn")
    from .conftest import CAT, decode_png

    out = tmp_path / "f"
    assert main(["factorize", str(CAT), "--layer", "block3_conv3", "--groups", "3",
                 "--image-size", "64", "--size", "32", "--steps", "8",
                 "--model", str(tiny_npz), "--preprocess", "caffe", "--out",
                 str(out)]) == 0
    said = capsys.readouterr().out
    assert "estimated" in said and "reconstruction error" in said
    decode_png(out / "factorize_block3_conv3.png")
    decode_png(out / "factorize_block3_conv3_groups.png")
    z = np.load(out / "factorize_block3_conv3.npz")
    assert z["maps"].shape == (3, 8, 8) and z["directions"].shape == (3, 8)


def test_factorize_bad_layer_is_one_line(tmp_path, tiny_npz, capsys):
    from .conftest import CAT

    assert main(["factorize", str(CAT), "--layer", "block9_conv9", "--model",
                 str(tiny_npz), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--layer" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_report_atlas_page(tmp_path, tiny_npz, capsys):
    pytest.importorskip("umap")
    out = tmp_path / "r"
    assert main(["report", "--model", str(tiny_npz), "--preprocess", "caffe",
                 "--out", str(out), "--layers",
                 "block1_conv1", "--filters-per-layer", "1", "--size", "32",
                 "--steps", "2", "--style", "book", "--image-size", "32",
                 "--lucid-steps", "4", "--atlas", "block2_conv2", "--atlas-grid",
                 "3"]) == 0
    capsys.readouterr()
    page = (out / "atlas_block2_conv2.html").read_text()
    assert 'class="cell"' in page
    assert 'href="atlas_block2_conv2.html"' in (out / "index.html").read_text()
