"""VGG16 as a :class:`~jaxconvviz.models.convnet.ConvNet` preset (:func:`VGG16`,
:func:`tiny_vgg16`), inferred from params (:func:`vgg_from_params`), and
the "model, or the VGG16 the params belong to" entry points
(:func:`resolve_model`, :func:`forward`).

Imports jax and flax only.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from jaxconvviz._types import Params
from jaxconvviz.errors import InputError, InputTypeError
from jaxconvviz.models.convnet import ConvNet, Layer

VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_DEPTHS = (2, 2, 3, 3, 3)
TINY_WIDTHS = (4, 4, 8, 8, 8)


@functools.lru_cache(maxsize=64)
def _vgg_layers(widths, depths, include_top, fc_width, num_classes):
    # cached: the same tuple object for the same preset, so the VGG16 that
    # jcv.cam(params, x) infers from params at every call hits the graph memo
    layers: list[Layer] = []
    for b, (width, depth) in enumerate(zip(widths, depths, strict=True), start=1):
        for i in range(1, depth + 1):
            layers.append(Layer.make(f"block{b}_conv{i}", "conv", features=int(width),
                                     kernel_size=3, padding="same",
                                     activation="relu"))
        layers.append(Layer.make(f"block{b}_pool", "maxpool", pool_size=2,
                                 strides=2, padding="valid"))
    if include_top:
        layers += [
            Layer.make("flatten", "flatten"),
            Layer.make("fc1", "dense", features=int(fc_width), activation="relu"),
            Layer.make("fc2", "dense", features=int(fc_width), activation="relu"),
            Layer.make("predictions", "dense", features=int(num_classes),
                       activation="softmax"),
        ]
    return tuple(layers)


def VGG16(  # noqa: N802 -- named as keras.applications.VGG16
    include_top: bool = True,
    *,
    block_widths: tuple[int, ...] = VGG16_WIDTHS,
    block_depths: tuple[int, ...] = VGG16_DEPTHS,
    fc_width: int = 4096,
    num_classes: int = 1000,
    input_size: int = 224,
    dtype: Any = jnp.float32,
) -> ConvNet:
    """Keras' VGG16 as a :class:`ConvNet`, layer names and layouts identical.

    13 ``same`` 3x3 ReLU convs in five blocks (64, 128, 256, 512, 512 wide),
    each block ending in a 2x2/2 max pool; with ``include_top`` also
    ``flatten``, ``fc1``/``fc2`` (4096, ReLU) and ``predictions`` (1000,
    softmax). Input: caffe BGR (see :func:`~jaxconvviz.preprocess_input`),
    224x224 with the top, any size >= 32 without.

    The keyword arguments build smaller presets of the same class (see
    :func:`tiny_vgg16`) with the same layer names.
    """
    if len(block_widths) != 5 or len(block_depths) != 5:
        raise InputError(
            f"block_widths and block_depths must have 5 entries; got "
            f"{block_widths!r} and {block_depths!r}."
        )
    return ConvNet(
        layers=_vgg_layers(tuple(map(int, block_widths)),
                           tuple(map(int, block_depths)), bool(include_top),
                           int(fc_width), int(num_classes)),
        input_shape=(input_size, input_size, 3) if include_top else (None, None, 3),
        preprocessing="caffe",
        dtype=dtype,
        name_="vgg16",
    )


def tiny_vgg16(include_top: bool = True, *, num_classes: int = 1000,
               dtype: Any = jnp.float32) -> ConvNet:
    """A tiny preset of VGG16 for fast tests: same 22 layer names, widths
    (4, 4, 8, 8, 8), ``fc_width=16``, 32x32 input with the top."""
    return VGG16(include_top, block_widths=TINY_WIDTHS, fc_width=16,
                 num_classes=num_classes, input_size=32, dtype=dtype)


_FULL = VGG16(include_top=True)
#: Keras VGG16 layer names in order (22 with the top).
LAYER_NAMES: tuple[str, ...] = _FULL.layer_names
#: The 13 conv layer names in order.
CONV_LAYERS: tuple[str, ...] = _FULL.conv_layers


def vgg_from_params(params: Params, *, dtype: Any = jnp.float32) -> ConvNet:
    """Infer the VGG16 preset (full or tiny, with or without top) from params."""
    if not isinstance(params, Mapping) or "block1_conv1" not in params:
        keys = sorted(params)[:8] if isinstance(params, Mapping) else type(params)
        raise InputError(
            "params do not look like VGG16 params (no 'block1_conv1'); pass "
            f"model= for other networks (e.g. from jcv.load_keras_model). Got "
            f"keys {keys}."
        )
    try:
        widths = tuple(int(params[f"block{b}_conv1"]["kernel"].shape[-1])
                       for b in range(1, 6))
        depths = tuple(
            sum(1 for k in params if re.fullmatch(rf"block{b}_conv\d+", k))
            for b in range(1, 6)
        )
    except KeyError as e:
        raise InputError(f"VGG16 params are missing layer {e.args[0]!r}.") from None
    include_top = "predictions" in params
    if include_top:
        fc_in, fc_width = params["fc1"]["kernel"].shape
        num_classes = int(params["predictions"]["kernel"].shape[-1])
        side = math.isqrt(int(fc_in) // widths[-1])
        input_size = side * 32
    else:
        fc_width, num_classes, input_size = 4096, 1000, 224
    return VGG16(include_top, block_widths=widths, block_depths=depths,
                 fc_width=int(fc_width), num_classes=num_classes,
                 input_size=input_size, dtype=dtype)


def resolve_model(params: Params, *, model: ConvNet | None = None) -> ConvNet:
    """``model`` if given, else the VGG16 preset the params belong to."""
    if model is None:
        return vgg_from_params(params)
    if not isinstance(model, ConvNet):
        raise InputTypeError(
            f"model must be a jaxconvviz ConvNet (from jcv.VGG16 or "
            f"jcv.load_keras_model); got {type(model).__name__}."
        )
    return model


def forward(params: Params, x, *, start: str | None = None, stop: str | None = None,
            model: ConvNet | None = None):
    """Pure forward pass of VGG16 (or ``model``) from ``start`` to ``stop``.

    Args:
      params: ``{layer_name: {"kernel", "bias"}}``.
      x: caffe-BGR images ``(n, h, w, 3)`` when ``start`` is None (see
        :func:`~jaxconvviz.preprocess_input`), else the activation of ``start``.
      start: run the layers strictly after this one (None: from the input).
      stop: up to and including this one (None: to the last layer).
      model: the network; None infers the VGG16 preset from ``params``.

    Returns:
      The activation of ``stop``: ``(n, h', w', c)`` for spatial layers,
      ``(n, units)`` after ``flatten``; ``predictions`` gives probabilities.
    """
    return resolve_model(params, model=model).forward(params, x, start=start, stop=stop)


__all__ = ["VGG16", "tiny_vgg16", "LAYER_NAMES", "CONV_LAYERS", "forward",
           "resolve_model", "vgg_from_params"]
