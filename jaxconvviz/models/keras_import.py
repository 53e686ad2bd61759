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

Files are read by :mod:`jaxconvviz.models._keras_archive`, the config is
flattened into one graph by :mod:`jaxconvviz.models._keras_graph`, and each
layer entry is translated by the ``from_keras`` of the layer-kind record that
takes its class (:mod:`jaxconvviz.models.kinds`): registering a kind for
another Keras class (:func:`~jaxconvviz.models.kinds.register_layer_kind`)
makes it importable.

Imports h5py: exported lazily from :mod:`jaxconvviz`.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import types
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np

from jaxconvviz._types import Params
from jaxconvviz.errors import InputError, JaxConvVizError, MissingFileError
from jaxconvviz.models._keras_archive import read_keras_archive
from jaxconvviz.models._keras_graph import (
    AUGMENTATION_LAYERS,  # noqa: F401 -- documented here
    MODEL_CLASSES,
    call_args,
    endpoints,
    graph_nodes,
    keras_class,
    layer_name,
    prune,
)
from jaxconvviz.models.convnet import PREPROCESSING, ConvNet, Layer
from jaxconvviz.models.kinds.registry import KERAS_CLASSES, KerasLayer, keras_kind
from jaxconvviz.models.shapes import SHAPES

#: Keras classes this importer translates, and the ConvNet kind each becomes:
#: a live, read-only view of the layer-kind records' ``keras`` classes.
SUPPORTED_LAYERS: Mapping[str, str] = types.MappingProxyType(
    collections.ChainMap({"InputLayer": "input"}, KERAS_CLASSES))

#: Keras 3 ``keras.ops`` nodes of functional models (``x + 3.0``, ``x * y``):
#: with two or more tensors a merge, with one tensor and a number an affine
#: map (a ``rescaling`` layer).
OPS_NODES = ("Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum")


# --------------------------------------------------------- layer translation
def _translate(entry: Mapping, label: str, in_shapes: list[tuple]) -> Layer | None:
    """One Keras layer entry -> Layer (None for InputLayer); ``in_shapes``
    are its inputs' per-example shapes. The kind's record translates it."""
    cls, name = keras_class(entry), layer_name(entry)
    cfg = entry.get("config") or {}
    where = f"{label}: layer {name!r} ({cls})"
    if cls in MODEL_CLASSES:
        # a nested Sequential of augmentation layers (others are inlined)
        return Layer.make(name, "dropout")
    if ".ops." in str(entry.get("module") or ""):
        return _op_node(entry, where)
    if cls == "InputLayer":
        return None
    record = keras_kind(cls)
    if record is None:
        raise InputError(
            f"{where} is not supported; supported layers: "
            f"{', '.join(sorted(set(SUPPORTED_LAYERS)))}."
        )
    fmt = cfg.get("data_format")
    if fmt not in (None, "channels_last"):
        raise InputError(
            f"{where} uses data_format={fmt!r}; only channels_last models are "
            "supported (rebuild the model with data_format='channels_last')."
        )
    try:
        return record.from_keras(KerasLayer(name, cls, cfg, tuple(in_shapes),
                                            where, record.kind))
    except JaxConvVizError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, ArithmeticError) as e:
        # a registered kind's from_keras that does not check its fields
        raise InputError(f"{where} has a malformed config "
                         f"({type(e).__name__}: {e}).") from None


def _op_node(entry: Mapping, where: str) -> Layer:
    """A ``keras.ops`` node (Keras 3 functional ``x + 3.0``, ``x * y``)."""
    cls, name = keras_class(entry), layer_name(entry)
    args = call_args(entry)
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
    dims = tuple(shape) if isinstance(shape, list | tuple) else ()
    if len(dims) != 4 or not all(
            d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 1)
            for d in dims[1:]) or dims[-1] is None:
        raise InputError(
            f"{label}: model input has batch shape {shape!r:.80}; expected images "
            "(batch, height, width, channels) with sizes ints >= 1 (or null)."
        )
    h, w, c = dims[1:]
    return (h, w, c)


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
    model_name, nodes, in_name, build, in_entry = graph_nodes(config, source)
    first = [in_entry] if in_entry else []
    if nodes[0].entry is not None:
        first.append(nodes[0].entry)
    input_shape = _input_shape(first, build, source)
    out_name = nodes[-1].name
    if config.get("class_name") in ("Functional", "Model"):
        outs = endpoints((config.get("config") or {}).get("output_layers"))
        out_name = next((n.name for n in nodes if n.name == outs[0]), out_name)
    nodes = prune(nodes, out_name)
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
        except (ValueError, TypeError, IndexError, ArithmeticError) as e:
            raise InputError(
                f"{source}: layer {spec.name!r} ({node.cls}) cannot combine its "
                f"inputs {list(node.inputs)} of shapes "
                f"{[shapes[i] for i in node.inputs]} ({e}).") from None
        if any(int(d) < 1 for d in shapes[spec.name]):
            raise InputError(
                f"{source}: layer {spec.name!r} ({node.cls}) would output shape "
                f"{shapes[spec.name]} from inputs of shapes "
                f"{[shapes[i] for i in node.inputs]}; its window, strides, "
                "cropping or target_shape do not fit its input.")
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
    from jaxconvviz.models.weights import expected_shapes

    built: list = []

    def expect(config):
        # the model first: its weights are read only at the shapes it declares
        model = convnet_from_keras_config(config, preprocessing=preprocessing,
                                          source=label)
        _, nodes, _, _, _ = graph_nodes(config, label)
        entries = [n.entry for n in nodes if n.entry is not None
                   and keras_class(n.entry) != "InputLayer"]
        groups = dict(zip((layer_name(e) for e in entries),
                          (f"layers/{g}" for g in keras3_group_names(
                              [keras_class(e) for e in entries])), strict=True))
        built[:] = [model, groups]
        return expected_shapes(model), groups

    _, weights = read_keras_archive(p, label, expect=expect)
    model, groups = built
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
