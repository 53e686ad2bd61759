"""Helpers the layer-kind records share: activations, window geometry,
per-channel broadcasting and the Keras config spellings of export.

Activations follow Keras 3's definitions (``keras.activations``): ``gelu``
is the exact erf form (``approximate=False``, the Activation layer's
default; ``gelu_approximate`` the tanh form), ``hard_sigmoid`` is
``relu6(x + 3) / 6`` and ``hard_swish``/``hard_silu`` is ``x *
hard_sigmoid(x)``.

Imports jax and numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

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


def activate(spec, y):
    """``y`` through the layer's ``activation`` option (``"linear"`` if unset)."""
    return ACTIVATIONS[spec.opt("activation", "linear")](y)


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


def conv_out(n: int, k: int, s: int, d: int, padding: str) -> int:
    """Output length of a conv/pool along one axis (Keras/XLA conventions).

    ``"same"``: ``ceil(n / s)``; ``"valid"``: ``(n - (k - 1) d - 1) // s + 1``.
    """
    if padding == "same":
        return math.ceil(n / s)
    return (n - (k - 1) * d - 1) // s + 1


def window_shape(shp: tuple[int, ...], k, s, d, padding: str, c: int
                 ) -> tuple[int, int, int]:
    """``(h', w', c)`` of a windowed layer (conv or pool) on an ``(h, w, ...)``
    input: window ``k``, strides ``s``, dilation ``d`` (pairs)."""
    h = conv_out(shp[0], k[0], s[0], d[0], padding)
    w = conv_out(shp[1], k[1], s[1], d[1], padding)
    return (h, w, int(c))


def bcast(v, x):
    """A per-channel (or scalar) value as an array of ``x``'s rank and dtype."""
    v = jnp.asarray(v, x.dtype)
    return v.reshape((1,) * (x.ndim - v.ndim) + v.shape) if v.ndim else v


def same_shape(spec, ins):
    """Output shape of an elementwise kind: its (first) input's."""
    return ins[0]


def broadcast_shape(spec, ins):
    """Output shape of an elementwise merge: the inputs' broadcast shape."""
    return tuple(int(a) for a in np.broadcast_shapes(*ins))


# ------------------------------------------------- Keras config spellings
def keras_initializer(cls: str) -> dict:
    """A Keras 3 initializer config (``"GlorotUniform"``, ``"Zeros"``, ...)."""
    return {"module": "keras.initializers", "class_name": cls,
            "config": {} if cls in ("Zeros", "Ones") else {"seed": None},
            "registered_name": None}


def keras_ints(v) -> list[int]:
    """A size option as Keras writes it: ``3`` -> ``[3, 3]``."""
    return [int(v), int(v)] if isinstance(v, int | np.integer) else [int(a) for a in v]


def keras_floats(v):
    """A scalar or per-channel float option as Keras writes it."""
    return [float(a) for a in v] if isinstance(v, tuple | list) else float(v)


__all__ = ["ACTIVATIONS", "activate", "pair", "pads2", "conv_out", "window_shape",
           "bcast", "same_shape", "broadcast_shape", "keras_initializer",
           "keras_ints", "keras_floats"]
