"""The convolution and dense layer kinds, and the tables of every kind.

Each layer kind is one :class:`~jaxconvviz.models.kinds.registry.LayerKind`
record (forward pass, output shape, params, Keras import and export); the
records of the convolutions (``conv``, ``depthwise_conv``,
``separable_conv``) and ``dense`` live here, next to the functions that
choose their convolution algorithm; the other families live in
:mod:`jaxconvviz.models.kinds` (pool, norm, merge, reshape, pointwise). This
module registers all built-in kinds; :data:`KINDS`, :data:`LAYER_KINDS`,
:data:`MERGE_KINDS` and :data:`CONV_KINDS` are live views of the registry.
Each kind reproduces the Keras 3 layer it comes from at inference (the
record's ``doc``).

Imports jax, flax and numpy only.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxconvviz.backend.algorithms import conv_algorithms as _conv_algorithms
from jaxconvviz.backend.algorithms import conv_fn as _conv_fn
from jaxconvviz.backend.algorithms import depthwise as _depthwise_by_backend
from jaxconvviz.models.kinds import merge, norm, pointwise, pool, reshape
from jaxconvviz.models.kinds.common import (
    ACTIVATIONS,
    keras_initializer,
    keras_ints,
    pads2,
    pair,
    window_shape,
)
from jaxconvviz.models.kinds.pool import max_pool_tiled
from jaxconvviz.models.kinds.registry import (
    CONV_KINDS,
    KINDS,
    LAYER_KINDS,
    MERGE_KINDS,
    LayerKind,
    apply_layer,
    register_layer_kind,
)
from jaxconvviz.models.kinds.registry import make_params as _vars


def conv_geometry(spec) -> tuple[tuple[int, int], str, tuple[int, int]]:
    """``(strides, padding, dilation)`` of a conv-like layer as ``lax`` takes them."""
    o = spec.opt
    return (pair(o("strides", 1)), o("padding", "same").upper(),
            pair(o("dilation", 1)))


def _bcast(v, x):
    """A per-channel (or scalar) option as an array of ``x``'s rank and dtype."""
    v = jnp.asarray(v, x.dtype)
    return v.reshape((1,) * (x.ndim - v.ndim) + v.shape) if v.ndim else v




# ---------------------------------------------------------------- per kind
def _act(spec, y):
    return ACTIVATIONS[spec.opt("activation", "linear")](y)


def _conv(net, spec, xs):
    (x,) = xs
    o = spec.opt
    strides, padding, dilation = conv_geometry(spec)
    fn = _conv_algorithms(net, _conv_fn(net))
    y = nn.Conv(
        o("features"), pair(o("kernel_size", 3)), strides=strides,
        padding=padding, kernel_dilation=dilation,
        feature_group_count=int(o("groups", 1)), use_bias=o("use_bias", True),
        dtype=net.dtype,
        conv_general_dilated=None if fn is jax.lax.conv_general_dilated else fn,
        name=spec.name,
    )(x)
    return _act(spec, y)


def _depthwise(net, spec, x, kernel):
    """Keras' depthwise conv of ``x`` by ``kernel`` ``(kh, kw, c, m)``, the
    algorithm chosen by ``net.backend`` (:func:`jaxconvviz.backend.
    algorithms.depthwise`)."""
    return _depthwise_by_backend(net, x, kernel, *conv_geometry(spec))


def _depthwise_conv(net, spec, xs):
    (x,) = xs
    o = spec.opt
    kh, kw = pair(o("kernel_size", 3))
    c, m = x.shape[-1], int(o("depth_multiplier", 1))
    specs = [("kernel", (kh, kw, c, m), "lecun")]
    if o("use_bias", True):
        specs.append(("bias", (c * m,), "zeros"))
    p = _vars(spec, *specs)
    y = _depthwise(net, spec, x, p["kernel"])
    if o("use_bias", True):
        y = y + _bcast(p["bias"], y)
    return _act(spec, y)


def _separable_conv(net, spec, xs):
    (x,) = xs
    o = spec.opt
    kh, kw = pair(o("kernel_size", 3))
    c, m, f = x.shape[-1], int(o("depth_multiplier", 1)), int(o("features"))
    specs = [("depthwise_kernel", (kh, kw, c, m), "lecun"),
             ("pointwise_kernel", (1, 1, c * m, f), "lecun")]
    if o("use_bias", True):
        specs.append(("bias", (f,), "zeros"))
    p = _vars(spec, *specs)
    y = _depthwise(net, spec, x, p["depthwise_kernel"])
    y = _conv_algorithms(net, _conv_fn(net))(
        y, p["pointwise_kernel"].astype(net.dtype), (1, 1), "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if o("use_bias", True):
        y = y + _bcast(p["bias"], y)
    return _act(spec, y)


def _dense(net, spec, xs):
    (x,) = xs
    o = spec.opt
    y = nn.Dense(o("features"), use_bias=o("use_bias", True), dtype=net.dtype,
                 name=spec.name)(x)  # on the last axis (also of (n, h, w, c))
    return _act(spec, y)


# ------------------------------------------------------- shapes and params
def _conv_window(spec):
    o = spec.opt
    return (pair(o("kernel_size", 3)), pair(o("strides", 1)),
            pair(o("dilation", 1)))


def _features(spec, c: int) -> int:
    """Output channels of a conv-family layer on ``c`` input channels."""
    if spec.kind == "depthwise_conv":
        return int(c) * int(spec.opt("depth_multiplier", 1))
    return int(spec.opt("features"))


def _conv_shape(spec, ins):
    (shp,) = ins
    k, s, d = _conv_window(spec)
    return window_shape(shp, k, s, d, spec.opt("padding", "same"),
                        _features(spec, shp[-1]))


def _dense_shape(spec, ins):
    return tuple(ins[0][:-1]) + (int(spec.opt("features")),)


def _names_kernel(spec):
    return ("kernel", "bias") if spec.opt("use_bias", True) else ("kernel",)


def _names_separable(spec):
    return ("depthwise_kernel", "pointwise_kernel") + (
        ("bias",) if spec.opt("use_bias", True) else ())


def _conv_params(spec, in_shape):
    o = spec.opt
    c = int(in_shape[-1])
    f = _features(spec, c)
    kh, kw = pair(o("kernel_size", 3))
    m = int(o("depth_multiplier", 1))
    kernel = {"conv": (kh, kw, c // int(o("groups", 1)), f),
              "depthwise_conv": (kh, kw, c, m),
              "dense": (c, f)}.get(spec.kind)
    return {"kernel": (kernel, "lecun"), "bias": ((f,), "zeros"),
            "depthwise_kernel": ((kh, kw, c, m), "lecun"),
            "pointwise_kernel": ((1, 1, c * m, f), "lecun")}


def _conv_macs(spec, in_shape, out_shape, channels):
    kh, kw = pair(spec.opt("kernel_size", 3))
    h, w = out_shape[0], out_shape[1]
    c_in = int(in_shape[-1])
    c_out = int(out_shape[-1]) if channels is None else channels
    if spec.kind == "conv":
        return h * w * kh * kw * (c_in // int(spec.opt("groups", 1))) * c_out
    if spec.kind == "depthwise_conv":
        return h * w * kh * kw * c_out
    m = int(spec.opt("depth_multiplier", 1))
    return h * w * (kh * kw * c_in * m + c_in * m * c_out)


def _dense_macs(spec, in_shape, out_shape, channels):
    c_out = int(out_shape[-1]) if channels is None else channels
    return math.prod(out_shape[:-1]) * int(in_shape[-1]) * c_out


# ------------------------------------------------------------ Keras import
def _conv_from_keras(k):
    """Conv2D, DepthwiseConv2D, SeparableConv2D -> their kinds."""
    extra = {}
    if k.kind == "conv":
        groups = k.integer("groups", 1)
        extra = {"groups": groups} if groups != 1 else {}
    else:
        extra = {"depth_multiplier": k.integer("depth_multiplier", 1)}
    if k.kind != "depthwise_conv":
        extra["features"] = k.integer("filters")
    if k.kind == "conv" and k.channels and (
            int(k.channels[-1]) % extra.get("groups", 1)
            or extra["features"] % extra.get("groups", 1)):
        raise k.error(f"has 'groups': {extra['groups']}, which must divide both its "
                      f"{k.channels[-1]} input channels and its "
                      f"{extra['features']} filters.")
    return k.layer(
        **extra,
        kernel_size=k.pair("kernel_size"),
        strides=k.pair("strides", 1),
        padding=k.padding(),
        dilation=k.pair("dilation_rate", 1),
        use_bias=k.flag("use_bias", True),
        activation=k.activation(),
    )


def _dense_from_keras(k):
    return k.layer(features=k.integer("units"),
                   use_bias=k.flag("use_bias", True),
                   activation=k.activation())


# ------------------------------------------------------------ Keras export
def _weighted_to_keras(spec) -> dict:
    return dict(activation=spec.opt("activation", "linear"),
                use_bias=bool(spec.opt("use_bias", True)),
                kernel_initializer=keras_initializer("GlorotUniform"),
                bias_initializer=keras_initializer("Zeros"),
                kernel_regularizer=None, bias_regularizer=None,
                kernel_constraint=None, bias_constraint=None)


def _conv_to_keras(spec) -> dict:
    o = spec.opt
    return dict(filters=int(o("features")), kernel_size=keras_ints(o("kernel_size", 3)),
                strides=keras_ints(o("strides", 1)), padding=o("padding", "same"),
                data_format="channels_last", dilation_rate=keras_ints(o("dilation", 1)),
                groups=int(o("groups", 1)), activity_regularizer=None,
                **_weighted_to_keras(spec))


def _window_to_keras(spec) -> dict:
    o = spec.opt
    return dict(kernel_size=keras_ints(o("kernel_size", 3)),
                strides=keras_ints(o("strides", 1)), padding=o("padding", "same"),
                data_format="channels_last", dilation_rate=keras_ints(o("dilation", 1)),
                depth_multiplier=int(o("depth_multiplier", 1)),
                activation=o("activation", "linear"),
                use_bias=bool(o("use_bias", True)),
                bias_initializer=keras_initializer("Zeros"))


def _depthwise_to_keras(spec) -> dict:
    return dict(depthwise_initializer=keras_initializer("GlorotUniform"),
                **_window_to_keras(spec))


def _separable_to_keras(spec) -> dict:
    return dict(filters=int(spec.opt("features")),
                depthwise_initializer=keras_initializer("GlorotUniform"),
                pointwise_initializer=keras_initializer("GlorotUniform"),
                **_window_to_keras(spec))


def _dense_to_keras(spec) -> dict:
    return dict(units=int(spec.opt("features")), **_weighted_to_keras(spec))


_CONV = dict(shape=_conv_shape, param_shapes=_conv_params, convolves=True,
             window=_conv_window, macs=_conv_macs, from_keras=_conv_from_keras)

#: The convolution and dense kinds' records.
RECORDS = (
    LayerKind("conv", _conv, params=_names_kernel, mac_bound=True,
              keras=("Conv2D", "Convolution2D"), keras_class="Conv2D",
              to_keras=_conv_to_keras, doc="Conv2D (groups, dilation)", **_CONV),
    LayerKind("depthwise_conv", _depthwise_conv, params=_names_kernel,
              keras=("DepthwiseConv2D",), keras_class="DepthwiseConv2D",
              to_keras=_depthwise_to_keras, doc="DepthwiseConv2D", **_CONV),
    LayerKind("separable_conv", _separable_conv, params=_names_separable,
              mac_bound=True, keras=("SeparableConv2D", "SeparableConvolution2D"),
              keras_class="SeparableConv2D", to_keras=_separable_to_keras,
              doc="SeparableConv2D", **_CONV),
    LayerKind("dense", _dense, shape=_dense_shape, params=_names_kernel,
              param_shapes=_conv_params,
              spatial=lambda spec: bool(spec.opt("spatial_dense", True)),
              macs=_dense_macs, mac_bound=True, keras=("Dense",),
              from_keras=_dense_from_keras, keras_class="Dense",
              to_keras=_dense_to_keras, doc="Dense (on the last axis)"),
)

for _family in (RECORDS, pool.RECORDS, reshape.RECORDS, norm.RECORDS,
                pointwise.RECORDS, merge.RECORDS):
    for _record in _family:
        if _record.kind not in KINDS:  # a reload keeps the registered records
            register_layer_kind(_record)


__all__ = ["ACTIVATIONS", "KINDS", "LAYER_KINDS", "CONV_KINDS", "MERGE_KINDS",
           "RECORDS", "apply_layer", "max_pool_tiled", "pair", "pads2",
           "conv_geometry"]
