"""Per-kind layer implementations of :class:`~jaxconvviz.models.convnet.ConvNet`.

One table, :data:`KINDS`, maps a layer kind (``"conv"``, ``"add"``, ...) to
a :class:`Kind`: how the layer computes its output from its inputs (inside
the ConvNet's ``nn.compact`` call, so Flax params are created under the
layer's Keras name), how many inputs it takes, and the names of its params in
Keras weight order (file order). Each kind reproduces the Keras 3 layer it
comes from at inference (the Keras class is noted next to each entry);
:mod:`jaxconvviz.models.shapes` holds the matching analytic output shapes.

Activations follow Keras 3's definitions (``keras.activations``): ``gelu``
is the exact erf form (``approximate=False``, the Activation layer's
default; ``gelu_approximate`` the tanh form), ``hard_sigmoid`` is
``relu6(x + 3) / 6`` and ``hard_swish``/``hard_silu`` is ``x *
hard_sigmoid(x)``.

Imports jax, flax and numpy only.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxconvviz.backend.algorithms import conv_algorithms as _conv_algorithms
from jaxconvviz.backend.algorithms import conv_fn as _conv_fn
from jaxconvviz.backend.algorithms import depthwise as _depthwise_by_backend

ACTIVATIONS: dict[str, Callable] = {
    "linear": lambda x: x,
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "sigmoid": jax.nn.sigmoid,
    "hard_sigmoid": jax.nn.hard_sigmoid,  # relu6(x + 3) / 6, as Keras 3
    "hard_swish": jax.nn.hard_silu,  # x * relu6(x + 3) / 6
    "hard_silu": jax.nn.hard_silu,
    "tanh": jnp.tanh,
    "softmax": lambda x: jax.nn.softmax(x, axis=-1),
    "elu": jax.nn.elu,
    "selu": jax.nn.selu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_approximate": lambda x: jax.nn.gelu(x, approximate=True),
    "swish": jax.nn.silu,
    "silu": jax.nn.silu,
    "softplus": jax.nn.softplus,
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.2),
}


def pair(v) -> tuple[int, int]:
    """``3`` -> ``(3, 3)``; ``(3, 1)`` -> ``(3, 1)``."""
    return (int(v), int(v)) if isinstance(v, int) else tuple(int(a) for a in v)


def pads2(v) -> tuple[tuple[int, int], tuple[int, int]]:
    """Keras ZeroPadding2D/Cropping2D amounts -> ``((top, bottom), (left, right))``."""
    if isinstance(v, int):
        return ((v, v), (v, v))
    a, b = v
    a = (a, a) if isinstance(a, int) else tuple(a)
    b = (b, b) if isinstance(b, int) else tuple(b)
    return ((int(a[0]), int(a[1])), (int(b[0]), int(b[1])))


def conv_geometry(spec) -> tuple[tuple[int, int], str, tuple[int, int]]:
    """``(strides, padding, dilation)`` of a conv-like layer as ``lax`` takes them."""
    o = spec.opt
    return (pair(o("strides", 1)), o("padding", "same").upper(),
            pair(o("dilation", 1)))


def _bcast(v, x):
    """A per-channel (or scalar) option as an array of ``x``'s rank and dtype."""
    v = jnp.asarray(v, x.dtype)
    return v.reshape((1,) * (x.ndim - v.ndim) + v.shape) if v.ndim else v


_INITS = {
    "zeros": nn.initializers.zeros,
    "ones": nn.initializers.ones,
    "lecun": nn.initializers.lecun_normal(),
}


class _Vars(nn.Module):
    """Creates a layer's params: ``specs`` = ``((name, shape, init), ...)``."""

    specs: tuple[tuple[str, tuple[int, ...], str], ...]

    @nn.compact
    def __call__(self):
        return {n: self.param(n, _INITS[i], s) for n, s, i in self.specs}


def _vars(spec, *specs):
    return _Vars(tuple(specs), name=spec.name)()


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


def _tiles(x, k: tuple[int, int]):
    *b, h, w, c = x.shape
    x = x[..., : h // k[0] * k[0], : w // k[1] * k[1], :]
    return x.reshape(*b, h // k[0], k[0], w // k[1], k[1], c)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def max_pool_tiled(x, k: tuple[int, int]):
    """Max pooling with window == strides ``k``, 'valid' padding, NHWC.

    The same values as ``flax.linen.max_pool`` (a reshape and a max) and the
    same derivatives: each window's derivative flows through its first
    maximum in row-major order, as XLA's select-and-scatter does, but as an
    elementwise mask that fuses (select-and-scatter is a large share of a
    VGG16 ascent step on GPU: docs/design-notes.md). ``x`` may have any
    leading batch dimensions.
    """
    return _tiles(x, k).max(axis=(-4, -2))


@max_pool_tiled.defjvp
def _max_pool_tiled_jvp(k, primals, tangents):
    (x,), (t,) = primals, tangents
    xt = _tiles(x, k)
    y = xt.max(axis=(-4, -2))
    eq = xt == y[..., :, None, :, None, :]
    e = eq.astype(jnp.int32)
    row = e.sum(axis=-2, keepdims=True)
    before = jnp.cumsum(row, axis=-4) - row  # maxima in earlier window rows
    first = eq & (before + jnp.cumsum(e, axis=-2) == 1)
    dt = jnp.where(first, _tiles(t, k), jnp.zeros((), t.dtype)).sum(axis=(-4, -2))
    return y, dt


def _pool(net, spec, xs):
    (x,) = xs
    o = spec.opt
    window = pair(o("pool_size", 2))
    strides = pair(o("strides", window))
    padding = o("padding", "valid")
    if spec.kind == "maxpool":
        if strides == window and padding == "valid":
            return max_pool_tiled(x, window)  # same values, faster gradient
        return nn.max_pool(x, window, strides=strides, padding=padding.upper())
    # Keras excludes the zero padding from the average.
    return nn.avg_pool(x, window, strides=strides, padding=padding.upper(),
                       count_include_pad=False)


def _global(net, spec, xs):
    (x,) = xs
    f = jnp.mean if spec.kind == "gap" else jnp.max
    return f(x, axis=(-3, -2), keepdims=bool(spec.opt("keepdims", False)))


def _flatten(net, spec, xs):
    (x,) = xs
    return x.reshape(x.shape[0], -1)  # NHWC row-major == Keras Flatten


def _reshape(net, spec, xs):
    (x,) = xs
    return x.reshape((x.shape[0],) + tuple(spec.opt("target_shape")))


def _identity(net, spec, xs):
    (x,) = xs
    return x


def _affine_norm(x, mean, var, p, eps):
    """``(x - mean) / sqrt(var + eps) * gamma + beta`` in Keras 3's order of
    operations (``x * inv + (beta - mean * inv)``, ``inv = rsqrt(var + eps) *
    gamma``): the same rounding as Keras, so deep graphs stay within float32
    ulps of it instead of drifting by ~1e-5 relative over 50 layers."""
    inv = jax.lax.rsqrt(var + jnp.asarray(eps, x.dtype))
    if "gamma" in p:
        inv = inv * p["gamma"]
    res = -mean * inv
    if "beta" in p:
        res = res + p["beta"]
    return x * inv + res


def _batchnorm(net, spec, xs):
    (x,) = xs
    o = spec.opt
    f = (x.shape[-1],)
    specs = ([("gamma", f, "ones")] if o("scale", True) else []) + (
        [("beta", f, "zeros")] if o("center", True) else []) + [
        ("moving_mean", f, "zeros"), ("moving_variance", f, "ones")]
    p = {k: _bcast(v.astype(x.dtype), x) for k, v in _vars(spec, *specs).items()}
    return _affine_norm(x, p["moving_mean"], p["moving_variance"], p,
                        o("epsilon", 1e-3))


def _layernorm(net, spec, xs):
    """Keras LayerNormalization over the last axis (``jnp.var`` moments)."""
    (x,) = xs
    o = spec.opt
    f = (x.shape[-1],)
    specs = ([("gamma", f, "ones")] if o("scale", True) else []) + (
        [("beta", f, "zeros")] if o("center", True) else [])
    p = {k: _bcast(v.astype(x.dtype), x) for k, v in _vars(spec, *specs).items()}
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.var(x, axis=-1, keepdims=True)
    return _affine_norm(x, mean, var, p, o("epsilon", 1e-3))


def _normalization(net, spec, xs):
    """Keras Normalization: ``(x - mean) / max(sqrt(variance), 1e-7)``.

    ``mean``/``variance`` are options when the Keras config fixes them
    (ConvNeXt's stem), else params (adapted: ``mean``, ``variance``,
    ``count``, as EfficientNet stores them)."""
    (x,) = xs
    o = spec.opt
    if o("mean") is not None:
        mean, var = _bcast(o("mean"), x), _bcast(o("variance"), x)
    else:
        f = (x.shape[-1],)
        p = _vars(spec, ("mean", f, "zeros"), ("variance", f, "ones"),
                  ("count", (), "zeros"))
        mean, var = _bcast(p["mean"], x), _bcast(p["variance"], x)
    return (x - mean) / jnp.maximum(jnp.sqrt(var), jnp.asarray(1e-7, x.dtype))


def _layerscale(net, spec, xs):
    (x,) = xs
    p = _vars(spec, ("gamma", (x.shape[-1],), "ones"))
    return x * _bcast(p["gamma"], x)


def _activation(net, spec, xs):
    (x,) = xs
    return _act(spec, x)


def _rescaling(net, spec, xs):
    (x,) = xs
    o = spec.opt
    return x * _bcast(o("scale", 1.0), x) + _bcast(o("offset", 0.0), x)


def _zeropad(net, spec, xs):
    (x,) = xs
    (t, b), (lft, r) = pads2(spec.opt("padding", 1))
    return jnp.pad(x, ((0, 0), (t, b), (lft, r), (0, 0)))


def _cropping(net, spec, xs):
    (x,) = xs
    (t, b), (lft, r) = pads2(spec.opt("cropping", 0))
    h, w = x.shape[1], x.shape[2]
    return x[:, t:h - b, lft:w - r, :]


def _merge(fn):
    def apply(net, spec, xs):
        y = xs[0]
        for x in xs[1:]:
            y = fn(y, x)
        return y
    return apply


def _average(net, spec, xs):
    return _merge(jnp.add)(net, spec, xs) / jnp.asarray(len(xs), xs[0].dtype)


def _concatenate(net, spec, xs):
    return jnp.concatenate(xs, axis=int(spec.opt("axis", -1)))


# ------------------------------------------------------------------ table
def _names_conv(spec):
    return ("kernel", "bias") if spec.opt("use_bias", True) else ("kernel",)


def _names_separable(spec):
    return ("depthwise_kernel", "pointwise_kernel") + (
        ("bias",) if spec.opt("use_bias", True) else ())


def _names_norm(spec):
    return ((("gamma",) if spec.opt("scale", True) else ())
            + (("beta",) if spec.opt("center", True) else ()))


def _names_batchnorm(spec):
    return _names_norm(spec) + ("moving_mean", "moving_variance")


def _names_normalization(spec):
    return () if spec.opt("mean") is not None else ("mean", "variance", "count")


def _none(spec):
    return ()


@dataclasses.dataclass(frozen=True)
class Kind:
    """How one layer kind computes and what it stores.

    Attributes:
      apply: ``apply(net, spec, xs) -> y``; ``xs`` the tuple of input arrays
        (batch first), called inside the ConvNet's compact ``__call__``.
      params: ``params(spec) -> names`` in Keras weight (file) order.
      keras: the Keras 3 class(es) it reproduces (documentation).
      merge: takes two or more inputs.
    """

    apply: Callable[[Any, Any, tuple], Any]
    params: Callable[[Any], tuple[str, ...]] = _none
    keras: str = ""
    merge: bool = False


#: Every layer kind, its implementation and its params.
KINDS: dict[str, Kind] = {
    "conv": Kind(_conv, _names_conv, "Conv2D (groups, dilation)"),
    "depthwise_conv": Kind(_depthwise_conv, _names_conv, "DepthwiseConv2D"),
    "separable_conv": Kind(_separable_conv, _names_separable, "SeparableConv2D"),
    "dense": Kind(_dense, _names_conv, "Dense (on the last axis)"),
    "maxpool": Kind(_pool, keras="MaxPooling2D"),
    "avgpool": Kind(_pool, keras="AveragePooling2D"),
    "gap": Kind(_global, keras="GlobalAveragePooling2D"),
    "gmp": Kind(_global, keras="GlobalMaxPooling2D"),
    "flatten": Kind(_flatten, keras="Flatten"),
    "reshape": Kind(_reshape, keras="Reshape"),
    "dropout": Kind(_identity, keras="Dropout (identity at inference)"),
    "identity": Kind(_identity, keras="Identity; a nested model's output"),
    "batchnorm": Kind(_batchnorm, _names_batchnorm, "BatchNormalization"),
    "layernorm": Kind(_layernorm, _names_norm, "LayerNormalization"),
    "normalization": Kind(_normalization, _names_normalization, "Normalization"),
    "layerscale": Kind(_layerscale, lambda s: ("gamma",), "LayerScale (ConvNeXt)"),
    "activation": Kind(_activation, keras="Activation / ReLU"),
    "rescaling": Kind(_rescaling, keras="Rescaling"),
    "zeropad": Kind(_zeropad, keras="ZeroPadding2D"),
    "cropping": Kind(_cropping, keras="Cropping2D"),
    "add": Kind(_merge(jnp.add), keras="Add", merge=True),
    "subtract": Kind(_merge(jnp.subtract), keras="Subtract", merge=True),
    "multiply": Kind(_merge(jnp.multiply), keras="Multiply", merge=True),
    "maximum": Kind(_merge(jnp.maximum), keras="Maximum", merge=True),
    "average": Kind(_average, keras="Average", merge=True),
    "concatenate": Kind(_concatenate, keras="Concatenate", merge=True),
}

#: Layer kinds a :class:`~jaxconvviz.models.convnet.Layer` may have.
LAYER_KINDS: tuple[str, ...] = tuple(KINDS)
#: Kinds that convolve (their outputs are filter maps; ``conv_layers``).
CONV_KINDS = ("conv", "depthwise_conv", "separable_conv")
#: Kinds that take two or more inputs.
MERGE_KINDS = tuple(k for k, v in KINDS.items() if v.merge)


def apply_layer(net, spec, xs: tuple):
    """Run one layer on its inputs (inside ``net``'s compact call)."""
    return KINDS[spec.kind].apply(net, spec, xs)


__all__ = ["ACTIVATIONS", "KINDS", "Kind", "LAYER_KINDS", "CONV_KINDS",
           "MERGE_KINDS", "apply_layer", "max_pool_tiled", "pair", "pads2",
           "conv_geometry"]
