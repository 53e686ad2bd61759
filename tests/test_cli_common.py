"""CLI helpers shared by every subcommand, and the demo's argument checks."""

from __future__ import annotations

import pytest

from jaxconvviz.cli import main
from jaxconvviz.commands.common import CLIError, out_dir, parse_slice


@pytest.mark.parametrize("text, want", [
    ("0:4", [0, 1, 2, 3]), (":3", [0, 1, 2]), ("6:", [6, 7]), ("5", [5]),
    ("1,3,7", [1, 3, 7]), ("0:8", list(range(8))),
])
def test_parse_slice_selects(text, want):
    assert parse_slice(text, name="--filters", n=8) == want


@pytest.mark.parametrize("text, msg", [
    ("0:100", r"0 <= START < STOP <= 8 \(the layer has 8 filters\); got '0:100'"),
    ("4:2", "START < STOP"), ("-1:3", "START < STOP"),
    ("9", r"out of range: \[9\]"), ("1,x", "comma list of integers"),
    ("a:b", "START:STOP or a comma list"), (",", "empty"),
])
def test_parse_slice_rejects(text, msg):
    with pytest.raises(CLIError, match=msg):
        parse_slice(text, name="--filters", n=8)


def test_out_dir_refuses_a_file(tmp_path):
    f = tmp_path / "f.png"
    f.write_bytes(b"x")
    with pytest.raises(CLIError, match="--out must be a directory"):
        out_dir(str(f))
    # checked, not created: the folder appears with the first file written
    assert out_dir(str(tmp_path / "a" / "b")) == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()
    with pytest.raises(CLIError, match="cannot be created: .*f.png' is a file"):
        out_dir(str(f / "sub"))


@pytest.mark.parametrize("argv, msg", [
    (["demo", "--filters", "0"], "--filters must be >= 1; got 0"),
    (["demo", "--steps", "0"], "--steps must be >= 1; got 0"),
    (["atlas", "--layer", "block1_conv1", "--filters", "0:100"],
     "the layer has 64 filters"),
])
def test_bad_arguments_exit_2_with_one_line(argv, msg, capsys, hed_path,
                                            monkeypatch):
    monkeypatch.setenv("JAXCONVVIZ_HED_WEIGHTS", str(hed_path))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err
