"""Kinds that change the map's shape without weights: ``flatten``,
``reshape``, ``zeropad``, ``cropping`` (Keras Flatten, Reshape,
ZeroPadding2D, Cropping2D)."""

from __future__ import annotations

import math

import jax.numpy as jnp

from jaxconvviz.models.kinds.common import pads2
from jaxconvviz.models.kinds.registry import LayerKind


def _flatten(net, spec, xs):
    (x,) = xs
    return x.reshape(x.shape[0], -1)  # NHWC row-major == Keras Flatten


def _reshape(net, spec, xs):
    (x,) = xs
    return x.reshape((x.shape[0],) + tuple(spec.opt("target_shape")))


def _reshape_shape(spec, ins):
    (shp,) = ins
    target = tuple(int(t) for t in spec.opt("target_shape"))
    if -1 in target:
        known = math.prod(t for t in target if t != -1)
        target = tuple(math.prod(shp) // known if t == -1 else t for t in target)
    return target


def _zeropad(net, spec, xs):
    (x,) = xs
    (t, b), (lft, r) = pads2(spec.opt("padding", 1))
    return jnp.pad(x, ((0, 0), (t, b), (lft, r), (0, 0)))


def _cropping(net, spec, xs):
    (x,) = xs
    (t, b), (lft, r) = pads2(spec.opt("cropping", 0))
    h, w = x.shape[1], x.shape[2]
    return x[:, t:h - b, lft:w - r, :]


def _pad_shape(spec, ins):
    (shp,) = ins
    sign = 1 if spec.kind == "zeropad" else -1
    (t, b), (lf, r) = pads2(spec.opt("padding" if sign > 0 else "cropping", 0))
    return (shp[0] + sign * (t + b), shp[1] + sign * (lf + r)) + tuple(shp[2:])


def _reshape_from_keras(k):
    v = k.require("target_shape")
    ok = (isinstance(v, list | tuple) and v
          and all(isinstance(a, int) and not isinstance(a, bool)
                  and (a >= 1 or a == -1) for a in v)
          and list(v).count(-1) <= 1)
    if not ok:
        raise k.error(f"has 'target_shape': {v!r:.60}; expected a non-empty list of "
                      "ints >= 1 (at most one -1).")
    return k.layer(target_shape=tuple(int(a) for a in v))


def _pad_from_keras(k):
    key = "padding" if k.kind == "zeropad" else "cropping"
    return k.layer(**{key: k.amounts(key, 1 if k.kind == "zeropad" else 0)})


def _pad_to_keras(spec):
    key = "padding" if spec.kind == "zeropad" else "cropping"
    amounts = pads2(spec.opt(key, 1 if spec.kind == "zeropad" else 0))
    return {key: [list(a) for a in amounts], "data_format": "channels_last"}


#: The reshaping kinds' records.
RECORDS = (
    LayerKind("flatten", _flatten, shape=lambda spec, ins: (math.prod(ins[0]),),
              spatial=False, keras=("Flatten",), from_keras=lambda k: k.layer(),
              keras_class="Flatten",
              to_keras=lambda spec: {"data_format": "channels_last"},
              doc="Flatten"),
    LayerKind("reshape", _reshape, shape=_reshape_shape, spatial=False,
              keras=("Reshape",),
              from_keras=_reshape_from_keras,
              keras_class="Reshape",
              to_keras=lambda spec: {"target_shape": [
                  int(a) for a in spec.opt("target_shape")]},
              doc="Reshape"),
    LayerKind("zeropad", _zeropad, shape=_pad_shape, keras=("ZeroPadding2D",),
              from_keras=_pad_from_keras, keras_class="ZeroPadding2D",
              to_keras=_pad_to_keras, doc="ZeroPadding2D"),
    LayerKind("cropping", _cropping, shape=_pad_shape, keras=("Cropping2D",),
              from_keras=_pad_from_keras, keras_class="Cropping2D",
              to_keras=_pad_to_keras, doc="Cropping2D"),
)

__all__ = ["RECORDS"]
