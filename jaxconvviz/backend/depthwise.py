"""Depthwise convolutions as sums of shifted, strided slices
(:func:`depthwise_conv2d`, the ``"slices"`` choice of ``Backend.depthwise``),
with an optional gather-form custom VJP.

Imports jax only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxconvviz.errors import InputError


def _same_pads(size: int, k_eff: int, stride: int) -> tuple[tuple[int, int], int]:
    """TensorFlow/XLA ``"SAME"`` padding ``(lo, hi)`` of one axis (the extra
    pixel at the end) and the output size."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k_eff - size, 0)
    return (total // 2, total - total // 2), out


def depthwise_conv2d(x, kernel, strides=(1, 1), padding: str = "SAME",
                     dilation=(1, 1), *, gather_vjp: bool = False):
    """Keras' depthwise convolution as a sum of shifted, strided slices.

    Output channel ``c * m + j`` is input channel ``c`` correlated with
    ``kernel[:, :, c, j]``, as Keras' ``DepthwiseConv2D`` (and the depthwise
    half of ``SeparableConv2D``) computes it. Each of the ``kh * kw`` kernel
    taps is a strided slice of the padded input times a per-channel weight;
    XLA fuses the whole sum into one elementwise loop.

    With ``gather_vjp`` its derivative is a custom VJP in gather form: the
    input gradient is the same kind of tap sum, over the cotangent spread to
    the strides and padded, with the flipped kernel. JAX's own transpose (one
    padded copy of the cotangent per tap, summed) was fast alone but, fused
    with the neighbouring BatchNorm and ReLU6 gradients inside a whole
    network, XLA:CPU made it into loops up to 14 ns per element: MobileNetV2
    saliency for 2 images at 224 px went from 188 to 69 ms and 10 ascent
    steps of 4 filters at 128 px from 1.04 to 0.45 s (2-core CPU). Forward
    mode (``jax.jvp``) is not defined for the custom VJP, so it is off by
    default; the library's gradient programs turn it on
    (``Backend.conv_vjp="custom"``, :func:`jaxconvviz.backend.bind`).

    Why not ``lax.conv_general_dilated(..., feature_group_count=c)``: on
    XLA:CPU that grouped convolution runs 20-40x slower than this sum, and its
    input gradient slower still (a 3x3 depthwise layer of MobileNetV2 at
    12 x 32 x 32 x 144: 79 ms forward and 156 ms with the input gradient, against
    3.4 and 7.0 ms here; ``docs/design-notes.md``). Values equal the grouped
    convolution up to float32 summation order. Low-precision inputs are
    accumulated in float32 and cast back.

    Args:
      x: ``(n, h, w, c)`` input.
      kernel: ``(kh, kw, c, m)`` depthwise kernel (``m`` = depth multiplier).
      strides, dilation: ``(sh, sw)`` and ``(dh, dw)``.
      padding: ``"SAME"`` or ``"VALID"`` (Keras' two; case-insensitive).
      gather_vjp: the custom gather-form VJP (reverse mode only) instead of
        JAX's transpose.

    Returns:
      ``(n, h', w', c * m)`` in ``x``'s dtype.
    """
    kh, kw, c, m = kernel.shape
    if x.shape[-1] != c:
        raise InputError(f"kernel must have {x.shape[-1]} input channels (x's "
                         f"last axis); got kernel of shape {tuple(kernel.shape)}.")
    (sh, sw), (dh, dw) = tuple(strides), tuple(dilation)
    n, h, w, _ = x.shape
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    pad = str(padding).upper()
    if pad == "SAME":
        ph, oh = _same_pads(h, eh, sh)
        pw, ow = _same_pads(w, ew, sw)
    elif pad == "VALID":
        ph, pw = (0, 0), (0, 0)
        oh, ow = (h - eh) // sh + 1, (w - ew) // sw + 1
    else:
        raise InputError(f"padding must be 'SAME' or 'VALID'; got {padding!r}.")
    acc = jnp.promote_types(x.dtype, jnp.float32)
    if m > 1:
        x = jnp.repeat(x, m, axis=-1)  # channel c * m + j reads input channel c
    xp = jnp.pad(x, ((0, 0), ph, pw, (0, 0))).astype(acc)
    wk = kernel.reshape(kh, kw, 1, 1, 1, c * m).astype(acc)
    taps = _taps if gather_vjp else _taps_sum
    return taps(xp, wk, (sh, sw), (dh, dw), (oh, ow)).astype(x.dtype)


def _taps_sum(xp, wk, strides, dilation, out_hw):
    """``sum_ij slice_ij(xp) * wk[i, j]``: the depthwise correlation of an
    already padded input ``xp`` ``(n, H, W, c)`` with ``wk`` ``(kh, kw, 1, 1,
    1, c)``."""
    (sh, sw), (dh, dw), (oh, ow) = strides, dilation, out_hw
    kh, kw = wk.shape[:2]
    out = None
    for i in range(kh):
        for j in range(kw):
            tap = jax.lax.slice(
                xp, (0, i * dh, j * dw, 0),
                (xp.shape[0], i * dh + (oh - 1) * sh + 1,
                 j * dw + (ow - 1) * sw + 1, xp.shape[3]),
                (1, sh, sw, 1)) * wk[i, j]
            out = tap if out is None else out + tap
    return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _taps(xp, wk, strides, dilation, out_hw):
    return _taps_sum(xp, wk, strides, dilation, out_hw)


def _taps_fwd(xp, wk, strides, dilation, out_hw):
    return _taps_sum(xp, wk, strides, dilation, out_hw), (xp, wk)


def _taps_bwd(strides, dilation, out_hw, res, g):
    """The input gradient in gather form: the cotangent, spread to the
    strides (interior zeros) and padded by the kernel's reach, correlated
    with the flipped kernel -- the same kind of tap sum as the forward. JAX's
    own transpose is scatter form (one padded copy of ``g`` per tap, summed),
    which XLA:CPU fused into loops 10-40x slower inside whole networks."""
    xp, wk = res
    (sh, sw), (dh, dw), (oh, ow) = strides, dilation, out_hw
    kh, kw = wk.shape[:2]
    _, hp, wp, _ = xp.shape
    hd, wd = (oh - 1) * sh + 1, (ow - 1) * sw + 1
    zero = jnp.zeros((), g.dtype)
    gp = jax.lax.pad(g, zero, ((0, 0, 0),
                               ((kh - 1) * dh, hp - hd, sh - 1),
                               ((kw - 1) * dw, wp - wd, sw - 1),
                               (0, 0, 0)))
    dxp = _taps_sum(gp, jnp.flip(wk, (0, 1)), (1, 1), (dh, dw), (hp, wp))
    # the kernel gradient (removed by XLA when unused, as in ascent)
    dwk = jnp.stack([jnp.stack([
        (jax.lax.slice(xp, (0, i * dh, j * dw, 0),
                       (xp.shape[0], i * dh + hd, j * dw + wd, xp.shape[3]),
                       (1, sh, sw, 1)) * g).sum(axis=(0, 1, 2), keepdims=True)
        for j in range(kw)]) for i in range(kh)])
    return dxp, dwk


_taps.defvjp(_taps_fwd, _taps_bwd)


__all__ = ["depthwise_conv2d"]
