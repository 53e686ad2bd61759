"""Pooling kinds: ``maxpool``, ``avgpool`` (windowed) and the global pools
``gap``, ``gmp`` (Keras MaxPooling2D, AveragePooling2D,
GlobalAveragePooling2D, GlobalMaxPooling2D)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxconvviz.models.kinds.common import keras_ints, pair, window_shape
from jaxconvviz.models.kinds.registry import LayerKind


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
    elementwise mask that fuses (docs/design-notes.md explains why). ``x``
    may have any leading batch dimensions.
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


def _window(spec):
    k = pair(spec.opt("pool_size", 2))
    return k, pair(spec.opt("strides", k)), (1, 1)


def _pool(net, spec, xs):
    (x,) = xs
    window, strides, _ = _window(spec)
    padding = spec.opt("padding", "valid")
    if spec.kind == "maxpool":
        if strides == window and padding == "valid":
            return max_pool_tiled(x, window)  # same values, faster gradient
        return nn.max_pool(x, window, strides=strides, padding=padding.upper())
    # Keras excludes the zero padding from the average.
    return nn.avg_pool(x, window, strides=strides, padding=padding.upper(),
                       count_include_pad=False)


def _pool_shape(spec, ins):
    (shp,) = ins
    k, s, d = _window(spec)
    return window_shape(shp, k, s, d, spec.opt("padding", "valid"), shp[-1])


def _pool_from_keras(k):
    pool = k.pair("pool_size", 2)
    return k.layer(pool_size=pool, strides=k.pair("strides", pool),
                   padding=k.padding())


def _pool_to_keras(spec):
    pool, strides, _ = _window(spec)
    return dict(pool_size=list(pool), padding=spec.opt("padding", "valid"),
                strides=keras_ints(strides), data_format="channels_last")


def _global(net, spec, xs):
    (x,) = xs
    f = jnp.mean if spec.kind == "gap" else jnp.max
    return f(x, axis=(-3, -2), keepdims=bool(spec.opt("keepdims", False)))


def _global_shape(spec, ins):
    (shp,) = ins
    return (1, 1, shp[-1]) if spec.opt("keepdims", False) else (shp[-1],)


def _global_from_keras(k):
    return k.layer(keepdims=True) if k.flag("keepdims", False) else k.layer()


def _global_to_keras(spec):
    return dict(data_format="channels_last",
                keepdims=bool(spec.opt("keepdims", False)))


_KERAS_POOLS = {
    "MaxPooling2D": "maxpool", "MaxPool2D": "maxpool",
    "AveragePooling2D": "avgpool", "AvgPool2D": "avgpool",
    "GlobalAveragePooling2D": "gap", "GlobalAvgPool2D": "gap",
    "GlobalMaxPooling2D": "gmp", "GlobalMaxPool2D": "gmp",
}


def _record(kind: str, keras_class: str, **fields) -> LayerKind:
    return LayerKind(kind, keras=tuple(c for c, k in _KERAS_POOLS.items()
                                       if k == kind),
                     keras_class=keras_class, doc=keras_class, **fields)


#: The pooling kinds' records.
RECORDS = (
    _record("maxpool", "MaxPooling2D", apply=_pool, shape=_pool_shape,
            window=_window, from_keras=_pool_from_keras, to_keras=_pool_to_keras),
    _record("avgpool", "AveragePooling2D", apply=_pool, shape=_pool_shape,
            window=_window, from_keras=_pool_from_keras, to_keras=_pool_to_keras),
    _record("gap", "GlobalAveragePooling2D", apply=_global, shape=_global_shape,
            spatial=False, from_keras=_global_from_keras,
            to_keras=_global_to_keras),
    _record("gmp", "GlobalMaxPooling2D", apply=_global, shape=_global_shape,
            spatial=False, from_keras=_global_from_keras,
            to_keras=_global_to_keras),
)

__all__ = ["RECORDS", "max_pool_tiled"]
