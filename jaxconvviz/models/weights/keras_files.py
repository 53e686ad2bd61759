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
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxconvviz.errors import InputError, InputTypeError, MissingFileError
from jaxconvviz.models.weights.limits import (
    MAX_EXPANSION,
    Budget,
    declared_nbytes,
    read_zip_member,
)

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


def _attr_list(group, name: str, label: str = "") -> list[str]:
    """A string-list attr, decoded; also chunked ``name0``, ``name1``, ... (Keras).

    Anything but strings (numbers, compound values) is an InputError naming
    the group and the attr; an empty array of any type is an empty list."""
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
        if arr.dtype.kind not in "SUO" or not all(
                isinstance(v, str | bytes | np.bytes_) for v in arr.reshape(-1)):
            raise InputError(
                f"{label}: group {group.name!r}: attribute {name!r} must be a list "
                f"of strings; got {arr.dtype} values.")
        out.extend(_decode(v) for v in arr.reshape(-1))
    return out


def _has_attr(group, name: str) -> bool:
    return name in group.attrs or f"{name}0" in group.attrs


def _is_bf16(ds) -> bool:
    tag = ds.attrs.get("dtype")
    return tag is not None and isinstance(tag, str | bytes | np.bytes_) and (
        _decode(tag) == "bfloat16")


def _read_dataset(ds) -> np.ndarray:
    """A dataset as a numpy array; Keras 3 bfloat16 (opaque ``|V2``) as bfloat16."""
    value = ds[()]
    if _is_bf16(ds):
        import ml_dtypes

        arr = np.asarray(value)
        if arr.dtype.itemsize == 2 and arr.dtype.kind == "V":
            return arr.view(ml_dtypes.bfloat16)
        return arr.astype(ml_dtypes.bfloat16)
    return np.array(value)


def _check_dataset(ds, label: str, where: str, expected: tuple | None,
                   budget: Budget, param: str | None = None) -> None:
    """Refuse ``ds`` from its metadata alone (see :mod:`.limits`)."""
    dt = ds.dtype
    bad = f"{label}: {where}"
    if dt.kind in "OSU" or dt.fields is not None or (
            dt.kind == "V" and not (_is_bf16(ds) and dt.itemsize == 2)):
        what = ("a string" if dt.kind in "OSU" else "a compound" if dt.fields
                else "an opaque")
        raise InputError(f"{bad} is {what} dataset ({dt}); only numeric arrays "
                         "are weights.")
    if dt.kind not in "fiubV":
        raise InputError(f"{bad} has dtype {dt}; only numeric arrays are weights.")
    if expected is not None and dt.kind not in "fV" and not (
            dt.kind in "iu" and tuple(expected) == ()):  # a counter (Normalization)
        raise InputError(f"{bad} has dtype {dt}; the model expects floats.")
    if ds.shape is None:
        raise InputError(f"{bad} holds no data (a null dataspace).")
    if ds.external or ds.is_virtual:
        raise InputError(f"{bad} keeps its data outside this file "
                         f"({'external' if ds.external else 'virtual'} storage); "
                         "refused.")
    if expected is not None and tuple(ds.shape) != tuple(expected):
        if param is not None:
            layer = where.split("'")[1]
            raise InputError(f"{label}: layer {layer!r} {param} has shape "
                             f"{tuple(ds.shape)}; expected {tuple(expected)} (the "
                             f"model's; {where}).")
        raise InputError(f"{bad} has shape {tuple(ds.shape)}; the model expects "
                         f"{tuple(expected)}.")
    nbytes = declared_nbytes(ds.shape, dt.itemsize)
    budget.take(nbytes, f"{where} (shape {tuple(ds.shape)})")
    if nbytes == 0:
        return
    stored = ds.id.get_storage_size()
    compressed = bool(ds.compression or ds.shuffle or ds.fletcher32 or ds.scaleoffset)
    if not compressed and stored < nbytes:
        raise InputError(
            f"{bad} declares {nbytes:,} bytes (shape {tuple(ds.shape)}) but the file "
            f"stores {stored:,}: a sparse or unallocated dataset; refused.")
    if compressed and nbytes > _SMALL_DS and nbytes > MAX_EXPANSION * max(stored, 1):
        raise InputError(
            f"{bad} expands from {stored:,} stored bytes to {nbytes:,} (over "
            f"{MAX_EXPANSION}x), like a compression bomb; refused.")


_SMALL_DS = 1 << 20


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
def _open_h5(source: Any, max_bytes: int | None = None) -> Iterator[tuple[Any, str]]:
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
                    data = read_zip_member(zf, "model.weights.h5", label,
                                           max_bytes=max_bytes)
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
def read_keras_weights(source: Any, *,
                       expected: Mapping[str, Sequence | Mapping] | None = None,
                       max_bytes: int | None = None,
                       group_names: Mapping[str, str] | None = None
                       ) -> dict[str, list[np.ndarray]]:
    """Read a Keras HDF5 weights file into ``{layer_name: [arrays...]}``.

    Handles the released ``keras.applications`` ``.h5`` files, tf.keras 2
    ``save_weights`` ``.h5``, Keras 3 ``.weights.h5`` (any nesting depth;
    bfloat16 datasets come back as ``ml_dtypes.bfloat16``), legacy full-model
    ``.h5`` (``model_weights`` group) and ``.keras`` archives. Layers without
    weights are left out. Arrays are returned as stored (no transposes: Keras
    HDF5 files are already HWIO / ``(in, out)``).

    Every dataset is checked from its metadata before any is read (see
    :mod:`jaxconvviz.models.weights.limits`): numbers only, all bytes present
    in the file, the total under the ceiling (4 GiB by default,
    ``$JAXCONVVIZ_MAX_WEIGHT_BYTES`` or ``max_bytes``) and, with ``expected``,
    the shapes the architecture declares.

    Args:
      source: a path, an open ``h5py.File``/``h5py.Group``, or a binary file
        object holding an HDF5 file (e.g. ``model.weights.h5`` read from a
        ``.keras`` zip).
      expected: optional ``{layer: [shape, ...]}`` in Keras weight order, or
        ``{layer: {param: shape}}`` in that order (e.g.
        :func:`~jaxconvviz.models.weights.expected_shapes` of a model): only
        these layers are read, each array must have its shape and a float
        dtype, and the total is capped at what they need.
      max_bytes: the absolute ceiling in bytes (None: the default above).
      group_names: optional ``{layer: "layers/<group>"}``: the Keras 3 group
        path of each layer, for files whose ``vars`` groups carry no ``name``
        attribute (early Keras 3); such groups are returned (and matched
        against ``expected``) under the layer's name.

    Returns:
      Dict from Keras layer name to its arrays in Keras weight order
      (``[kernel, bias]``; BatchNormalization ``[gamma, beta, moving_mean,
      moving_variance]``), layers in file order (``layer_names`` order, or the
      natural order of the group paths for Keras 3 files).

    Raises:
      FileNotFoundError: the path does not exist.
      ValueError: not an HDF5 file, truncated, no Keras weights in it, or a
        dataset that breaks the rules above; the message names the file, the
        layer and the field.
    """
    need = None
    if expected is not None:
        need = sum(declared_nbytes(s, 8) for shapes in expected.values()
                   for s in (shapes.values() if isinstance(shapes, Mapping)
                             else shapes))
    with _open_h5(source, max_bytes) as (f, label):
        budget = Budget(label, need=need, max_bytes=max_bytes)
        try:
            found = _find_group(f, label)
            for layer, group in (group_names or {}).items():
                if layer not in found and group in found:
                    found[layer] = found.pop(group)
            return _read_checked(found, label, expected, budget)
        except (KeyError, OSError, RuntimeError, TypeError) as e:
            raise InputError(f"{label}: damaged Keras weights file "
                             f"({type(e).__name__}: {e}).") from None


def _read_checked(found: dict[str, list[tuple[str, Any]]], label: str,
                  expected: Mapping[str, Sequence | Mapping] | None,
                  budget: Budget) -> dict[str, list[np.ndarray]]:
    """Check every dataset of ``found`` (``{layer: [(field, dataset)]}``), then
    read them all."""
    if expected is not None:
        found = {k: v for k, v in found.items() if k in expected}
    for layer, entries in found.items():
        want = None if expected is None else expected[layer]
        names = list(want) if isinstance(want, Mapping) else None
        shapes = None if want is None else list(want.values() if names else want)
        if shapes is not None and len(shapes) != len(entries):
            raise InputError(
                f"{label}: layer {layer!r} has {len(entries)} weight arrays (shapes "
                f"{[ds.shape for _, ds in entries]}); the model expects "
                f"{len(shapes)} (shapes {[tuple(s) for s in shapes]}).")
        for i, (field, ds) in enumerate(entries):
            _check_dataset(ds, label, f"layer {layer!r} weight {field!r}",
                           None if shapes is None else shapes[i], budget,
                           None if names is None else names[i])
    return {layer: [_read_dataset(ds) for _, ds in entries]
            for layer, entries in found.items()}


def _find_group(f, label: str) -> dict[str, list[tuple[str, Any]]]:
    import h5py

    if _has_attr(f, "layer_names"):
        return _find_legacy(f, label)
    mw = f.get("model_weights")
    if isinstance(mw, h5py.Group) and _has_attr(mw, "layer_names"):
        return _find_legacy(mw, label)
    out, found_vars = _find_keras3(f, label)
    if not found_vars:
        raise InputError(
            f"{label}: no Keras weights found (expected a root attr 'layer_names', "
            "a 'model_weights' group, or Keras 3 '.../vars' groups)."
        )
    return out


def _find_legacy(g, label: str) -> dict[str, list[tuple[str, Any]]]:
    import h5py

    out: dict[str, list[tuple[str, Any]]] = {}
    nested_seen: set[str] = set()
    for lname in _attr_list(g, "layer_names", label):
        grp = g.get(lname)
        if not isinstance(grp, h5py.Group):
            raise InputError(
                f"{label}: layer {lname!r} is listed in 'layer_names' but has no "
                "group in the file."
            )
        wnames = _attr_list(grp, "weight_names", label)
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
            out.setdefault(owner, []).append((wn, ds))
    return out


def _find_keras3(f, label: str) -> tuple[dict[str, list[tuple[str, Any]]], bool]:
    import h5py

    out: dict[str, list[tuple[str, Any]]] = {}
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
                name = obj.attrs.get("name", g.name.strip("/") or "<root>")
                if not isinstance(name, str | bytes | np.bytes_):
                    raise InputError(
                        f"{label}: group {obj.name!r}: attribute 'name' must be a "
                        f"string (the layer name); got {type(name).__name__}.")
                name = _decode(name)
                if name in out:
                    raise InputError(
                        f"{label}: two weight groups are named {name!r} "
                        f"({where[name]} and {obj.name}); cannot key layers by name."
                    )
                where[name] = obj.name
                dsets.sort(key=natural_key)
                out[name] = [(f"{obj.name}/{k}", obj[k]) for k in dsets]
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
