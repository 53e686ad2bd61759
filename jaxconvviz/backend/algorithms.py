"""The convolution algorithms a model's layers use, as its backend chooses.

The layer implementations (:mod:`jaxconvviz.models.layers`) call these and
nothing else to pick an algorithm; each reads only ``net.backend`` (and
``net.dtype``), resolving what is still ``"auto"`` for user programs
(:func:`~jaxconvviz.backend.resolve.resolve`). The library's entry points
have already bound the model (:func:`~jaxconvviz.backend.resolve.bind`), so
there nothing is left to resolve.

Imports jax only.
"""

from __future__ import annotations

import functools

import jax

from jaxconvviz.backend.depthwise import depthwise_conv2d
from jaxconvviz.backend.matmul import (
    conv_general_dilated,
    hwio_vjp_conv,
    pointwise_conv,
)
from jaxconvviz.backend.resolve import resolve
from jaxconvviz.backend.winograd import winograd_conv


def resolved(net):
    """``net.backend`` with every algorithm choice resolved for ``net.dtype``."""
    return resolve(net.backend, dtype=net.dtype)


def conv_fn(net):
    """The base ``conv_general_dilated`` of ``net``'s convolutions:
    ``lax.conv_general_dilated`` (``Backend.conv="xla"``) or the matmul form
    (:func:`~jaxconvviz.backend.matmul.conv_general_dilated`, ``"matmul"``)."""
    if resolved(net).conv == "matmul":
        return conv_general_dilated
    return jax.lax.conv_general_dilated


def conv_algorithms(net, base):
    """``base`` (a ``conv_general_dilated``) with the algorithms ``net``'s
    backend chooses on top: 1x1 kernels as matrix products where
    ``pointwise`` is ``"dot"`` (:func:`~jaxconvviz.backend.matmul.
    pointwise_conv`), 3x3 kernels as Winograd where ``conv3x3`` is
    ``"winograd"`` or, by layer shape, ``"by_shape"``
    (:func:`~jaxconvviz.backend.winograd.winograd_conv`), over convolutions
    whose input gradient is :func:`~jaxconvviz.backend.matmul.hwio_vjp_conv`'s
    where ``conv_vjp`` is ``"custom"``. The ``"matmul"`` convolutions are
    matrix products with their own VJP already and are left alone."""
    b = resolved(net)
    if b.conv != "xla":
        return base
    fn = base
    if b.conv_vjp == "custom":
        fn = functools.partial(hwio_vjp_conv, fallback=fn)
    if b.conv3x3 != "conv":
        fn = functools.partial(winograd_conv, fallback=fn,
                               by_shape=b.conv3x3 == "by_shape")
    if b.pointwise == "dot":
        fn = functools.partial(pointwise_conv, fallback=fn)
    return fn


def depthwise(net, x, kernel, strides, padding, dilation):
    """Keras' depthwise conv: kernel ``(kh, kw, c, m)`` -> output channel
    ``c * m + j`` (the jax backend's reshape to one group per channel), by
    ``net``'s ``Backend.depthwise``: ``"slices"``
    (:func:`~jaxconvviz.backend.depthwise.depthwise_conv2d`, a sum of shifted
    slices, with its gather-form VJP where ``conv_vjp`` is ``"custom"``) or
    ``"grouped"`` (a grouped convolution by :func:`conv_fn`). The values agree
    up to float32 summation order.

    Args:
      net: the model (its ``backend`` and ``dtype``).
      x: ``(n, h, w, c)`` input.
      kernel: ``(kh, kw, c, m)``, cast to ``net.dtype``.
      strides, padding, dilation: as :func:`~jaxconvviz.models.layers.
        conv_geometry` gives them.
    """
    b = resolved(net)
    kh, kw, c, m = kernel.shape
    kernel = kernel.astype(net.dtype)
    if b.depthwise == "slices":
        return depthwise_conv2d(x, kernel, strides, padding, dilation,
                                gather_vjp=b.conv_vjp == "custom")
    return conv_fn(net)(
        x, kernel.reshape(kh, kw, 1, c * m), strides, padding,
        rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=c)


__all__ = ["conv_algorithms", "conv_fn", "depthwise", "resolved"]
