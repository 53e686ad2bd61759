"""Write a ConvNet and its params as a Keras model file, without Keras.

:func:`save_keras_model` writes the two layouts :func:`~jaxconvviz.
keras_import.load_keras_model` reads -- and that Keras 3 itself loads with
``keras.models.load_model`` (tested against Keras 3.x):

* ``.keras``: a zip of ``metadata.json``, ``config.json`` (a ``Sequential``
  config) and ``model.weights.h5`` (``layers/<class>[_N]/vars/<i>`` datasets,
  each ``vars`` group with attr ``name`` = the layer name);
* ``.h5``: the legacy full-model layout (root attr ``model_config`` JSON +
  group ``model_weights`` with ``layer_names`` / ``weight_names`` attrs).

Written with json, zipfile, h5py and numpy only; files are written with
:func:`jaxconvviz._atomic.atomic_write` (a fsynced temp file renamed over the
destination, mode as the umask gives a new file). The model's
``preprocessing`` is not part of a Keras file: load a model trained on
``x / 255`` with ``preprocessing="scale01"``.

Imports h5py: exported lazily from :mod:`jaxconvviz`.
"""

from __future__ import annotations

import datetime
import functools
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from jaxconvviz._atomic import atomic_write
from jaxconvviz._types import Params
from jaxconvviz._version import __version__
from jaxconvviz.errors import InputError, InputTypeError
from jaxconvviz.models.convnet import ConvNet, Layer
from jaxconvviz.models.keras_import import keras3_group_names
from jaxconvviz.models.kinds.registry import KINDS
from jaxconvviz.models.vgg import resolve_model

#: ``keras_version`` written into the files: the Keras 3 layout they follow.
KERAS_FORMAT_VERSION = "3.0.0"

def _policy() -> dict:
    return {"module": "keras", "class_name": "DTypePolicy",
            "config": {"name": "float32"}, "registered_name": None}


def _exportable(spec: Layer) -> bool:
    return spec.kind in KINDS and KINDS[spec.kind].keras_class is not None


def _keras_class(spec: Layer) -> str:
    return KINDS[spec.kind].keras_class


def _layer_config(spec: Layer) -> dict:
    """The Keras 3 ``get_config()`` of one layer (its kind's ``to_keras``)."""
    return {"name": spec.name, "trainable": True, "dtype": _policy(),
            **KINDS[spec.kind].to_keras(spec)}


def _input_name(model: ConvNet) -> str:
    name, i = "input_layer", 1
    while name in model.layer_names:
        name, i = f"input_layer_{i}", i + 1
    return name


def keras_config(model: ConvNet, *, legacy: bool = False) -> dict:
    """The Keras 3 ``Sequential`` config (``config.json`` / ``model_config``).

    ``legacy=True`` gives the entries without ``module``/``registered_name``
    keys, as Keras 3 writes them into full-model ``.h5`` files.
    """
    h, w, c = model.input_shape
    batch_shape = [None, h, w, int(c)]

    def entry(cls: str, cfg: dict) -> dict:
        if legacy:
            return {"class_name": cls, "config": cfg}
        return {"module": "keras.layers", "class_name": cls, "config": cfg,
                "registered_name": None}

    inp = {"batch_shape": batch_shape, "dtype": "float32", "sparse": False,
           "ragged": False, "name": _input_name(model), "optional": False}
    layers = [entry("InputLayer", inp)]
    layers += [entry(_keras_class(s), _layer_config(s)) for s in model.layers]
    inner = {"name": model.name_, "trainable": True, "dtype": _policy(),
             "layers": layers, "build_input_shape": batch_shape}
    if legacy:
        return {"class_name": "Sequential", "config": inner}
    return {"module": "keras", "class_name": "Sequential", "config": inner,
            "registered_name": None}


def _check(model: ConvNet, params: Params, path) -> tuple[Path, str]:
    if not isinstance(model, ConvNet):
        raise InputTypeError(
            f"model must be a jaxconvviz ConvNet; got {type(model).__name__}.")
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".keras", ".h5", ".hdf5"):
        raise InputError(
            f"path must end in .keras (Keras 3 archive) or .h5 (legacy full "
            f"model); got {os.fspath(path)!r}."
        )
    if p.is_dir():
        raise InputError(
            f"path must be a file path; got the directory {os.fspath(path)!r}.")
    bad = [n for n in model.layer_names if "/" in n or not n]
    if bad:
        raise InputError(f"model layer names must be non-empty without '/'; got {bad}.")
    if model.input_shape[2] is None:
        raise InputError("model.input_shape must give the number of channels.")
    if not model.is_chain:
        merges = [s.name for s in model.layers if s.inputs][:3]
        raise InputError(
            f"model {model.name_!r} is a graph (layers {merges} read other layers "
            "than the previous one); save_keras_model writes Sequential chains "
            "only.")
    other = [f"{s.name!r} ({s.kind})" for s in model.layers if not _exportable(s)]
    if other:
        kinds = [k for k, r in KINDS.items() if r.keras_class is not None]
        raise InputError(
            f"layers {', '.join(other[:3])} have kinds save_keras_model does not "
            f"write; supported kinds: {', '.join(kinds)}.")
    model.check_params(params, source="params")
    return p, suffix


def _arrays(spec: Layer, params: Params) -> list[tuple[str, np.ndarray]]:
    return [(n, np.asarray(params[spec.name][n], dtype=np.float32))
            for n in spec.param_names]


def _keras_weights_h5(model: ConvNet, params: Params) -> bytes:
    import h5py

    buf = io.BytesIO()
    groups = keras3_group_names([_keras_class(s) for s in model.layers])
    with h5py.File(buf, "w") as f:
        for spec, g in zip(model.layers, groups, strict=True):
            vars_ = f.create_group(f"layers/{g}/vars")
            vars_.attrs["name"] = spec.name
            for i, (_, arr) in enumerate(_arrays(spec, params)):
                vars_.create_dataset(str(i), data=arr)
        f.create_group("vars").attrs["name"] = model.name_
    return buf.getvalue()


def _write_keras(model: ConvNet, params: Params, fh) -> None:
    meta = {"keras_version": KERAS_FORMAT_VERSION,
            "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
            "writer": f"jaxconvviz {__version__}"}
    with zipfile.ZipFile(fh, "w") as zf:
        zf.writestr("metadata.json", json.dumps(meta), zipfile.ZIP_DEFLATED)
        zf.writestr("config.json", json.dumps(keras_config(model)),
                    zipfile.ZIP_DEFLATED)
        zf.writestr("model.weights.h5", _keras_weights_h5(model, params),
                    zipfile.ZIP_STORED)


def _write_h5(model: ConvNet, params: Params, fh) -> None:
    import h5py

    str_dt = h5py.string_dtype()
    with h5py.File(fh, "w") as f:
        f.attrs["backend"] = "jax"
        f.attrs["keras_version"] = KERAS_FORMAT_VERSION
        f.attrs["model_config"] = json.dumps(keras_config(model, legacy=True))
        f.attrs["writer"] = f"jaxconvviz {__version__}"
        mw = f.create_group("model_weights")
        mw.attrs["backend"] = "jax"
        mw.attrs["keras_version"] = KERAS_FORMAT_VERSION
        mw.attrs["layer_names"] = np.array(list(model.layer_names), dtype=str_dt)
        for spec in model.layers:
            g = mw.create_group(spec.name)
            arrays = _arrays(spec, params)
            names = [f"{model.name_}/{spec.name}/{n}" for n, _ in arrays]
            g.attrs["weight_names"] = (np.array(names, dtype=str_dt) if names
                                       else np.zeros((0,), np.float64))
            for wn, (_, arr) in zip(names, arrays, strict=True):
                g.create_dataset(wn, data=arr)  # '/' in the name -> sub-groups
        mw.create_group("top_level_model_weights").attrs["weight_names"] = (
            np.zeros((0,), np.float64))


def save_keras_model(params: Params, path, *, model: ConvNet | None = None) -> Path:
    """Save ``model`` + ``params`` as a Keras 3 ``.keras`` or legacy ``.h5`` file.

    The file is a Keras ``Sequential`` (an ``InputLayer`` of
    ``model.input_shape``, then one Keras layer per ConvNet layer with the same
    name) that ``keras.models.load_model`` and
    :func:`~jaxconvviz.models.keras_import.load_keras_model` both load.

    Args:
      params: the float32 params (shapes checked against ``model``).
      path: destination ending in ``.keras`` or ``.h5``/``.hdf5``; replaced
        atomically if it exists (a reader sees the old or the whole new file);
        a new file gets the mode the umask allows (``0o666 & ~umask``).
      model: the network (:class:`~jaxconvviz.models.convnet.ConvNet`); None
        infers the VGG16 preset from ``params``.

    Returns:
      The written path.

    Raises:
      ValueError: bad suffix, params that do not fit ``model``.
    """
    if model is None:
        model = resolve_model(params)
    p, suffix = _check(model, params, path)
    atomic_write(p, functools.partial(
        _write_keras if suffix == ".keras" else _write_h5, model, params))
    return p


__all__ = ["save_keras_model", "keras_config", "KERAS_FORMAT_VERSION"]
