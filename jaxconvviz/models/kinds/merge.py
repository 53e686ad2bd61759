"""Merge kinds (two or more inputs): ``add``, ``subtract``, ``multiply``,
``maximum``, ``average`` (elementwise, broadcasting) and ``concatenate``
(on the channel axis): Keras Add, Subtract, Multiply, Maximum, Average,
Concatenate."""

from __future__ import annotations

import jax.numpy as jnp

from jaxconvviz.models.kinds.common import broadcast_shape
from jaxconvviz.models.kinds.registry import LayerKind


def _fold(fn):
    def apply(net, spec, xs):
        y = xs[0]
        for x in xs[1:]:
            y = fn(y, x)
        return y
    return apply


def _average(net, spec, xs):
    return _fold(jnp.add)(net, spec, xs) / jnp.asarray(len(xs), xs[0].dtype)


def _concatenate(net, spec, xs):
    return jnp.concatenate(xs, axis=int(spec.opt("axis", -1)))


def _concat_shape(spec, ins):
    rank = len(ins[0])
    axis = int(spec.opt("axis", -1))
    axis = axis - 1 if axis > 0 else axis + rank  # Keras axes count the batch
    out = list(ins[0])
    out[axis] = sum(s[axis] for s in ins)
    return tuple(out)


def _concat_from_keras(k):
    axis = int(k.get("axis", -1))
    if axis not in (-1, len(k.channels)):
        raise k.error(f"concatenates axis {axis}; only the channel axis (-1) is "
                      "supported.")
    return k.layer(axis=-1)


def _elementwise(kind: str, cls: str, apply) -> LayerKind:
    return LayerKind(kind, apply, shape=broadcast_shape, merge=True, keras=(cls,),
                     from_keras=lambda k: k.layer(), doc=cls)


#: The merge kinds' records.
RECORDS = (
    _elementwise("add", "Add", _fold(jnp.add)),
    _elementwise("subtract", "Subtract", _fold(jnp.subtract)),
    _elementwise("multiply", "Multiply", _fold(jnp.multiply)),
    _elementwise("maximum", "Maximum", _fold(jnp.maximum)),
    _elementwise("average", "Average", _average),
    LayerKind("concatenate", _concatenate, shape=_concat_shape, merge=True,
              keras=("Concatenate",), from_keras=_concat_from_keras,
              doc="Concatenate (channel axis)"),
)

__all__ = ["RECORDS"]
