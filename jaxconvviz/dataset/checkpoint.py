"""Atomic checkpoints of a streaming pass: :func:`save` and :func:`load`.

A checkpoint is a folder holding ``state-<id>.npz`` (the arrays) and
``checkpoint.json`` (the metadata, the name of the ``.npz`` and its SHA-256).
:func:`save` writes the ``.npz`` under a fresh name first, then replaces
``checkpoint.json`` (both through :func:`jaxconvviz._atomic.atomic_write`:
temp file, fsync, rename), then removes older ``state-*.npz`` files (and
temp files left by a save that was killed). The JSON is the commit point:
a crash at any moment leaves either the previous complete checkpoint or the
new one, and :func:`load` checks the hash, so a half-written or mismatched
pair is never taken for a checkpoint.

Why not ``orbax``: the state of a dataset pass is a few small host arrays
(top-k and running statistics, gathered to one process before writing), so
one ``.npz`` written by process 0 is enough; orbax's strengths (sharded
arrays written by every host, async saving, garbage collection of steps)
are not needed here, and it is a heavy dependency this package otherwise
does not have. The atomic-rename scheme is the same one orbax uses for
committing a step.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import warnings
from pathlib import Path

import numpy as np

from jaxconvviz._atomic import atomic_write
from jaxconvviz.errors import InputError, InputTypeError, InputWarning

__all__ = ["FORMAT", "INDEX", "load", "save"]

#: Name of the JSON file that commits a checkpoint.
INDEX = "checkpoint.json"
#: Format tag written into (and required from) :data:`INDEX`.
FORMAT = "jaxconvviz-dataset-checkpoint/1"


def save(folder, state: dict, meta: dict) -> Path:
    """Write ``state`` (``{name: array}``) and ``meta`` (JSON-able) to
    ``folder`` atomically; returns the folder.

    Raises:
      InputTypeError / InputError: ``state`` not a dict of str -> arrays
        (object arrays refused), ``meta`` not JSON-able; checked before
        anything is written.
    """
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise InputTypeError(f"state must be a dict of str -> array; got "
                             f"{type(state).__name__}.")
    arrays = {}
    for k, v in state.items():
        a = np.asarray(v)
        if a.dtype == object:
            raise InputError(f"state[{k!r}] must be a numeric array; got dtype object.")
        arrays[k] = a
    if not isinstance(meta, dict):
        raise InputTypeError(f"meta must be a dict; got {type(meta).__name__}.")
    try:
        meta_text = json.dumps(meta)
    except (TypeError, ValueError) as e:
        raise InputError(f"meta must be JSON-serialisable: {e}.") from None
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    folder = Path(folder)
    name = f"state-{secrets.token_hex(6)}.npz"
    atomic_write(folder / name, lambda fh: fh.write(data))
    index = {"format": FORMAT, "state": name, "sha256": digest,
             "meta": json.loads(meta_text)}
    atomic_write(folder / INDEX,
                 lambda fh: fh.write(json.dumps(index, indent=1).encode()))
    _fsync_dir(folder)
    # Older states, and temp files of a save that was killed mid-write.
    stale = [*folder.glob("state-*.npz"), *folder.glob(".state-*.npz.*.tmp"),
             *folder.glob(f".{INDEX}.*.tmp")]
    for old in stale:
        if old.name != name:
            try:
                old.unlink()
            except OSError:
                pass
    return folder


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - not POSIX
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def load(folder) -> tuple[dict[str, np.ndarray], dict] | None:
    """``(state, meta)`` of the complete checkpoint in ``folder``, or None
    when there is none (no folder, no :data:`INDEX`). A folder whose index
    is unreadable, of another format, or whose ``.npz`` is missing or does
    not match its hash also gives None, with an
    :class:`~jaxconvviz.errors.InputWarning` saying why."""
    folder = Path(folder)
    index_path = folder / INDEX
    if not index_path.is_file():
        return None
    try:
        index = json.loads(index_path.read_text())
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} index")
        name, digest = index["state"], index["sha256"]
        if not isinstance(name, str) or "/" in name or os.sep in name:
            raise ValueError(f"bad state file name {name!r}")
        data = (folder / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(f"{name} does not match its SHA-256")
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
        return state, index["meta"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        warnings.warn(f"ignoring the incomplete checkpoint in {str(folder)!r}: {e}",
                      InputWarning, stacklevel=2)
        return None
