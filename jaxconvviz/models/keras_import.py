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

The model must be a ``Sequential`` or a functional ``Model`` with one image
input and one output -- any DAG between them (residual ``Add``, ``Concatenate``,
squeeze-excite ``Multiply``, Keras 3 ``keras.ops`` nodes such as ``x + 3.0``),
channels-last, built from the layers in :data:`SUPPORTED_LAYERS` (everything
``keras.applications`` ResNet/MobileNet/EfficientNet/DenseNet/Xception/
Inception/VGG/ConvNeXt use). Nested ``Sequential``/functional blocks are
inlined under their layers' own names, plus an identity node named after the
block (its output); a nested ``Sequential`` of random augmentation layers is
one identity layer. Shared layers (one layer called twice), several inputs or
outputs, or an unsupported class raise ``ValueError`` naming the file, the
layer and its class (and the supported list) before any compute. Weights are
read by :func:`jaxconvviz.models.weights.read_keras_weights`.

Imports h5py: exported lazily from :mod:`jaxconvviz`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxconvviz._types import Params
from jaxconvviz.errors import InputError, MissingFileError
from jaxconvviz.models.convnet import (
    ACTIVATIONS,
    MERGE_KINDS,
    PREPROCESSING,
    ConvNet,
    Layer,
)
from jaxconvviz.models.layers import pads2
from jaxconvviz.models.shapes import SHAPES

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
    "DepthwiseConv2D": "depthwise_conv",
    "SeparableConv2D": "separable_conv",
    "SeparableConvolution2D": "separable_conv",
    "LayerNormalization": "layernorm",
    "Normalization": "normalization",
    "LayerScale": "layerscale",  # keras.applications.convnext
    "ZeroPadding2D": "zeropad",
    "Cropping2D": "cropping",
    "Reshape": "reshape",
    "Add": "add",
    "Subtract": "subtract",
    "Multiply": "multiply",
    "Average": "average",
    "Maximum": "maximum",
    "Concatenate": "concatenate",
    "Identity": "identity",
    # Identity at inference (Keras' predict runs with training=False).
    "Dropout": "dropout",
    "SpatialDropout2D": "dropout",
    "GaussianDropout": "dropout",
    "GaussianNoise": "dropout",
    "AlphaDropout": "dropout",
    "StochasticDepth": "dropout",  # keras.applications.convnext
}

#: Keras 3 ``keras.ops`` nodes of functional models (``x + 3.0``, ``x * y``):
#: with two or more tensors a merge, with one tensor and a number an affine
#: map (a ``rescaling`` layer).
OPS_NODES = ("Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum")

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


def _call_args(entry: Mapping) -> list:
    """The positional args of an op node's one call: layer names of tensors,
    numbers as they are (``x + 3.0`` in Keras 3 -> ``["conv", 3.0]``)."""
    nodes = entry.get("inbound_nodes") or []
    if not nodes or not isinstance(nodes[0], Mapping):
        return []
    out = []
    for a in nodes[0].get("args", []):
        if isinstance(a, Mapping) and a.get("class_name") == "__keras_tensor__":
            out.append(str(a["config"]["keras_history"][0]))
        elif isinstance(a, list | tuple):
            srcs: list[str] = []
            _history(a, srcs)
            out.extend(srcs)
        else:
            out.append(a)
    return out


@dataclasses.dataclass
class _Node:
    """One flattened graph node: its Keras entry and the node names it reads
    (``None``: an alias node, an identity named after a nested model)."""

    entry: Mapping | None
    name: str
    inputs: tuple[str, ...]
    cls: str


def _is_nested(entry: Mapping) -> bool:
    return _cls(entry) in _MODEL_CLASSES


def _augmentation_only(entry: Mapping) -> bool:
    inner = (entry.get("config") or {}).get("layers") or []
    return _cls(entry) == "Sequential" and all(
        _cls(e) in AUGMENTATION_LAYERS | {"InputLayer", "Dropout"} for e in inner)


def _inline_sequential(inner: Mapping, src: str, label: str,
                       out: list[_Node]) -> str:
    prev = src
    for e in inner.get("layers") or []:
        if _cls(e) == "InputLayer":
            continue
        prev = _add_node(e, (prev,), label, out)
    return prev


def _add_node(e: Mapping, srcs: tuple[str, ...], label: str,
              out: list[_Node]) -> str:
    """Append ``e`` (inlining nested models) fed by ``srcs``; its output name."""
    name, cls = _lname(e), _cls(e)
    if _is_nested(e) and not _augmentation_only(e):
        inner = e.get("config") or {}
        if len(srcs) != 1:
            raise InputError(
                f"{label}: nested model {name!r} ({cls}) takes {len(srcs)} inputs; "
                "only single-input nested models are supported.")
        if cls == "Sequential":
            last = _inline_sequential(inner, srcs[0], label, out)
        else:
            last = _inline_functional(inner, srcs, label, out)
        # an identity under the nested model's own name keeps it targetable
        out.append(_Node(None, name, (last,), cls))
        return name
    out.append(_Node(e, name, srcs, cls))
    return name


def _inline_functional(inner: Mapping, srcs: tuple[str, ...] | None, label: str,
                       out: list[_Node]) -> str:
    """Flatten a functional model's layers into ``out`` (topological order);
    ``srcs`` feed its inputs (None: top level, its InputLayer stays)."""
    entries = list(inner.get("layers") or [])
    by_name = {_lname(e): e for e in entries}
    inputs = _endpoints(inner.get("input_layers"))
    outputs = _endpoints(inner.get("output_layers"))
    if len(inputs) != 1 or len(outputs) != 1:
        raise InputError(
            f"{label}: model {inner.get('name')!r} has {len(inputs)} input(s) "
            f"{inputs} and {len(outputs)} output(s) {outputs}; only "
            "single-input, single-output models are supported."
        )
    resolved: dict[str, str] = {}
    if srcs is None:
        resolved[inputs[0]] = inputs[0]
    else:
        resolved[inputs[0]] = srcs[0]
    calls: dict[str, list[str]] = {}
    for name, e in by_name.items():
        if _cls(e) == "InputLayer":
            continue
        c = _inbound(e)
        if len(c) > 1:
            raise InputError(
                f"{label}: layer {name!r} ({_cls(e)}) is called {len(c)} times "
                "(a shared layer); shared layers are not supported -- give each "
                "call its own layer.")
        if not c:
            continue  # not connected: Keras never runs it
        for s in c[0]:
            if s not in by_name:
                raise InputError(
                    f"{label}: layer {name!r} ({_cls(e)}) reads from unknown "
                    f"layer {s!r}.")
        calls[name] = c[0]
    # Kahn's order (stable: Keras' own layer order among ready nodes)
    done = set(n for n, e in by_name.items() if _cls(e) == "InputLayer")
    pending = [n for n in by_name if n in calls]
    while pending:
        ready = [n for n in pending if all(s in done for s in calls[n])]
        if not ready:
            raise InputError(f"{label}: the layer graph has a cycle among "
                             f"{pending[:5]}.")
        for n in ready:
            srcs_n = tuple(resolved[s] for s in calls[n]) if calls[n] else ()
            resolved[n] = _add_node(by_name[n], srcs_n, label, out)
            done.add(n)
        pending = [n for n in pending if n not in done]
    if outputs[0] not in resolved:
        raise InputError(f"{label}: output layer {outputs[0]!r} is not connected "
                         "to the input.")
    return resolved[outputs[0]]


def _graph_nodes(config: Mapping, label: str) -> tuple[str, list[_Node], str, Any,
                                                        Mapping]:
    """(model name, flattened nodes, input name, build shape, input entry)."""
    cls = _cls(config)
    inner = config.get("config") or {}
    nodes: list[_Node] = []
    if cls == "Sequential":
        layers = list(inner.get("layers") or [])
        if not layers:
            raise InputError(f"{label}: the model has no layers.")
        first = layers[0]
        in_name = _lname(first) if _cls(first) == "InputLayer" else "input"
        _inline_sequential(inner, in_name, label, nodes)
        build = inner.get("build_input_shape")
        in_entry = first
    elif cls in ("Functional", "Model"):
        by_name = {_lname(e): e for e in inner.get("layers") or []}
        ins = _endpoints(inner.get("input_layers"))
        _inline_functional(inner, None, label, nodes)
        in_name = ins[0]
        in_entry = by_name.get(in_name, {})
        build = None
    else:
        raise InputError(
            f"{label}: model class {cls!r} is not supported; expected a "
            "Sequential or functional Model (subclassed models store no layer "
            "graph)."
        )
    if not nodes:
        raise InputError(f"{label}: the model has no layers besides its input.")
    return str(inner.get("name") or "keras_model"), nodes, in_name, build, in_entry


def _prune(nodes: list[_Node], out: str) -> list[_Node]:
    """The ancestors of the output node ``out``, in order (``out`` last)."""
    keep = {out}
    for n in reversed(nodes):
        if n.name in keep:
            keep.update(n.inputs)
    return [n for n in nodes if n.name in keep]


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


def _translate(entry: Mapping, label: str, in_shapes: list[tuple]) -> Layer | None:
    """One Keras layer entry -> Layer (None for InputLayer); ``in_shapes``
    are its inputs' per-example shapes."""
    cls, name = _cls(entry), _lname(entry)
    cfg = entry.get("config") or {}
    where = f"{label}: layer {name!r} ({cls})"
    channels = in_shapes[0] if in_shapes else ()
    if cls in _MODEL_CLASSES:
        return _nested(entry, label)
    if ".ops." in str(entry.get("module") or ""):
        return _op_node(entry, label, where)
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
        groups = int(cfg.get("groups", 1) or 1)
        extra = {"groups": groups} if groups != 1 else {}
        return Layer.make(
            name, "conv", features=int(cfg["filters"]), **extra,
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
            return Layer.make(name, kind, keepdims=True)
        return Layer.make(name, kind)
    if kind in ("depthwise_conv", "separable_conv"):
        extra = {"features": int(cfg["filters"])} if kind == "separable_conv" else {}
        return Layer.make(
            name, kind, **extra,
            kernel_size=_pair(cfg["kernel_size"], where, "kernel_size"),
            strides=_pair(cfg.get("strides", 1), where, "strides"),
            padding=_padding(cfg, where),
            dilation=_pair(cfg.get("dilation_rate", 1), where, "dilation_rate"),
            depth_multiplier=int(cfg.get("depth_multiplier", 1)),
            use_bias=bool(cfg.get("use_bias", True)),
            activation=_activation(cfg.get("activation"), where),
        )
    if kind == "layernorm":
        _last_axis(cfg.get("axis", -1), len(channels), where)
        if cfg.get("rms_scaling"):
            raise InputError(f"{where} has rms_scaling=True; only False is "
                             "supported.")
        return Layer.make(name, "layernorm", epsilon=float(cfg.get("epsilon", 1e-3)),
                          center=bool(cfg.get("center", True)),
                          scale=bool(cfg.get("scale", True)))
    if kind == "normalization":
        _last_axis(cfg.get("axis", -1), len(channels), where)
        if cfg.get("invert"):
            raise InputError(f"{where} has invert=True; only False is supported.")
        if cfg.get("mean") is None:
            return Layer.make(name, "normalization")
        c = int(channels[-1])

        def per_channel(v):
            v = [float(a) for a in np.ravel(v)]
            return tuple(v * c if len(v) == 1 else v)

        return Layer.make(name, "normalization", mean=per_channel(cfg["mean"]),
                          variance=per_channel(cfg["variance"]))
    if kind == "layerscale":
        return Layer.make(name, "layerscale")
    if kind in ("zeropad", "cropping"):
        key = "padding" if kind == "zeropad" else "cropping"
        v = cfg.get(key, 1 if kind == "zeropad" else 0)
        (t, b), (lf, r) = pads2(v if isinstance(v, int) else
                                tuple(a if isinstance(a, int) else tuple(a)
                                      for a in v))
        return Layer.make(name, kind, **{key: ((t, b), (lf, r))})
    if kind == "reshape":
        return Layer.make(name, "reshape",
                          target_shape=tuple(int(a) for a in cfg["target_shape"]))
    if kind in MERGE_KINDS:
        if kind == "concatenate":
            axis = int(cfg.get("axis", -1))
            rank = len(channels) + 1
            if axis not in (-1, rank - 1):
                raise InputError(f"{where} concatenates axis {axis}; only the "
                                 "channel axis (-1) is supported.")
            return Layer.make(name, "concatenate", axis=-1)
        return Layer.make(name, kind)
    if kind == "identity":
        return Layer.make(name, "identity")
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
    """A nested Sequential of augmentation layers -> one identity layer (other
    nested models are inlined by :func:`_add_node`)."""
    return Layer.make(_lname(entry), "dropout")


def _last_axis(axis, rank: int, where: str) -> None:
    axis = axis[0] if isinstance(axis, list | tuple) and len(axis) == 1 else axis
    if axis not in (-1, rank):  # the last axis (batch is axis 0)
        raise InputError(
            f"{where} normalises axis {axis!r}; only the channel axis (-1) is "
            "supported."
        )


def _op_node(entry: Mapping, label: str, where: str) -> Layer:
    """A ``keras.ops`` node (Keras 3 functional ``x + 3.0``, ``x * y``)."""
    cls, name = _cls(entry), _lname(entry)
    args = _call_args(entry)
    tensors = [a for a in args if isinstance(a, str)]
    consts = [a for a in args if isinstance(a, int | float) and not isinstance(a, bool)]
    if cls in OPS_NODES and len(tensors) >= 2 and not consts:
        kind = {"Add": "add", "Subtract": "subtract", "Multiply": "multiply",
                "Maximum": "maximum"}.get(cls)
        if kind is not None:
            return Layer.make(name, kind)
    if cls in OPS_NODES and len(tensors) == 1 and len(consts) == 1 \
            and len(args) == 2 and cls != "Maximum":
        c, first = float(consts[0]), isinstance(args[0], str)
        if cls == "Add":
            return Layer.make(name, "rescaling", offset=c)
        if cls == "Multiply":
            return Layer.make(name, "rescaling", scale=c)
        if cls == "Subtract":
            return Layer.make(name, "rescaling", **(
                {"offset": -c} if first else {"scale": -1.0, "offset": c}))
        if first and c != 0.0:  # x / c
            return Layer.make(name, "rescaling", scale=1.0 / c)
    raise InputError(
        f"{where} is a keras.ops node with args {args!r:.80}; supported ops "
        f"nodes: {', '.join(OPS_NODES)} of two or more tensors, or of one "
        "tensor and a number (x + c, x - c, c - x, x * c, x / c)."
    )


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
      preprocessing: the model's input pixel domain, one of
        :data:`~jaxconvviz.models.convnet.PREPROCESSING`: ``"none"`` (RGB
        [0, 255] fed as is; right for models that start with ``Rescaling``),
        ``"caffe"``, ``"tf"``, ``"torch"`` or ``"scale01"`` (``x / 255``).
      source: file name used in error messages.

    Returns:
      The ConvNet, with the Keras layer names (InputLayer dropped; its name
      is the model's ``input_name``), layers in topological order, each
      naming its ``inputs`` unless it reads the layer before it.

    Raises:
      ValueError: an unsupported layer or option, a shared layer, several
        inputs or outputs, a channels-first layer or no image input shape;
        the message names ``source``, the layer and its Keras class.
    """
    if preprocessing not in PREPROCESSING:
        raise InputError(
            f"preprocessing must be one of {PREPROCESSING}; got {preprocessing!r}."
        )
    model_name, nodes, in_name, build, in_entry = _graph_nodes(config, source)
    first = [in_entry] if in_entry else []
    if nodes[0].entry is not None:
        first.append(nodes[0].entry)
    input_shape = _input_shape(first, build, source)
    out_name = nodes[-1].name
    if config.get("class_name") in ("Functional", "Model"):
        outs = _endpoints((config.get("config") or {}).get("output_layers"))
        out_name = next((n.name for n in nodes if n.name == outs[0]), out_name)
    nodes = _prune(nodes, out_name)
    probe_hw = (input_shape[0] or 512, input_shape[1] or 512)
    shapes: dict[str, tuple] = {in_name: (*probe_hw, input_shape[2])}
    layers: list[Layer] = []
    seen: set[str] = {in_name}
    prev = in_name
    for node in nodes:
        if node.entry is None:
            spec = Layer.make(node.name, "identity")
        else:
            spec = _translate(node.entry, source,
                              [shapes[i] for i in node.inputs])
        if spec is None:
            continue
        if spec.name in seen:
            raise InputError(f"{source}: two layers are named {spec.name!r}.")
        seen.add(spec.name)
        if node.inputs != (prev,):  # a chain needs no inputs
            spec = dataclasses.replace(spec, inputs=tuple(node.inputs))
        try:
            shapes[spec.name] = SHAPES[spec.kind](
                spec, tuple(shapes[i] for i in node.inputs))
        except ValueError as e:
            raise InputError(
                f"{source}: layer {spec.name!r} ({node.cls}) cannot combine its "
                f"inputs {list(node.inputs)} of shapes "
                f"{[shapes[i] for i in node.inputs]} ({e}).") from None
        layers.append(spec)
        prev = spec.name
    if not layers:
        raise InputError(f"{source}: the model has no layers besides its input.")
    return ConvNet(layers=tuple(layers), input_shape=input_shape,
                   preprocessing=preprocessing, name_=model_name,
                   input_name=in_name)


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
            n: jax.device_put(np.asarray(a, dtype=np.float32))  # no compile
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
        2) of a ``Sequential`` or functional model (any single-input,
        single-output graph); layers in :data:`SUPPORTED_LAYERS`,
        channels-last.
      preprocessing: the input pixel domain the model was trained on:
        ``"none"`` (default; RGB [0, 255] as is -- right when the model starts
        with ``Rescaling``/``Normalization``, as MobileNetV3, EfficientNet and
        ConvNeXt do), ``"caffe"`` (VGG, ResNet), ``"tf"`` (``x / 127.5 - 1``:
        MobileNetV2, ResNetV2, Xception, Inception), ``"torch"`` (DenseNet)
        or ``"scale01"`` (``x / 255``). The techniques feed
        ``model.preprocess(images_rgb)`` to the network.

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
    _, nodes, _, _, _ = _graph_nodes(config, label)
    entries = [n.entry for n in nodes if n.entry is not None
               and _cls(n.entry) != "InputLayer"]
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
