"""The main job end to end, small: every step of ``jaxconvviz demo`` runs and
writes a real picture (the README's first command runs the full-size demo)."""

from __future__ import annotations

import pytest

from jaxconvviz.cli import main
from jaxconvviz.commands import demo

from .conftest import decode_png


@pytest.mark.slow
def test_demo_writes_every_figure(tmp_path, capsys, monkeypatch, hed_path):
    monkeypatch.setenv("JAXCONVVIZ_HED_WEIGHTS", str(hed_path))
    # the side-by-side step with 4 filters and 4 lucid steps, for speed
    monkeypatch.setattr(demo, "SIDE_BY_SIDE", ("block4_conv1", 4, 4))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--filters", "4", "--size", "32",
                 "--steps", "3"]) == 0
    text = capsys.readouterr().out
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]", "done in"):
        assert step in text
    names = {p.name for p in out.glob("*.png")}
    for layer in demo.DEMO_LAYERS:
        assert f"atlas_{layer}.png" in names
    assert {"book_vs_lucid_block4_conv1.png", "cam_methods_blob.png",
            "activations_block1_conv1.png"} <= names
    for p in out.glob("*.png"):
        decode_png(p)
