"""Reading Keras weight files: every Keras HDF5 layout and ``.keras`` archives.

:func:`read_keras_weights` maps Keras layer names to their arrays, in Keras
weight order (``[kernel, bias]``; BatchNormalization ``[gamma, beta,
moving_mean, moving_variance]``), for the three Keras HDF5 layouts:

(a) weights-only ``.h5`` -- the released ``keras.applications`` files (root
    attr ``layer_names``, per-group ``weight_names`` such as
    ``block1_conv1_W_1:0``) and tf.keras 2 ``save_weights`` files
    (``block1_conv1/kernel:0``, a ``/`` meaning a sub-group);
(b) Keras 3 ``.weights.h5`` (``.../vars`` groups whose attr ``name`` is the
    layer name, datasets ``0``, ``1``, ...; nested to any depth), also the
    ``model.weights.h5`` inside a ``.keras`` archive;
(c) legacy full-model ``.h5`` (``model.save("x.h5")``: group
    ``model_weights`` with its own ``layer_names``).

This module and its siblings in :mod:`jaxconvviz.models.weights` are the only
ones that import h5py (lazily, inside the functions).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from jaxconvviz.errors import InputError, InputTypeError, MissingFileError

#: The first 8 bytes of every HDF5 file.
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: The first 4 bytes of a zip archive (``.keras``, ``.npz``).
ZIP_SIGNATURE = b"PK\x03\x04"
#: What a weights path may be, for error messages.
ACCEPTED_FILES = (
    "a Keras weights file (.h5 / .weights.h5 / .keras) or a converted store "
    ".npz with 'layer/param' entries (written by `jaxconvviz weights convert`)"
)

# Root groups of a Keras 3 weights file that hold no layer weights.
_KERAS3_SKIP_ROOT = frozenset({"optimizer", "compile_metrics", "metrics"})


# ------------------------------------------------------------------- helpers
def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers numerically (``conv2d_2 < conv2d_10``)."""
    parts = re.split(r"(\d+)", text)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p != "")


def _decode(value: Any) -> str:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf8")
    return str(value)


def _attr_list(group, name: str) -> list[str]:
    """A string-list attr, decoded; also chunked ``name0``, ``name1``, ... (Keras)."""
    attrs = group.attrs
    if name in attrs:
        chunks = [attrs[name]]
    else:
        chunks, i = [], 0
        while f"{name}{i}" in attrs:
            chunks.append(attrs[f"{name}{i}"])
            i += 1
    out: list[str] = []
    for chunk in chunks:
        if isinstance(chunk, str | bytes | np.bytes_):
            out.append(_decode(chunk))
            continue
        arr = np.asarray(chunk)
        if arr.size == 0:
            continue
        out.extend(_decode(v) for v in arr.reshape(-1))
    return out


def _has_attr(group, name: str) -> bool:
    return name in group.attrs or f"{name}0" in group.attrs


def _read_dataset(ds) -> np.ndarray:
    """A dataset as a numpy array; Keras 3 bfloat16 (opaque ``|V2``) as bfloat16."""
    value = ds[()]
    tag = ds.attrs.get("dtype")
    if tag is not None and _decode(tag) == "bfloat16":
        import ml_dtypes

        arr = np.asarray(value)
        if arr.dtype.itemsize == 2 and arr.dtype.kind == "V":
            return arr.view(ml_dtypes.bfloat16)
        return arr.astype(ml_dtypes.bfloat16)
    return np.array(value)


def source_label(source: Any) -> str:
    """How error messages name a weights source (a path, an h5py object or a
    file object)."""
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    name = getattr(source, "filename", None) or getattr(source, "name", None)
    return str(name) if name else f"<{type(source).__name__}>"


def file_signature(path: str | os.PathLike) -> bytes:
    """The first 8 bytes of a file (compare with :data:`HDF5_SIGNATURE`,
    :data:`ZIP_SIGNATURE`)."""
    with open(path, "rb") as fh:
        return fh.read(8)


def is_keras_zip(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zip archive holding ``model.weights.h5`` (``.keras``)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return "model.weights.h5" in zf.namelist()
    except zipfile.BadZipFile:
        return False


def check_weights_path(path: Path, label: str) -> None:
    """Raise the error a weights path deserves before reading it: missing
    (``MissingFileError``) or a directory (``InputError``)."""
    if not path.exists():
        raise MissingFileError(
            f"weights file not found: {label} (expected {ACCEPTED_FILES})."
        )
    if path.is_dir():
        raise InputError(
            f"{label!r} is a directory, not a weights file; expected "
            f"{ACCEPTED_FILES}."
        )


# ------------------------------------------------------------------- reading
@contextlib.contextmanager
def _open_h5(source: Any) -> Iterator[tuple[Any, str]]:
    """Yield ``(h5py group, label)`` for a path, h5py File/Group or file object."""
    import h5py

    if isinstance(source, h5py.Group):  # File is a Group
        yield source, source_label(source)
        return
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        label = os.fspath(source)
        check_weights_path(path, label)
        head = file_signature(path)
        if head.startswith(ZIP_SIGNATURE):
            # A .keras archive: its weights are model.weights.h5 inside.
            try:
                with zipfile.ZipFile(path) as zf:
                    if "model.weights.h5" not in zf.namelist():
                        raise InputError(
                            f"{label}: a zip archive without model.weights.h5 "
                            f"(not a .keras file); expected {ACCEPTED_FILES}."
                        )
                    data = zf.read("model.weights.h5")
            except zipfile.BadZipFile as e:
                raise InputError(f"{label}: damaged zip archive ({e}).") from None
            with _open_h5(io.BytesIO(data)) as (f, _):
                yield f, label
            return
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            if head == HDF5_SIGNATURE:
                kind = "truncated or damaged HDF5 file"
            elif path.suffix.lower() == ".npz":
                kind = ("not an .npz archive (no zip signature) and not an HDF5 "
                        "file either")
            else:
                kind = "not an HDF5 file"
            raise InputError(
                f"{label}: {kind} ({e}); expected {ACCEPTED_FILES}."
            ) from None
        with f:
            yield f, label
        return
    if hasattr(source, "read") and hasattr(source, "seek"):
        label = source_label(source)
        try:
            f = h5py.File(source, "r")
        except OSError as e:
            raise InputError(f"{label}: not a readable HDF5 file ({e}).") from None
        with f:
            yield f, label
        return
    raise InputTypeError(
        "source must be a path, an h5py File/Group or a binary file object; "
        f"got {type(source).__name__}."
    )
def read_keras_weights(source: Any) -> dict[str, list[np.ndarray]]:
    """Read a Keras HDF5 weights file into ``{layer_name: [arrays...]}``.

    Handles the released ``keras.applications`` ``.h5`` files, tf.keras 2
    ``save_weights`` ``.h5``, Keras 3 ``.weights.h5`` (any nesting depth;
    bfloat16 datasets come back as ``ml_dtypes.bfloat16``), legacy full-model
    ``.h5`` (``model_weights`` group) and ``.keras`` archives. Layers without
    weights are left out. Arrays are returned as stored (no transposes: Keras
    HDF5 files are already HWIO / ``(in, out)``).

    Args:
      source: a path, an open ``h5py.File``/``h5py.Group``, or a binary file
        object holding an HDF5 file (e.g. ``model.weights.h5`` read from a
        ``.keras`` zip).

    Returns:
      Dict from Keras layer name to its arrays in Keras weight order
      (``[kernel, bias]``; BatchNormalization ``[gamma, beta, moving_mean,
      moving_variance]``), layers in file order (``layer_names`` order, or the
      natural order of the group paths for Keras 3 files).

    Raises:
      FileNotFoundError: the path does not exist.
      ValueError: not an HDF5 file, truncated, or no Keras weights in it;
        the message names the file.
    """
    with _open_h5(source) as (f, label):
        try:
            return _read_group(f, label)
        except (KeyError, OSError) as e:
            raise InputError(f"{label}: damaged Keras weights file ({e}).") from None


def _read_group(f, label: str) -> dict[str, list[np.ndarray]]:
    import h5py

    if _has_attr(f, "layer_names"):
        return _read_legacy(f, label)
    mw = f.get("model_weights")
    if isinstance(mw, h5py.Group) and _has_attr(mw, "layer_names"):
        return _read_legacy(mw, label)
    out, found_vars = _read_keras3(f, label)
    if not found_vars:
        raise InputError(
            f"{label}: no Keras weights found (expected a root attr 'layer_names', "
            "a 'model_weights' group, or Keras 3 '.../vars' groups)."
        )
    return out


def _read_legacy(g, label: str) -> dict[str, list[np.ndarray]]:
    import h5py

    out: dict[str, list[np.ndarray]] = {}
    nested_seen: set[str] = set()
    for lname in _attr_list(g, "layer_names"):
        grp = g.get(lname)
        if not isinstance(grp, h5py.Group):
            raise InputError(
                f"{label}: layer {lname!r} is listed in 'layer_names' but has no "
                "group in the file."
            )
        wnames = _attr_list(grp, "weight_names")
        if not wnames:
            continue
        # A nested model (a Functional/Sequential used as one layer, e.g. a
        # keras.applications base inside a transfer-learning model) is one
        # entry whose weight names are "<inner layer>/<var>", trainable ones
        # first: they are split per inner layer (the path component before
        # the variable), each keeping its own order (Keras' weight order:
        # trainable variables come first in every layer). A plain layer's
        # own weights name it in their path ("block1_conv1/kernel:0" in
        # tf.keras 2, "model/conv2d/kernel" in Keras 3): not nested.
        for wn in wnames:
            ds = grp.get(wn)  # a '/' in the name means sub-groups
            if not isinstance(ds, h5py.Dataset):
                raise InputError(
                    f"{label}: layer {lname!r} lists weight {wn!r} but the file "
                    "has no such dataset."
                )
            parts = wn.split("/")
            owner = (lname if lname in parts[:-1] or len(parts) < 2
                     else parts[-2])
            if owner != lname and owner in out and owner not in nested_seen:
                raise InputError(
                    f"{label}: layer {owner!r} of nested model {lname!r} has the "
                    "same name as another layer of the file."
                )
            if owner != lname:
                nested_seen.add(owner)
            out.setdefault(owner, []).append(_read_dataset(ds))
    return out


def _read_keras3(f, label: str) -> tuple[dict[str, list[np.ndarray]], bool]:
    import h5py

    out: dict[str, list[np.ndarray]] = {}
    where: dict[str, str] = {}
    found_vars = False

    def walk(g, depth: int) -> None:
        nonlocal found_vars
        for key in sorted(g.keys(), key=natural_key):
            if depth == 0 and key in _KERAS3_SKIP_ROOT:
                continue
            obj = g.get(key)
            if not isinstance(obj, h5py.Group):
                continue
            if key == "vars":
                found_vars = True
                dsets = [k for k in obj.keys() if isinstance(obj.get(k), h5py.Dataset)]
                if not dsets:
                    continue  # a model/sequential/pool: no weights of its own
                name = (_decode(obj.attrs["name"]) if "name" in obj.attrs
                        else g.name.strip("/") or "<root>")
                if name in out:
                    raise InputError(
                        f"{label}: two weight groups are named {name!r} "
                        f"({where[name]} and {obj.name}); cannot key layers by name."
                    )
                where[name] = obj.name
                dsets.sort(key=natural_key)
                out[name] = [_read_dataset(obj[k]) for k in dsets]
            else:
                walk(obj, depth + 1)

    walk(f, 0)
    return out, found_vars



__all__ = [
    "read_keras_weights",
    "natural_key",
    "source_label",
    "file_signature",
    "is_keras_zip",
    "check_weights_path",
    "HDF5_SIGNATURE",
    "ZIP_SIGNATURE",
    "ACCEPTED_FILES",
]
