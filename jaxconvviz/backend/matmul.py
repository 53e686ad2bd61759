"""Convolutions as matrix products for XLA:CPU: the general stride-1 form
(:func:`conv_general_dilated`, ``Backend.conv="matmul"``), 1x1 kernels
(:func:`pointwise_conv`, ``Backend.pointwise="dot"``) and the custom input
gradient of ordinary convolutions (:func:`hwio_vjp_conv`,
``Backend.conv_vjp="custom"``). Each is a drop-in ``conv_general_dilated``.

Why this exists: on XLA:CPU a stride-1 convolution lowered as
``lax.conv_general_dilated`` runs at about 95 GFLOP/s on this project's
2-core AVX-512 machine, and its input gradient is slower still (XLA's
backward-input convolution), while PyTorch's oneDNN convolutions reach about
190 GFLOP/s. XLA:CPU's *dot*, on CPUs with AVX512-BF16, runs bfloat16
operands with a float32 accumulator at 300-360 GFLOP/s (YNNPACK), a speed
XLA's bf16 convolution never reaches (it is no faster than the float32 one).
In float32 the dot (140-190 GFLOP/s) does not pay for the im2col copies: the
float32 products were slower than XLA's convolution in a full VGG16 ascent
step, which is why ``Backend.conv="auto"`` uses them for bfloat16 only.

:func:`conv_general_dilated` has ``lax.conv_general_dilated``'s signature
(``nn.Conv(conv_general_dilated=...)`` takes it) and computes a stride-1,
undilated, ungrouped NHWC/HWIO convolution as ``kh`` matrix products: the
``kw`` horizontal shifts of the padded input are concatenated along channels
(a "row im2col", ``kw`` times the input rather than full im2col's
``kh * kw``), each kernel row is one ``(n*h'*w', kw*c) @ (kw*c, k)`` product
accumulated in float32, and the sum is cast back to the input dtype.

Its derivative is a custom VJP: the input gradient of a stride-1
convolution is the same kind of convolution of the output cotangent with
the spatially flipped, in/out-transposed kernel, so the backward pass runs
the same fast products (JAX's own transpose of the forward would put float32
cotangents against bf16 operands and lose the bf16 speed). The kernel
gradient is one ``cols^T @ dy`` product per kernel row; XLA removes it when
only the input gradient is used (filter ascent). Forward-mode
differentiation (``jax.jvp``) is not defined for it: use ``Backend(conv="xla")``
for that.

Values equal ``lax.conv_general_dilated`` up to float32 summation order
(max abs difference ~1e-5 on activations around 1, as between two batch
sizes of the XLA convolution). Any other configuration (strides, dilation,
groups, other layouts, padding beyond the kernel) is passed to
``lax.conv_general_dilated`` unchanged: the values are the same, only the
speed differs.

Imports jax only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxconvviz.backend._geometry import (
    NHWC,
    explicit_pads,
    fallback_kwargs,
    flip_io,
    grad_pads,
    is_nhwc_hwio,
    xla_kernel_grad,
)

#: Smallest contraction ``kw * c_in`` worth a matrix product: below it (the
#: RGB first layer, ``3 * 3 = 9``) the dots are too thin and the XLA
#: convolution is faster (``docs/design-notes.md``).
MIN_CONTRACTION = 32


def _row_cols(x, kh, kw, pads):
    """The row im2col of ``x``: its ``kw`` horizontal shifts, padded by
    ``pads``, side by side, ``(n, hp, wo, kw*c)``, and the output height
    ``ho``. Kernel row ``i`` reads ``cols[:, i:i + ho]``."""
    (pt, pb), (pl, pr) = pads
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    _, hp, wp, _ = xp.shape
    ho, wo = hp - kh + 1, wp - kw + 1
    cols = xp if kw == 1 else jnp.concatenate(
        [xp[:, :, j:j + wo, :] for j in range(kw)], axis=-1)
    return cols, ho


def _rows(x, w, pads):
    """Stride-1 NHWC/HWIO convolution with explicit ``pads`` as ``kh`` dots."""
    kh, kw, c, k = w.shape
    cols, ho = _row_cols(x, kh, kw, pads)
    acc = None
    for i in range(kh):
        y = jnp.einsum("nhwc,ck->nhwk", cols[:, i:i + ho], w[i].reshape(kw * c, k),
                       preferred_element_type=jnp.float32)
        acc = y if acc is None else acc + y
    return acc.astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, w, pads):
    return _rows(x, w, pads)


def _conv_fwd(x, w, pads):
    return _rows(x, w, pads), (x, w)


def _conv_bwd(pads, res, dy):
    x, w = res
    kh, kw, c, _ = w.shape
    # d/dx: correlate dy with the flipped kernel, in/out swapped, full padding
    dx = _rows(dy.astype(x.dtype), flip_io(w), grad_pads((kh, kw), pads))
    # d/dw[i]: (kw*c, k) = cols_i^T @ dy, float32 accumulation
    cols, ho = _row_cols(x, kh, kw, pads)
    dw = jnp.stack([
        jnp.einsum("nhwc,nhwk->ck", cols[:, i:i + ho], dy.astype(x.dtype),
                   preferred_element_type=jnp.float32).reshape(kw, c, -1)
        for i in range(kh)])
    return dx, dw.astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
    """``lax.conv_general_dilated`` computed as matrix products where it can be.

    Handles NHWC inputs, HWIO kernels, stride 1, no dilation, one group,
    ``"SAME"``/``"VALID"``/explicit padding between 0 and ``k - 1`` per side,
    and a contraction ``kw * c_in`` of at least :data:`MIN_CONTRACTION`;
    everything else goes to ``lax.conv_general_dilated`` as given. See the
    module docstring for why and for the derivative.

    Args:
      lhs: ``(n, h, w, c)`` input.
      rhs: ``(kh, kw, c, k)`` kernel.
      window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
      feature_group_count, batch_group_count, precision,
      preferred_element_type: as for ``lax.conv_general_dilated``.

    Returns:
      ``(n, h', w', k)`` in ``lhs``'s dtype.
    """
    kw = dict(lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
              dimension_numbers=dimension_numbers,
              feature_group_count=feature_group_count,
              batch_group_count=batch_group_count, precision=precision,
              preferred_element_type=preferred_element_type)
    dn = dimension_numbers
    if isinstance(dn, tuple) and not isinstance(dn, jax.lax.ConvDimensionNumbers):
        dn = (jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dn)
              if all(isinstance(s, str) for s in dn) else None)
    pads = None
    if lhs.ndim == 4 and rhs.ndim == 4:
        pads = explicit_pads(padding, rhs.shape[:2])
    ok = (
        pads is not None
        and dn == NHWC
        and tuple(window_strides) == (1, 1)
        and all(d is None or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation))
        and feature_group_count == 1 and batch_group_count == 1
        and preferred_element_type is None
        and lhs.dtype == rhs.dtype
        and rhs.shape[1] * rhs.shape[2] >= MIN_CONTRACTION
        and all(0 <= p <= k - 1 for (a, b), k in zip(pads, rhs.shape[:2], strict=True)
                for p in (a, b))
    )
    if not ok:
        return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kw)
    return _conv(lhs, rhs, pads)


def pointwise_conv(lhs, rhs, window_strides, padding, lhs_dilation=None,
                   rhs_dilation=None, dimension_numbers=None,
                   feature_group_count=1, precision=None,
                   preferred_element_type=None, *,
                   fallback=jax.lax.conv_general_dilated):
    """``lax.conv_general_dilated`` for 1x1 kernels as a matrix product.

    A 1x1 convolution with stride ``s`` and no padding is
    ``x[:, ::s, ::s, :] @ kernel[0, 0]``. On XLA:CPU the product is faster
    than the convolution: ResNet50 Grad-CAM on 4 images at 224 px took
    0.23 s instead of 0.275 s (two thirds of ResNet50's convolutions are
    1x1; ``docs/design-notes.md``). The values equal the convolution's up
    to float32 summation order. Any other case (a larger kernel, groups,
    input dilation, padding, a layout other than NHWC/HWIO) goes to
    ``fallback`` with the same arguments, so this is a drop-in
    ``conv_general_dilated`` (flax's ``nn.Conv`` takes it as such).
    """
    kw = fallback_kwargs(lhs_dilation, rhs_dilation, dimension_numbers,
                         feature_group_count, precision, preferred_element_type)
    zero_pad = (isinstance(padding, str) and padding.upper() in ("SAME", "VALID")) or (
        not isinstance(padding, str) and all(a == 0 and b == 0 for a, b in padding))
    ok = (lhs.ndim == 4 and tuple(rhs.shape[:2]) == (1, 1)
          and feature_group_count == 1 and zero_pad
          and (lhs_dilation is None or tuple(lhs_dilation) == (1, 1))
          and is_nhwc_hwio(dimension_numbers, lhs, rhs))
    if not ok:
        return fallback(lhs, rhs, window_strides, padding, **kw)
    sh, sw = tuple(window_strides)
    x = lhs if (sh, sw) == (1, 1) else lhs[:, ::sh, ::sw, :]
    return jnp.einsum("nhwc,co->nhwo", x, rhs[0, 0], precision=precision,
                      preferred_element_type=preferred_element_type)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _canon(x, w, pads):
    return jax.lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=NHWC)


def _canon_fwd(x, w, pads):
    return _canon(x, w, pads), (x, w)


def _canon_bwd(pads, res, dy):
    x, w = res
    dx = jax.lax.conv_general_dilated(dy, flip_io(w), (1, 1),
                                      grad_pads(w.shape[:2], pads),
                                      dimension_numbers=NHWC)
    return dx, xla_kernel_grad(x, w, pads, dy)


_canon.defvjp(_canon_fwd, _canon_bwd)


def hwio_vjp_conv(lhs, rhs, window_strides, padding, lhs_dilation=None,
                  rhs_dilation=None, dimension_numbers=None,
                  feature_group_count=1, precision=None,
                  preferred_element_type=None, *,
                  fallback=jax.lax.conv_general_dilated):
    """``lax.conv_general_dilated`` whose input gradient is an ordinary HWIO
    convolution of the cotangent with the explicitly flipped, in/out
    transposed kernel (a custom VJP; the kernel gradient is JAX's).

    Why: JAX's transpose rule expresses the input gradient as a convolution
    whose kernel dimensions are labelled the other way round (``01oi``).
    Outside loops XLA:CPU copies that kernel into the usual layout and hands
    the convolution to YNNPACK; inside a ``while`` loop body it does not, and
    the convolution takes a generic path 3-7x slower (one 28 x 28 x 512 3x3
    layer: 174 ms per gradient inside ``fori_loop`` against 47 ms outside).
    That was why a Python loop over one jitted step beat ``lax.fori_loop``
    for the CPU ascent, and why Integrated Gradients (a ``lax.scan``) cost
    1.27 s per point on VGG16 where a saliency map costs 0.46 s. With this
    rule: 0.43 s per point, and the ascent's ``fori_loop`` as fast as the
    Python loop (``docs/design-notes.md``). Values equal JAX's rule up to
    float32 summation order (outside loops the same computation XLA does:
    bit-identical). Reverse mode only: ``jax.jvp`` is not defined for it, so
    a model uses it only where ``Backend.conv_vjp`` is ``"custom"``, which
    ``"auto"`` picks inside the library's own gradient programs on XLA:CPU
    (:func:`jaxconvviz.backend.bind`); the user's own programs keep JAX's
    rule.

    Applies to stride-1, undilated, ungrouped NHWC/HWIO convolutions with
    kernels larger than 1x1 and padding within the kernel (``"SAME"``,
    ``"VALID"`` or explicit); anything else goes to ``fallback`` unchanged.
    """
    kw_ = fallback_kwargs(lhs_dilation, rhs_dilation, dimension_numbers,
                          feature_group_count, precision, preferred_element_type)
    pads = explicit_pads(padding, rhs.shape[:2]) if rhs.ndim == 4 else None
    ok = (pads is not None and lhs.ndim == 4 and tuple(window_strides) == (1, 1)
          and feature_group_count == 1 and precision is None
          and all(d is None or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation))
          and preferred_element_type is None
          and is_nhwc_hwio(dimension_numbers, lhs, rhs)
          and all(0 <= p <= k - 1
                  for pair, k in zip(pads, rhs.shape[:2], strict=True) for p in pair)
          and max(rhs.shape[:2]) > 1)
    if not ok:
        return fallback(lhs, rhs, window_strides, padding, **kw_)
    return _canon(lhs, rhs, pads)


__all__ = ["conv_general_dilated", "hwio_vjp_conv", "pointwise_conv", "MIN_CONTRACTION"]
