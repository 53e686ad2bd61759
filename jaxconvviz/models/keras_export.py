"""Write a ConvNet and its params as a Keras model file, without Keras.

:func:`save_keras_model` writes the two layouts :func:`~jaxconvviz.
keras_import.load_keras_model` reads -- and that Keras 3 itself loads with
``keras.models.load_model`` (tested against Keras 3.x):

* ``.keras``: a zip of ``metadata.json``, ``config.json`` (a ``Sequential``
  config) and ``model.weights.h5`` (``layers/<class>[_N]/vars/<i>`` datasets,
  each ``vars`` group with attr ``name`` = the layer name);
* ``.h5``: the legacy full-model layout (root attr ``model_config`` JSON +
  group ``model_weights`` with ``layer_names`` / ``weight_names`` attrs).

Written with json, zipfile, h5py and numpy only; files are written atomically
(temp file + rename). The model's ``preprocessing`` is not part of a Keras
file: load a model trained on ``x / 255`` with ``preprocessing="scale01"``.

Imports h5py: exported lazily from :mod:`jaxconvviz`.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from jaxconvviz import __version__
from jaxconvviz._types import Params
from jaxconvviz.errors import InputError, InputTypeError
from jaxconvviz.models.convnet import ConvNet, Layer
from jaxconvviz.models.keras_import import keras3_group_names
from jaxconvviz.models.vgg import resolve_model

#: ``keras_version`` written into the files: the Keras 3 layout they follow.
KERAS_FORMAT_VERSION = "3.0.0"

_CLASS = {
    "conv": "Conv2D",
    "dense": "Dense",
    "maxpool": "MaxPooling2D",
    "avgpool": "AveragePooling2D",
    "gap": "GlobalAveragePooling2D",
    "gmp": "GlobalMaxPooling2D",
    "flatten": "Flatten",
    "dropout": "Dropout",
    "batchnorm": "BatchNormalization",
    "activation": "Activation",
    "rescaling": "Rescaling",
}


def _policy() -> dict:
    return {"module": "keras", "class_name": "DTypePolicy",
            "config": {"name": "float32"}, "registered_name": None}


def _init(cls: str) -> dict:
    return {"module": "keras.initializers", "class_name": cls,
            "config": {} if cls in ("Zeros", "Ones") else {"seed": None},
            "registered_name": None}


def _pair(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int | np.integer) else [int(a) for a in v]


def _list_or_float(v):
    return [float(a) for a in v] if isinstance(v, tuple | list) else float(v)


def _layer_config(spec: Layer) -> dict:
    """The Keras 3 ``get_config()`` of one layer."""
    o = spec.opt
    cfg: dict = {"name": spec.name, "trainable": True, "dtype": _policy()}
    k = spec.kind
    if k == "conv":
        cfg.update(
            filters=int(o("features")), kernel_size=_pair(o("kernel_size", 3)),
            strides=_pair(o("strides", 1)), padding=o("padding", "same"),
            data_format="channels_last", dilation_rate=_pair(o("dilation", 1)),
            groups=1, activation=o("activation", "linear"),
            use_bias=bool(o("use_bias", True)),
            kernel_initializer=_init("GlorotUniform"), bias_initializer=_init("Zeros"),
            kernel_regularizer=None, bias_regularizer=None,
            activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
        )
    elif k == "dense":
        cfg.update(
            units=int(o("features")), activation=o("activation", "linear"),
            use_bias=bool(o("use_bias", True)),
            kernel_initializer=_init("GlorotUniform"), bias_initializer=_init("Zeros"),
            kernel_regularizer=None, bias_regularizer=None,
            kernel_constraint=None, bias_constraint=None,
        )
    elif k in ("maxpool", "avgpool"):
        pool = _pair(o("pool_size", 2))
        cfg.update(pool_size=pool, padding=o("padding", "valid"),
                   strides=_pair(o("strides", pool)), data_format="channels_last")
    elif k in ("gap", "gmp"):
        cfg.update(data_format="channels_last", keepdims=False)
    elif k == "flatten":
        cfg.update(data_format="channels_last")
    elif k == "dropout":
        cfg.update(rate=float(o("rate", 0.5)), seed=None, noise_shape=None)
    elif k == "batchnorm":
        cfg.update(
            axis=-1, momentum=0.99, epsilon=float(o("epsilon", 1e-3)),
            center=bool(o("center", True)), scale=bool(o("scale", True)),
            beta_initializer=_init("Zeros"), gamma_initializer=_init("Ones"),
            moving_mean_initializer=_init("Zeros"),
            moving_variance_initializer=_init("Ones"),
            beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
            gamma_constraint=None, synchronized=False,
        )
    elif k == "activation":
        cfg.update(activation=o("activation", "linear"))
    elif k == "rescaling":
        cfg.update(scale=_list_or_float(o("scale", 1.0)),
                   offset=_list_or_float(o("offset", 0.0)))
    return cfg


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
    layers += [entry(_CLASS[s.kind], _layer_config(s)) for s in model.layers]
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
    other = [f"{s.name!r} ({s.kind})" for s in model.layers if s.kind not in _CLASS]
    if other:
        raise InputError(
            f"layers {', '.join(other[:3])} have kinds save_keras_model does not "
            f"write; supported kinds: {', '.join(_CLASS)}.")
    model.check_params(params, source="params")
    return p, suffix


def _arrays(spec: Layer, params: Params) -> list[tuple[str, np.ndarray]]:
    return [(n, np.asarray(params[spec.name][n], dtype=np.float32))
            for n in spec.param_names]


def _keras_weights_h5(model: ConvNet, params: Params) -> bytes:
    import h5py

    buf = io.BytesIO()
    groups = keras3_group_names([_CLASS[s.kind] for s in model.layers])
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
        atomically if it exists.
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
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w+b") as fh:
            if suffix == ".keras":
                _write_keras(model, params, fh)
            else:
                _write_h5(model, params, fh)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return p


__all__ = ["save_keras_model", "keras_config", "KERAS_FORMAT_VERSION"]
