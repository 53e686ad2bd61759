"""Atomic file writes: the one way this package puts bytes on disk.

A temp file is created beside the destination, written, flushed and fsynced,
given the mode a plain ``open`` would give it, and renamed over the
destination; on any error it is removed. A reader therefore sees either the
old file or the complete new one -- never a half-written file, whether the
writer crashed, was interrupted or found the data bad (e.g. a wrong MD5).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

#: Temp files of writes in flight: removed by :func:`remove_temp_files` when
#: the command line must end the process without unwinding (a Ctrl-C stuck
#: in compiled code, :mod:`jaxconvviz._interrupt`).
_IN_FLIGHT: set[str] = set()


def remove_temp_files() -> None:
    """Remove the temp files of writes in flight (their destinations keep the
    old content or stay absent)."""
    for tmp in list(_IN_FLIGHT):
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _IN_FLIGHT.clear()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(dst: str | os.PathLike, write: Callable[[BinaryIO], object], *,
                 suffix: str = ".tmp") -> Path:
    """Call ``write(fh)`` on a temp file beside ``dst``, then rename it to ``dst``.

    ``fh`` is opened ``"w+b"`` (seekable and readable, as h5py and zipfile
    need). Exceptions from ``write`` propagate after the temp file is removed.
    """
    dst = Path(dst)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.",
                                   suffix=suffix)
    except OSError as e:  # name the file the caller asked for, not the temp
        raise OSError(e.errno, f"cannot write {str(dst)!r}: {e.strerror}") from None
    _IN_FLIGHT.add(tmp)
    try:
        with os.fdopen(fd, "w+b") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(tmp, dst)
    finally:
        _IN_FLIGHT.discard(tmp)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dst
