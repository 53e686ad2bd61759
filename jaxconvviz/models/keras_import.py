"""Bring your own Keras CNN: ``.keras`` archives and full-model ``.h5`` files.

:func:`load_keras_model` reads a Keras model's architecture (its JSON config)
and weights and returns an equivalent :class:`~jaxconvviz.models.convnet.ConvNet` with
the same layer names plus its ``params``, so every technique (activations,
filter patterns, Grad-CAM, kernel views) runs on it through ``model=``.

Formats (read with json, zipfile, h5py and numpy only -- Keras is never
imported):

* Keras 3 ``.keras`` zip: ``config.json`` + ``model.weights.h5``
  (``model.save("m.keras")``).
* Legacy full-model ``.h5``: root attr ``model_config`` (JSON) + group
  ``model_weights`` (``model.save("m.h5")`` in Keras 3, or tf.keras 2).

The model must be a ``Sequential`` or a functional ``Model`` whose layers form
one linear chain (one input, one output, every layer called once on one
tensor), channels-last, built from the layers in :data:`SUPPORTED_LAYERS`.
Anything else raises ``ValueError`` naming the file, the layer and its class.
Weights are read by :func:`jaxconvviz.models.weights.read_keras_weights`.

Imports h5py: exported lazily from :mod:`jaxconvviz`.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxconvviz._types import Params
from jaxconvviz.errors import InputError, MissingFileError
from jaxconvviz.models.convnet import ACTIVATIONS, PREPROCESSING, ConvNet, Layer

#: Keras classes this importer translates, and the ConvNet kind each becomes.
SUPPORTED_LAYERS: dict[str, str] = {
    "InputLayer": "input",
    "Conv2D": "conv",
    "Convolution2D": "conv",  # tf.keras 2 alias
    "Dense": "dense",
    "MaxPooling2D": "maxpool",
    "MaxPool2D": "maxpool",
    "AveragePooling2D": "avgpool",
    "AvgPool2D": "avgpool",
    "GlobalAveragePooling2D": "gap",
    "GlobalAvgPool2D": "gap",
    "GlobalMaxPooling2D": "gmp",
    "GlobalMaxPool2D": "gmp",
    "Flatten": "flatten",
    "BatchNormalization": "batchnorm",
    "Activation": "activation",
    "ReLU": "activation",
    "Rescaling": "rescaling",
    # Identity at inference (Keras' predict runs with training=False).
    "Dropout": "dropout",
    "SpatialDropout2D": "dropout",
    "GaussianDropout": "dropout",
    "GaussianNoise": "dropout",
    "AlphaDropout": "dropout",
}

#: Random data-augmentation layers: identity at inference, allowed (only) in a
#: nested ``Sequential`` such as DLwP 2nd ed.'s ``data_augmentation`` block,
#: which is imported as one identity layer.
AUGMENTATION_LAYERS = frozenset({
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomContrast",
    "RandomTranslation", "RandomBrightness",
})

_MODEL_CLASSES = ("Sequential", "Functional", "Model")


# ------------------------------------------------------------------ reading
def _read_archive(path: Path, label: str) -> tuple[dict, dict[str, list]]:
    """(model config dict, {layer_name: [arrays]}) from a .keras or .h5 file."""
    from jaxconvviz.models.weights import read_keras_weights

    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"PK") or path.suffix.lower() == ".keras":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                if "config.json" not in names:
                    raise InputError(
                        f"{label}: a zip archive without config.json is not a "
                        f"Keras .keras model; it holds {names[:6]}."
                    )
                if "model.weights.h5" not in names:
                    raise InputError(
                        f"{label}: .keras archive has no model.weights.h5 (only "
                        f"{names[:6]}); re-save it with model.save('m.keras')."
                    )
                config = _parse_json(zf.read("config.json"), label, "config.json")
                blob = zf.read("model.weights.h5")
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise InputError(
                f"{label}: corrupt or truncated .keras archive ({e})."
            ) from None
        weights = read_keras_weights(_NamedBytesIO(blob, f"{label}:model.weights.h5"))
        return config, weights

    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        what = ("truncated or corrupt HDF5 file" if head == b"\x89HDF\r\n\x1a\n"
                else "neither a .keras zip archive nor an HDF5 .h5 file")
        raise InputError(
            f"{label}: not a readable Keras model: {what} ({e})."
        ) from None
    with f:
        raw = f.attrs.get("model_config")
        if raw is None:
            if "layers" in f or "layer_names" in f.attrs:
                raise InputError(
                    f"{label}: holds weights only, no architecture (no "
                    "'model_config'); save the whole model with "
                    "model.save('m.keras') or model.save('m.h5'), or load these "
                    "weights into a model you build (jcv.load_params)."
                )
            raise InputError(
                f"{label}: HDF5 file without a Keras 'model_config' attribute; "
                "not a full-model .h5 (save with model.save('m.h5'))."
            )
        if isinstance(raw, bytes | np.bytes_):
            raw = bytes(raw).decode("utf8")
        config = _parse_json(raw, label, "model_config")
        try:
            weights = read_keras_weights(f)
        except (KeyError, OSError) as e:
            raise InputError(f"{label}: corrupt Keras weights ({e}).") from None
    return config, weights


class _NamedBytesIO(io.BytesIO):
    """BytesIO with a ``name`` so weight errors name the archive member."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name = name


def _parse_json(raw, label: str, what: str) -> dict:
    try:
        config = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{label}: {what} is not valid JSON ({e}).") from None
    if not isinstance(config, dict) or "class_name" not in config:
        raise InputError(
            f"{label}: {what} is not a Keras model config (no 'class_name')."
        )
    return config


# ------------------------------------------------------------ config -> chain
def _cls(entry: Mapping) -> str:
    return str(entry.get("class_name"))


def _lname(entry: Mapping) -> str:
    cfg = entry.get("config") or {}
    return str(entry.get("name") or cfg.get("name"))


def _history(obj: Any, out: list[str]) -> None:
    """Collect the source layer names of Keras 3 ``__keras_tensor__`` args."""
    if isinstance(obj, Mapping):
        if obj.get("class_name") == "__keras_tensor__":
            out.append(str(obj["config"]["keras_history"][0]))
            return
        for v in obj.values():
            _history(v, out)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _history(v, out)


def _inbound(entry: Mapping) -> list[list[str]]:
    """Per call of the layer, the names of the layers feeding it."""
    nodes = entry.get("inbound_nodes") or []
    calls = []
    for node in nodes:
        srcs: list[str] = []
        if isinstance(node, Mapping):  # Keras 3: {"args": [...], "kwargs": {...}}
            _history(node.get("args", []), srcs)
            _history(node.get("kwargs", {}), srcs)
        else:  # tf.keras 2: [[name, node_index, tensor_index, kwargs], ...]
            srcs = [str(t[0]) for t in node]
        calls.append(srcs)
    return calls


def _endpoints(value) -> list[str]:
    """``input_layers``/``output_layers`` -> layer names (one or a list)."""
    if not value:
        return []
    if isinstance(value[0], str):
        return [value[0]]
    return [str(v[0]) for v in value]


def _functional_chain(config: Mapping, label: str) -> list[Mapping]:
    """The layer entries of a functional model in input-to-output order."""
    entries = list(config.get("layers") or [])
    by_name = {_lname(e): e for e in entries}
    inputs = _endpoints(config.get("input_layers"))
    outputs = _endpoints(config.get("output_layers"))
    if len(inputs) != 1 or len(outputs) != 1:
        raise InputError(
            f"{label}: model has {len(inputs)} input(s) {inputs} and "
            f"{len(outputs)} output(s) {outputs}; only single-input, "
            "single-output linear chains are supported."
        )
    consumers: dict[str, list[str]] = {n: [] for n in by_name}
    for name, e in by_name.items():
        calls = _inbound(e)
        if len(calls) > 1:
            raise InputError(
                f"{label}: layer {name!r} ({_cls(e)}) is called {len(calls)} "
                "times (a shared layer); only linear chains are supported."
            )
        for srcs in calls:
            if len(srcs) != 1:
                raise InputError(
                    f"{label}: layer {name!r} ({_cls(e)}) merges {len(srcs)} "
                    f"tensors from {srcs}; only linear chains are supported "
                    "(no residual/merge connections)."
                )
            if srcs[0] not in consumers:
                raise InputError(
                    f"{label}: layer {name!r} ({_cls(e)}) reads from unknown "
                    f"layer {srcs[0]!r}."
                )
            consumers[srcs[0]].append(name)
    chain, cur = [by_name[inputs[0]]], inputs[0]
    while cur != outputs[0]:
        nxt = consumers[cur]
        if len(nxt) != 1:
            e = by_name[cur]
            if not nxt:
                raise InputError(
                    f"{label}: the chain from input {inputs[0]!r} ends at layer "
                    f"{cur!r} ({_cls(e)}) before reaching output {outputs[0]!r}."
                )
            raise InputError(
                f"{label}: layer {cur!r} ({_cls(e)}) feeds {len(nxt)} layers "
                f"{nxt} (a branch); only linear chains are supported."
            )
        cur = nxt[0]
        chain.append(by_name[cur])
    off = [n for n, e in by_name.items()
           if e not in chain and _cls(e) != "InputLayer"]
    if off:
        raise InputError(
            f"{label}: layers {off} are not on the path from {inputs[0]!r} to "
            f"{outputs[0]!r}; only linear chains are supported."
        )
    return chain


def _chain(config: Mapping, label: str) -> tuple[str, list[Mapping], Any]:
    """(model name, layer entries in order, build input shape or None)."""
    cls = _cls(config)
    inner = config.get("config") or {}
    if cls == "Sequential":
        layers = list(inner.get("layers") or [])
        build = inner.get("build_input_shape")
    elif cls in ("Functional", "Model"):
        layers = _functional_chain(inner, label)
        build = None
    else:
        raise InputError(
            f"{label}: model class {cls!r} is not supported; expected a "
            "Sequential or functional Model (subclassed models store no layer "
            "graph)."
        )
    if not layers:
        raise InputError(f"{label}: the model has no layers.")
    return str(inner.get("name") or "keras_model"), layers, build


# --------------------------------------------------------- layer translation
def _activation(value, where: str) -> str:
    if value is None:
        return "linear"
    if isinstance(value, Mapping):  # serialised function object
        cfg = value.get("config")
        value = cfg if isinstance(cfg, str) else value.get("class_name")
    name = str(value)
    if name not in ACTIVATIONS:
        raise InputError(
            f"{where} has activation {name!r}; supported activations: "
            f"{', '.join(sorted(ACTIVATIONS))}."
        )
    return name


def _pair(v, where: str, what: str) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(a) for a in v)
    if len(t) != 2:
        raise InputError(f"{where} has {what} {v!r}; expected 2 values.")
    return t


def _check_channels_last(cfg: Mapping, where: str) -> None:
    fmt = cfg.get("data_format")
    if fmt not in (None, "channels_last"):
        raise InputError(
            f"{where} uses data_format={fmt!r}; only channels_last models are "
            "supported (rebuild the model with data_format='channels_last')."
        )


def _padding(cfg: Mapping, where: str) -> str:
    pad = str(cfg.get("padding", "valid")).lower()
    if pad not in ("valid", "same"):
        raise InputError(f"{where} has padding {pad!r}; expected 'valid' or 'same'.")
    return pad


def _scalar_or_tuple(v):
    if isinstance(v, list | tuple):
        return tuple(float(a) for a in v)
    return float(v)


def _translate(entry: Mapping, label: str, channels) -> Layer | None:
    """One Keras layer entry -> Layer (None for InputLayer)."""
    cls, name = _cls(entry), _lname(entry)
    cfg = entry.get("config") or {}
    where = f"{label}: layer {name!r} ({cls})"
    if cls in _MODEL_CLASSES:
        return _nested(entry, label)
    kind = SUPPORTED_LAYERS.get(cls)
    if kind is None:
        raise InputError(
            f"{where} is not supported; supported layers: "
            f"{', '.join(sorted(set(SUPPORTED_LAYERS)))}."
        )
    if kind == "input":
        return None
    _check_channels_last(cfg, where)
    if kind == "conv":
        if int(cfg.get("groups", 1) or 1) != 1:
            raise InputError(
                f"{where} has groups={cfg['groups']}; only 1 is supported.")
        return Layer.make(
            name, "conv", features=int(cfg["filters"]),
            kernel_size=_pair(cfg["kernel_size"], where, "kernel_size"),
            strides=_pair(cfg.get("strides", 1), where, "strides"),
            padding=_padding(cfg, where),
            dilation=_pair(cfg.get("dilation_rate", 1), where, "dilation_rate"),
            use_bias=bool(cfg.get("use_bias", True)),
            activation=_activation(cfg.get("activation"), where),
        )
    if kind == "dense":
        return Layer.make(
            name, "dense", features=int(cfg["units"]),
            use_bias=bool(cfg.get("use_bias", True)),
            activation=_activation(cfg.get("activation"), where),
        )
    if kind in ("maxpool", "avgpool"):
        pool = _pair(cfg.get("pool_size", 2), where, "pool_size")
        strides = cfg.get("strides")
        return Layer.make(
            name, kind, pool_size=pool,
            strides=pool if strides is None else _pair(strides, where, "strides"),
            padding=_padding(cfg, where),
        )
    if kind in ("gap", "gmp"):
        if cfg.get("keepdims"):
            raise InputError(f"{where} has keepdims=True; only False is supported.")
        return Layer.make(name, kind)
    if kind == "flatten":
        return Layer.make(name, "flatten")
    if kind == "dropout":
        if cls == "Dropout":  # kept so save_keras_model writes it back
            return Layer.make(name, "dropout", rate=float(cfg.get("rate", 0.5)))
        return Layer.make(name, "dropout")
    if kind == "batchnorm":
        axis = cfg.get("axis", -1)
        axis = axis[0] if isinstance(axis, list | tuple) and len(axis) == 1 else axis
        if axis not in (-1, len(channels)):  # the last axis (batch is axis 0)
            raise InputError(
                f"{where} normalises axis {axis!r}; only the channel axis (-1) is "
                "supported."
            )
        return Layer.make(
            name, "batchnorm", features=int(channels[-1]),
            epsilon=float(cfg.get("epsilon", 1e-3)),
            center=bool(cfg.get("center", True)), scale=bool(cfg.get("scale", True)),
        )
    if kind == "activation":
        if cls == "ReLU":
            return Layer.make(name, "activation", activation=_relu(cfg, where))
        return Layer.make(name, "activation",
                          activation=_activation(cfg.get("activation"), where))
    if kind == "rescaling":
        return Layer.make(name, "rescaling",
                          scale=_scalar_or_tuple(cfg.get("scale", 1.0)),
                          offset=_scalar_or_tuple(cfg.get("offset", 0.0)))
    raise AssertionError(kind)  # pragma: no cover -- SUPPORTED_LAYERS is closed


def _relu(cfg: Mapping, where: str) -> str:
    max_value = cfg.get("max_value")
    slope = float(cfg.get("negative_slope") or cfg.get("alpha") or 0.0)
    threshold = float(cfg.get("threshold") or 0.0)
    if slope == 0.0 and threshold == 0.0 and max_value is None:
        return "relu"
    if slope == 0.0 and threshold == 0.0 and float(max_value) == 6.0:
        return "relu6"
    raise InputError(
        f"{where} has max_value={max_value}, negative_slope={slope}, "
        f"threshold={threshold}; supported: the defaults (relu) or max_value=6 "
        "(relu6)."
    )


def _nested(entry: Mapping, label: str) -> Layer:
    """A nested Sequential of augmentation layers -> one identity layer."""
    name, cls = _lname(entry), _cls(entry)
    inner = (entry.get("config") or {}).get("layers") or []
    bad = [f"{_lname(e)!r} ({_cls(e)})" for e in inner
           if _cls(e) not in AUGMENTATION_LAYERS | {"InputLayer", "Dropout"}]
    if cls != "Sequential" or bad:
        raise InputError(
            f"{label}: layer {name!r} ({cls}) is a nested model"
            + (f" containing {', '.join(bad[:3])}" if bad else "")
            + "; nested models are supported only as a Sequential of random "
            "data-augmentation layers (identity at inference). Flatten the "
            "model into one Sequential or functional chain."
        )
    return Layer.make(name, "dropout")


def _input_shape(layers: list[Mapping], build, label: str) -> tuple:
    shape = None
    first = layers[0]
    cfg = first.get("config") or {}
    for key in ("batch_shape", "batch_input_shape"):
        if cfg.get(key) is not None:
            shape = cfg[key]
            break
    if shape is None and build is not None:
        shape = build
    if shape is None:
        shape = (first.get("build_config") or {}).get("input_shape")
    if shape is None:
        raise InputError(
            f"{label}: no input shape in the config (no InputLayer, batch_shape or "
            "build_input_shape); build the model on an input before saving."
        )
    shape = tuple(shape)
    if len(shape) != 4 or shape[-1] is None:
        raise InputError(
            f"{label}: model input has batch shape {list(shape)}; expected images "
            "(batch, height, width, channels)."
        )
    h, w, c = shape[1:]
    return (None if h is None else int(h), None if w is None else int(w), int(c))


def convnet_from_keras_config(config: Mapping, *, preprocessing: str = "none",
                              source: str = "config") -> ConvNet:
    """Translate a Keras model config (the JSON of ``model.get_config()`` with
    its ``class_name``) into a :class:`~jaxconvviz.models.convnet.ConvNet`.

    Args:
      config: ``{"class_name": "Sequential" | "Functional", "config": {...}}``
        as stored in ``config.json`` (``.keras``) or the ``model_config`` attr
        (``.h5``).
      preprocessing: the model's input pixel domain, one of ``"none"`` (RGB
        [0, 255] fed as is; right for models that start with ``Rescaling``),
        ``"scale01"`` (``x / 255``, models trained on scaled images) or
        ``"caffe"``.
      source: file name used in error messages.

    Returns:
      The ConvNet, with the Keras layer names (InputLayer dropped).

    Raises:
      ValueError: an unsupported layer or option, a non-linear topology, a
        channels-first layer or no image input shape; the message names
        ``source``, the layer and its Keras class.
    """
    if preprocessing not in PREPROCESSING:
        raise InputError(
            f"preprocessing must be one of {PREPROCESSING}; got {preprocessing!r}."
        )
    model_name, entries, build = _chain(config, source)
    input_shape = _input_shape(entries, build, source)
    layers: list[Layer] = []
    seen: set[str] = set()
    for entry in entries:
        if layers:
            probe = ConvNet(layers=tuple(layers), input_shape=input_shape)
            h, w = (input_shape[0] or 64, input_shape[1] or 64)
            channels = probe.output_shape(layers[-1].name, (h, w))
        else:
            channels = input_shape
        spec = _translate(entry, source, channels)
        if spec is None:
            continue
        if spec.name in seen:
            raise InputError(f"{source}: two layers are named {spec.name!r}.")
        seen.add(spec.name)
        layers.append(spec)
    if not layers:
        raise InputError(f"{source}: the model has no layers besides its input.")
    return ConvNet(layers=tuple(layers), input_shape=input_shape,
                   preprocessing=preprocessing, name_=model_name)


# ------------------------------------------------------------------- params
def _snake(name: str) -> str:
    """Keras' ``to_snake_case`` (group names of Keras 3 weight files)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def keras3_group_names(classes: list[str]) -> list[str]:
    """Keras 3 weight-group names (``conv2d``, ``conv2d_1``, ...) for layer
    classes in model order (the ``layers/<name>/vars`` paths)."""
    counts: dict[str, int] = {}
    out = []
    for cls in classes:
        s = _snake(cls)
        n = counts.get(s, 0)
        counts[s] = n + 1
        out.append(s if n == 0 else f"{s}_{n}")
    return out


def params_from_keras_weights(model: ConvNet, weights: Mapping[str, list], *,
                              source: str = "weights",
                              group_names: Mapping[str, str] | None = None
                              ) -> Params:
    """Map ``{layer_name: [arrays in Keras order]}`` onto ``model``'s params.

    ``group_names`` maps a layer name to its Keras 3 group path (used when the
    file's ``vars`` groups carry no ``name`` attr, as in early Keras 3).
    Shapes are checked with :meth:`ConvNet.check_params`.
    """
    params: Params = {}
    for spec in model.layers:
        names = spec.param_names
        if not names:
            continue
        arrays = weights.get(spec.name)
        if arrays is None and group_names and spec.name in group_names:
            arrays = weights.get(group_names[spec.name])
        if arrays is None:
            raise InputError(
                f"{source}: no weights for layer {spec.name!r}; the file has "
                f"weights for {sorted(weights)}."
            )
        if len(arrays) != len(names):
            raise InputError(
                f"{source}: layer {spec.name!r} has {len(arrays)} weight arrays; "
                f"expected {len(names)} ({', '.join(names)})."
            )
        params[spec.name] = {
            n: jnp.asarray(np.asarray(a, dtype=np.float32))
            for n, a in zip(names, arrays, strict=True)
        }
    model.check_params(params, source=source)
    return params


def load_keras_model(path, *, preprocessing: str = "none"
                     ) -> tuple[ConvNet, Params]:
    """Load a Keras CNN (architecture and weights) without importing Keras.

    Args:
      path: a Keras 3 ``.keras`` archive (``model.save("m.keras")``) or a
        legacy full-model ``.h5`` (``model.save("m.h5")``, Keras 3 or tf.keras
        2) of a ``Sequential`` or linear functional model; layers in
        :data:`SUPPORTED_LAYERS`, channels-last.
      preprocessing: the input pixel domain the model was trained on:
        ``"none"`` (default; RGB [0, 255] as is -- right when the model starts
        with ``Rescaling``), ``"scale01"`` (``x / 255``) or ``"caffe"``. The
        techniques feed ``model.preprocess(images_rgb)`` to the network.

    Returns:
      ``(model, params)``: a :class:`~jaxconvviz.models.convnet.ConvNet` with the Keras
      layer names (``model.forward(params, x, start=, stop=)`` reproduces
      every Keras layer output) and ``{layer: {"kernel", "bias"}}`` float32
      params (BatchNormalization: ``gamma``, ``beta``, ``moving_mean``,
      ``moving_variance``). Pass ``model=model`` to every technique.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: corrupt, truncated or weights-only file, missing config,
        unsupported layer or topology; the message names the file.
    """
    label = str(path)
    p = Path(path)
    if not p.exists():
        raise MissingFileError(f"Keras model file not found: {label}")
    if p.is_dir():
        raise InputError(
            f"{label}: is a directory (a TensorFlow SavedModel?); save the model "
            "with model.save('m.keras') or model.save('m.h5')."
        )
    config, weights = _read_archive(p, label)
    model = convnet_from_keras_config(config, preprocessing=preprocessing,
                                      source=label)
    _, entries, _ = _chain(config, label)
    entries = [e for e in entries if _cls(e) != "InputLayer"]
    groups = dict(zip((_lname(e) for e in entries),
                      (f"layers/{g}" for g in keras3_group_names(
                          [_cls(e) for e in entries])), strict=True))
    params = params_from_keras_weights(model, weights, source=label,
                                       group_names=groups)
    return model, params


__all__ = [
    "load_keras_model",
    "convnet_from_keras_config",
    "params_from_keras_weights",
    "keras3_group_names",
    "SUPPORTED_LAYERS",
]
