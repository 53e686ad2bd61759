"""Ctrl-C inside one long compiled call (issue 29): the command line's
backstop (:mod:`jaxconvviz._interrupt`) ends the process with exit code 130
and one line within seconds, keeps what was written and removes the temp
files of writes in flight; an interrupt the main thread takes itself is left
to it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from jaxconvviz import _atomic, _interrupt

#: A command whose compute is one compiled loop of about a minute (it cannot
#: take a KeyboardInterrupt before it returns), after writing one file and
#: with a second write in flight (its temp file exists).
SCRIPT = textwrap.dedent('''
    import pathlib, sys
    import jax, jax.numpy as jnp
    import jaxconvviz.cli as c
    from jaxconvviz import _atomic
    from jaxconvviz.commands import common

    out = pathlib.Path(sys.argv[1])

    def long_call(args):
        f = jax.jit(lambda x: jax.lax.fori_loop(
            0, 2_000_000_000, lambda i, v: v * 1.0000001 + 1e-9, x))
        _atomic.atomic_write(out / "kept.png", lambda fh: fh.write(b"done"))
        common.WRITTEN.append(out / "kept.png")
        def stuck_write(fh):
            fh.write(b"half")
            print("READY", flush=True)
            return int(f(jnp.ones(())) > 0)
        _atomic.atomic_write(out / "half.png", stuck_write)
        return 0

    real = c.build_parser
    def fake():
        p = real()
        orig = p.parse_args
        def parse(argv=None):
            a = orig(["weights", "list"])
            a.func = long_call
            return a
        p.parse_args = parse
        return p
    c.build_parser = fake
    sys.exit(c.main([]))
''')


@pytest.mark.slow
def test_ctrl_c_inside_a_compiled_call_exits_130_within_seconds(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "READY"
        time.sleep(1.0)  # inside the compiled loop
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        p.kill()
    assert p.returncode == 130, err
    # GRACE_SECONDS (3 s) plus the exit; 5 s is the bound
    assert took < 5.0 + 2.0, took  # margin for a loaded 2-core CI machine
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("jaxconvviz weights: interrupted inside a "
                               "compiled computation; the 1 file"), err
    assert "kept.png" in lines[0]
    # the finished file is intact; the write in flight left nothing behind
    assert sorted(f.name for f in tmp_path.iterdir()) == ["kept.png"]
    assert (tmp_path / "kept.png").read_bytes() == b"done"


def test_acknowledged_interrupt_is_left_to_the_main_thread():
    """A Python-level handler ran (the main thread is responsive): the
    watchdog does not end the process, KeyboardInterrupt propagates as usual."""
    import os

    with pytest.raises(KeyboardInterrupt):
        with _interrupt.watchdog(lambda notes: "stuck", grace=0.2):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)  # interrupted by the handler long before
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_remove_temp_files_removes_only_writes_in_flight(tmp_path):
    seen = {}

    def write(fh):
        seen["tmp"] = fh.name
        _atomic.remove_temp_files()
        fh.write(b"x")

    _atomic.atomic_write(tmp_path / "a.bin", lambda fh: fh.write(b"a"))
    with pytest.raises(OSError):  # its temp file is gone: the rename fails
        _atomic.atomic_write(tmp_path / "b.bin", write)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.bin"]
