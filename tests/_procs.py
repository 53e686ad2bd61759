"""Multi-process test helpers: a free loopback port for the coordinator of
``jax.distributed``, and waiting for a group of processes (the atlas, the
dataset pass and the ``examples`` command each test 2 processes)."""

from __future__ import annotations

import socket
import subprocess


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def communicate_all(procs: list[subprocess.Popen], *,
                    timeout: float = 300) -> list[tuple[str, str]]:
    """``(stdout, stderr)`` of every process, in order, each having exited 0
    (asserted, with the end of its stderr); all are killed if one times out
    or fails to be read."""
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return outs
