"""The command line's contract: user errors are one line and exit 2, bugs are
tracebacks, nothing is written (or created) before there is something to
write, and files get the user's umask."""

from __future__ import annotations

import os
import stat

import pytest

from jaxconvviz._atomic import atomic_write
from jaxconvviz.cli import main
from jaxconvviz.commands import kernels as kernels_cmd
from jaxconvviz.errors import InputError

CAT = os.path.join(os.path.dirname(__file__), "..", "jaxconvviz", "data",
                   "chelsea.png")


@pytest.fixture
def hed_env(monkeypatch, hed_path):
    monkeypatch.setenv("JAXCONVVIZ_HED_WEIGHTS", str(hed_path))


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def test_library_input_error_is_exit_2_and_debug_shows_it(monkeypatch, capsys):
    def bad(args):
        raise InputError("size must be >= 8; got 2.")

    monkeypatch.setattr(kernels_cmd, "run", bad)
    assert main(["kernels", "--layer", "block1_conv1"]) == 2
    _one_line_error(capsys, "jaxconvviz kernels: error: size must be >= 8; got 2.")
    with pytest.raises(InputError):
        main(["--debug", "kernels", "--layer", "block1_conv1"])


@pytest.mark.parametrize("exc", [ValueError("operands could not be broadcast"),
                                 TypeError("unsupported operand"),
                                 OSError("disk on fire")])
def test_a_bug_is_never_dressed_up_as_a_user_error(monkeypatch, exc):
    """A plain ValueError/TypeError/OSError is not the user's fault: it
    surfaces as the exception itself (a traceback), not as exit 2."""
    def buggy(args):
        raise exc

    monkeypatch.setattr(kernels_cmd, "run", buggy)
    with pytest.raises(type(exc)):
        main(["kernels", "--layer", "block1_conv1"])


def test_misspelt_subcommand_suggests_the_nearest(capsys):
    with pytest.raises(SystemExit) as e:
        main(["atlsa"])
    assert e.value.code == 2
    assert "did you mean 'atlas'?" in capsys.readouterr().err


def test_folder_given_as_image(tmp_path, capsys, hed_env):
    assert main(["activations", ".", "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "IMAGE must be an image file", "'.' is a folder")


@pytest.mark.parametrize("argv", [
    ["activations", CAT, "--layers", "block9_conv1"],
    ["kernels", "--layer", "block9_conv1"],
    ["atlas", "--layer", "block1_conv1", "--filters", "0:100"],
])
def test_failed_commands_leave_no_out_folder(argv, tmp_path, capsys, hed_env):
    out = tmp_path / "never" / "made"
    assert main([*argv, "--out", str(out)]) == 2
    capsys.readouterr()
    assert not (tmp_path / "never").exists()


def test_out_inside_a_file_is_refused_before_compute(tmp_path, capsys, hed_env):
    f = tmp_path / "plain.txt"
    f.write_text("x")
    assert main(["kernels", "--layer", "block1_conv1", "--out",
                 str(f / "sub")]) == 2
    _one_line_error(capsys, str(f / "sub"), "is a file")


def test_written_files_follow_the_umask(tmp_path, capsys, hed_env):
    old = os.umask(0o022)
    try:
        assert main(["kernels", "--layer", "block1_conv1", "--out",
                     str(tmp_path)]) == 0
    finally:
        os.umask(old)
    capsys.readouterr()
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == 2
    for p in pngs:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_atomic_write_failure_names_the_destination(tmp_path):
    f = tmp_path / "plain.txt"
    f.write_text("x")
    dst = f / "out.png"  # parent is a file: cannot be created
    with pytest.raises(OSError) as e:
        atomic_write(dst, lambda fh: fh.write(b"data"))
    assert str(dst) in str(e.value) and ".tmp" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt"]


@pytest.mark.slow
def test_dead_filter_line_names_the_layer(tmp_path, capsys, hed_env):
    """Book objective on block5_conv1 of the HED weights: filters silent on
    the grey start stay dead, and the line that says so names the layer."""
    assert main(["atlas", "--layer", "block5_conv1", "--filters", "0:8",
                 "--size", "32", "--steps", "2", "--book-objective",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "zero activation" in ln)
    assert line.startswith("block5_conv1: ") and " of 8 filters" in line


@pytest.mark.parametrize("command, message, want", [
    ("atlas", "size=100000 px needs 13 TB per filter",
     "--size 100000 px needs 13 TB per filter"),
    ("render", "learning_rate must be > 0; got -1.0.", "--lr must be > 0; got -1.0."),
    ("atlas", "filter_indices must select filters in 0..63",
     "--filters must select filters in 0..63"),
    ("explain", "Use source='imagenet' (get it first)",
     "Use --weights imagenet (get it first)"),
    # prose and names without a flag are left alone
    ("atlas", "the size of the image must fit", "the size of the image must fit"),
    ("kernels", "alpha=3 is not a kernels option", "alpha=3 is not a kernels option"),
])
def test_errors_name_the_flags_not_the_python_arguments(command, message, want):
    from jaxconvviz.cli import _subparser, flagify
    from jaxconvviz.commands import build_parser

    assert flagify(message, _subparser(build_parser(), command)) == want


def test_cli_error_says_the_flag(tmp_path, capsys, hed_env):
    assert main(["render", "--layer", "block1_conv1", "--lr", "-1", "--out",
                 str(tmp_path)]) == 2
    _one_line_error(capsys, "--lr must be > 0")



def test_render_bad_layer_suggests_the_nearest(tmp_path, capsys, hed_env):
    assert main(["render", "--layer", "block3_conv0", "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, "--layer must be one of block1_conv1",
                    "got 'block3_conv0'; did you mean 'block3_conv3'?")
    assert not any(tmp_path.iterdir())  # nothing written
