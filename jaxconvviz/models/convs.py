"""Convolutions for XLA:CPU: matrix products (a drop-in for the conv in
``nn.Conv``) and depthwise convolutions as sums of slices
(:func:`depthwise_conv2d`, whose docstring says why).

Why this exists: on XLA:CPU a stride-1 convolution lowered as
``lax.conv_general_dilated`` runs at about 95 GFLOP/s on this project's
2-core AVX-512 machine, and its input gradient is slower still (XLA's
backward-input convolution), while PyTorch's oneDNN convolutions reach about
190 GFLOP/s. XLA:CPU's *dot*, on CPUs with AVX512-BF16, runs bfloat16
operands with a float32 accumulator at 300-360 GFLOP/s (YNNPACK), a speed
XLA's bf16 convolution never reaches (it is no faster than the float32 one).
In float32 the dot (140-190 GFLOP/s) does not pay for the im2col copies: the
float32 products were slower than XLA's convolution in a full VGG16 ascent
step, which is why ``conv_impl="auto"`` uses them for bfloat16 only.

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
differentiation (``jax.jvp``) is not defined for it: use ``conv_impl="xla"``
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
import numpy as np

from jaxconvviz.errors import InputError

#: Convolution implementations: ``"xla"`` (``lax.conv_general_dilated``),
#: ``"matmul"`` (:func:`conv_general_dilated` here), ``"auto"`` (matmul for
#: bfloat16 compute on XLA:CPU, xla otherwise; see :func:`resolve_conv_impl`).
CONV_IMPLS = ("auto", "xla", "matmul")

#: Smallest contraction ``kw * c_in`` worth a matrix product: below it (the
#: RGB first layer, ``3 * 3 = 9``) the dots are too thin and the XLA
#: convolution is faster (``docs/design-notes.md``).
MIN_CONTRACTION = 32

_NHWC = jax.lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                     out_spec=(0, 3, 1, 2))


def resolve_conv_impl(conv_impl: str, dtype=jnp.float32, *,
                      name: str = "conv_impl") -> str:
    """``"xla"`` or ``"matmul"`` for ``conv_impl`` at compute ``dtype``.

    ``"auto"`` is ``"matmul"`` only for bfloat16 on XLA:CPU when the CPU
    has bf16 dot instructions (:func:`jaxconvviz.cpu.cpu_has_bf16`; without
    them bf16 products are emulated and no faster than float32): there bf16
    matrix products with float32 accumulation beat XLA's convolutions from
    the second VGG16 layer on. In float32 the matmul form is slower than
    XLA's convolution, and on GPUs cuDNN's convolutions are the fast path, so
    both stay on ``"xla"`` (the measurements: ``docs/design-notes.md``).
    """
    if conv_impl not in CONV_IMPLS:
        raise InputError(
            f"{name} must be one of {', '.join(CONV_IMPLS)}; got {conv_impl!r}.")
    if conv_impl == "auto":
        from jaxconvviz.cpu import cpu_has_bf16

        cpu = jax.default_backend() == "cpu"
        bf16 = jnp.dtype(dtype) == jnp.bfloat16
        return "matmul" if cpu and bf16 and cpu_has_bf16() else "xla"
    return conv_impl


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


def _flip_io(w):
    """The kernel of a stride-1 convolution's input gradient: ``w`` flipped in
    space with input and output channels swapped (HWIO again)."""
    return jnp.flip(w, axis=(0, 1)).transpose(0, 1, 3, 2)


def _grad_pads(kernel_hw, pads):
    """Padding of that input-gradient convolution: ``k - 1 - p`` per side."""
    (kh, kw), ((pt, pb), (pl, pr)) = kernel_hw, pads
    return ((kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr))


def _xla_kernel_grad(x, w, pads, dy):
    """d/dw of a stride-1 NHWC/HWIO convolution by XLA's own transpose
    (removed by XLA when only the input gradient is used, as in ascent)."""
    _, vjp_w = jax.vjp(lambda k: jax.lax.conv_general_dilated(
        x, k, (1, 1), pads, dimension_numbers=_NHWC), w)
    return vjp_w(dy)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, w, pads):
    return _rows(x, w, pads)


def _conv_fwd(x, w, pads):
    return _rows(x, w, pads), (x, w)


def _conv_bwd(pads, res, dy):
    x, w = res
    kh, kw, c, _ = w.shape
    # d/dx: correlate dy with the flipped kernel, in/out swapped, full padding
    dx = _rows(dy.astype(x.dtype), _flip_io(w), _grad_pads((kh, kw), pads))
    # d/dw[i]: (kw*c, k) = cols_i^T @ dy, float32 accumulation
    cols, ho = _row_cols(x, kh, kw, pads)
    dw = jnp.stack([
        jnp.einsum("nhwc,nhwk->ck", cols[:, i:i + ho], dy.astype(x.dtype),
                   preferred_element_type=jnp.float32).reshape(kw, c, -1)
        for i in range(kh)])
    return dx, dw.astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def _explicit_pads(padding, kernel_hw):
    if isinstance(padding, str):
        if padding.upper() == "VALID":
            return ((0, 0), (0, 0))
        if padding.upper() == "SAME":
            # stride 1: total padding k - 1, the extra pixel at the end (as XLA)
            return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_hw)
        return None
    pads = tuple(tuple(int(p) for p in pair) for pair in padding)
    return pads if len(pads) == 2 and all(len(p) == 2 for p in pads) else None


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
        pads = _explicit_pads(padding, rhs.shape[:2])
    ok = (
        pads is not None
        and dn == _NHWC
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


#: Depthwise convolution algorithms (``ConvNet.depthwise_impl``):
#: ``"slices"`` (:func:`depthwise_conv2d`), ``"grouped"``
#: (``lax.conv_general_dilated`` with one group per channel), ``"auto"``
#: (slices on XLA:CPU, grouped elsewhere).
DEPTHWISE_IMPLS = ("auto", "slices", "grouped")


def _resolve_impl(impl: str, impls: tuple[str, ...], *, name: str, cpu: str,
                  other: str) -> str:
    """``impl`` checked against ``impls`` (``name`` in the error); ``"auto"``
    is ``cpu`` on XLA:CPU and ``other`` elsewhere."""
    if impl not in impls:
        raise InputError(f"{name} must be one of {', '.join(impls)}; got {impl!r}.")
    if impl == "auto":
        return cpu if jax.default_backend() == "cpu" else other
    return impl


def resolve_depthwise_impl(impl: str) -> str:
    """``"slices"`` or ``"grouped"`` for ``impl`` on the default backend."""
    return _resolve_impl(impl, DEPTHWISE_IMPLS, name="depthwise_impl",
                         cpu="slices", other="grouped")


#: 1x1 convolution algorithms (``ConvNet.pointwise_impl``): ``"dot"``
#: (:func:`pointwise_conv`, a strided slice and one matrix product),
#: ``"conv"`` (``lax.conv_general_dilated``), ``"auto"`` (dot on XLA:CPU,
#: conv elsewhere).
POINTWISE_IMPLS = ("auto", "dot", "conv")


def resolve_pointwise_impl(impl: str) -> str:
    """``"dot"`` or ``"conv"`` for ``impl`` on the default backend."""
    return _resolve_impl(impl, POINTWISE_IMPLS, name="pointwise_impl",
                         cpu="dot", other="conv")


def _fallback_kwargs(lhs_dilation, rhs_dilation, dimension_numbers,
                     feature_group_count, precision, preferred_element_type) -> dict:
    """The keyword arguments a drop-in convolution passes on to its fallback
    (``preferred_element_type`` only when set, as ``nn.Conv`` calls it)."""
    kw = dict(lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
              dimension_numbers=dimension_numbers,
              feature_group_count=feature_group_count, precision=precision)
    if preferred_element_type is not None:
        kw["preferred_element_type"] = preferred_element_type
    return kw


def _is_nhwc_hwio(dimension_numbers, lhs, rhs) -> bool:
    if dimension_numbers is None:  # lax's default is NCHW / OIHW
        return False
    dn = jax.lax.conv_dimension_numbers
    return (dn(lhs.shape, rhs.shape, dimension_numbers)
            == dn(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC")))


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
    kw = _fallback_kwargs(lhs_dilation, rhs_dilation, dimension_numbers,
                          feature_group_count, precision, preferred_element_type)
    zero_pad = (isinstance(padding, str) and padding.upper() in ("SAME", "VALID")) or (
        not isinstance(padding, str) and all(a == 0 and b == 0 for a, b in padding))
    ok = (lhs.ndim == 4 and tuple(rhs.shape[:2]) == (1, 1)
          and feature_group_count == 1 and zero_pad
          and (lhs_dilation is None or tuple(lhs_dilation) == (1, 1))
          and _is_nhwc_hwio(dimension_numbers, lhs, rhs))
    if not ok:
        return fallback(lhs, rhs, window_strides, padding, **kw)
    sh, sw = tuple(window_strides)
    x = lhs if (sh, sw) == (1, 1) else lhs[:, ::sh, ::sw, :]
    return jnp.einsum("nhwc,co->nhwo", x, rhs[0, 0], precision=precision,
                      preferred_element_type=preferred_element_type)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _canon(x, w, pads):
    return jax.lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=_NHWC)


def _canon_fwd(x, w, pads):
    return _canon(x, w, pads), (x, w)


def _canon_bwd(pads, res, dy):
    x, w = res
    dx = jax.lax.conv_general_dilated(dy, _flip_io(w), (1, 1),
                                      _grad_pads(w.shape[:2], pads),
                                      dimension_numbers=_NHWC)
    return dx, _xla_kernel_grad(x, w, pads, dy)


_canon.defvjp(_canon_fwd, _canon_bwd)


#: How convolutions' input gradients are computed (``ConvNet.conv_vjp``):
#: ``"jax"`` (JAX's own transpose rules; forward mode works) or
#: ``"custom"`` (:func:`hwio_vjp_conv` for convolutions, the gather form of
#: :func:`depthwise_conv2d` for depthwise ones; reverse mode only); None
#: lets each program choose (:func:`for_library_gradients`).
CONV_VJPS = ("jax", "custom")


def check_conv_vjp(conv_vjp) -> None:
    if conv_vjp is not None and conv_vjp not in CONV_VJPS:
        raise InputError(f"conv_vjp must be None or one of {', '.join(CONV_VJPS)}; "
                         f"got {conv_vjp!r}.")


def for_library_gradients(model):
    """``model`` as the library's own gradient programs run it (the ascent
    and render engine, the gradient CAMs, the gradient attributions): with
    ``conv_vjp="custom"`` on XLA:CPU when the model leaves the choice to them
    (``conv_vjp=None``, the default), unchanged otherwise. Those programs
    never use forward mode, which the custom VJPs lack; the user's own
    ``jax.grad``/``jax.jvp`` of ``model.forward`` keep JAX's rules."""
    check_conv_vjp(model.conv_vjp)
    if model.conv_vjp is None and jax.default_backend() == "cpu":
        return model.clone(conv_vjp="custom", parent=None)
    return model


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
    a model uses it only where ``conv_vjp`` is ``"custom"``, which the
    library's own gradient programs pick on XLA:CPU
    (:func:`for_library_gradients`); the user's own programs keep JAX's
    rule.

    Applies to stride-1, undilated, ungrouped NHWC/HWIO convolutions with
    kernels larger than 1x1 and padding within the kernel (``"SAME"``,
    ``"VALID"`` or explicit); anything else goes to ``fallback`` unchanged.
    """
    kw_ = _fallback_kwargs(lhs_dilation, rhs_dilation, dimension_numbers,
                           feature_group_count, precision, preferred_element_type)
    pads = _explicit_pads(padding, rhs.shape[:2]) if rhs.ndim == 4 else None
    ok = (pads is not None and lhs.ndim == 4 and tuple(window_strides) == (1, 1)
          and feature_group_count == 1 and precision is None
          and all(d is None or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation))
          and preferred_element_type is None
          and _is_nhwc_hwio(dimension_numbers, lhs, rhs)
          and all(0 <= p <= k - 1
                  for pair, k in zip(pads, rhs.shape[:2], strict=True) for p in pair)
          and max(rhs.shape[:2]) > 1)
    if not ok:
        return fallback(lhs, rhs, window_strides, padding, **kw_)
    return _canon(lhs, rhs, pads)


#: 3x3 convolution algorithms (``ConvNet.conv3x3_impl``): ``"conv"``
#: (``lax.conv_general_dilated``, the default), ``"auto"`` (Winograd on
#: XLA:CPU for the layer shapes where it was measured faster,
#: :func:`winograd_pays`; conv elsewhere), ``"winograd"``
#: (:func:`winograd_conv` wherever it applies).
CONV3X3_IMPLS = ("auto", "winograd", "conv")


def resolve_conv3x3_impl(impl: str) -> str:
    """``"winograd"``, ``"conv"`` or ``"auto"`` (Winograd by shape, only on
    XLA:CPU) for ``impl`` on the default backend."""
    return _resolve_impl(impl, CONV3X3_IMPLS, name="conv3x3_impl",
                         cpu="auto", other="conv")


# Winograd F(2x2, 3x3) (Lavin & Gray 2016): a 4x4 input tile d gives the 2x2
# output tile A^T [(G g G^T) * (B^T d B)] A. The entries of B^T and A^T are
# 0 and +-1, so the transforms are additions.
_WINO_BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_WINO_AT = ((1, 1, 1, 0), (0, 1, -1, -1))
_WINO_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))

#: :func:`winograd_pays`' thresholds: at least this many 2x2 output tiles
#: (rows of each of the 16 products) ...
WINOGRAD_MIN_TILES = 196
#: ... at least this many input and output channels ...
WINOGRAD_MIN_CHANNELS = 128
#: ... and, below twice that many, an input of at most this many bytes (the
#: transforms are memory-bound; with few channels they cost more than the
#: products save once the input leaves the cache).
WINOGRAD_MAX_INPUT_BYTES = 16 << 20


def winograd_pays(n: int, h: int, w: int, c: int, k: int) -> bool:
    """Whether a stride-1 3x3 float32 convolution of an ``(n, h, w, c)`` input
    into ``k`` channels is faster as :func:`winograd_conv` on XLA:CPU.

    Measured on this project's 2-core AVX-512 machine (``docs/design-notes.md``):
    Winograd does 16 products of ``(tiles, c) @ (c, k)`` per 2x2 output tile
    where the convolution does 36, a 2.25x cut that shows when the products
    are big (4 x 28 x 28 x 512: 50 ms against 77 ms; 16 x 28 x 28 x 512: 198
    against 301 ms) and is lost to thin products (1 x 14 x 14 x 512, 49
    tiles: 13 ms against 6 ms) and, with 128 channels, to memory-bound
    transforms once the input leaves the cache (16 x 56 x 56 x 128: 93
    against 77 ms).
    """
    tiles = n * -(-h // 2) * -(-w // 2)
    channels = min(c, k)
    return tiles >= WINOGRAD_MIN_TILES and channels >= WINOGRAD_MIN_CHANNELS and (
        channels >= 2 * WINOGRAD_MIN_CHANNELS
        or n * h * w * c * 4 <= WINOGRAD_MAX_INPUT_BYTES)


def _signed_sum(coefs, terms):
    out = None
    for c, t in zip(coefs, terms, strict=True):
        if c and out is None:
            out = t if c > 0 else -t
        elif c:
            out = out + t if c > 0 else out - t
    return out


#: At most this many 2x2 output tiles (``n * th * tw``): :func:`_winograd`
#: stacks the 16 transformed inputs and does one batched product instead of 16
#: separate ones. Measured (ms, conv / 16 products / stacked): 4 x 14 x 14 x
#: 512 (196 tiles) 19.7 / 23.1 / 11.0; 1 x 28 x 28 x 512 (196) 19.1 / 23.8 /
#: 11.1; 16 x 14 x 14 x 512 (784) 78.9 / 57.4 / 62.4; 4 x 28 x 28 x 256 -> 512
#: (784) 39.5 / 25.0 / 39.4. With few tiles, 16 small products cost more than
#: their work; with many, XLA:CPU fuses each entry's transform into its own
#: product (YNNPACK) and the stacked copy loses. The stacked form also
#: compiles in ~0.2 s instead of ~0.6 s per layer.
WINOGRAD_STACKED_MAX_TILES = 256


def _winograd(x, w, pads, stacked_max_tiles=WINOGRAD_STACKED_MAX_TILES):
    """Stride-1 NHWC/HWIO 3x3 convolution with explicit ``pads`` (each 0..2),
    Winograd F(2x2, 3x3): 16 products ``(n * tiles, c) @ (c, k)``, separate
    or, up to ``stacked_max_tiles`` tiles, batched."""
    n, h, wd, c = x.shape
    k = w.shape[-1]
    (pt, pb), (pl, pr) = pads
    ho, wo = h + pt + pb - 2, wd + pl + pr - 2
    th, tw = -(-ho // 2), -(-wo // 2)
    xp = jnp.pad(x, ((0, 0), (pt, 2 * th + 2 - h - pt), (pl, 2 * tw + 2 - wd - pl),
                     (0, 0)))
    g = np.asarray(_WINO_G, np.float32)
    gg = np.einsum("ai,bj->abij", g, g).reshape(16, 9)
    u = (jnp.asarray(gg) @ w.reshape(9, c * k)).reshape(16, c, k)  # G g G^T
    if n * th * tw <= stacked_max_tiles:
        return _winograd_stacked(xp, u, n, th, tw)[:, :ho, :wo]
    # d[i][j][:, t, s] = xp[:, 2t + i, 2s + j]: the 16 entries of every tile.
    # Kept as 16 separate arrays: XLA:CPU fuses each transformed entry into
    # one loop, where one stacked array became a slow concatenation.
    d = [[jax.lax.slice(xp, (0, i, j, 0), (n, i + 2 * th - 1, j + 2 * tw - 1, c),
                        (1, 2, 2, 1)) for j in range(4)] for i in range(4)]
    rows = [[_signed_sum(_WINO_BT[a], [d[i][j] for i in range(4)]) for j in range(4)]
            for a in range(4)]
    m = [[(_signed_sum(_WINO_BT[b], rows[a]).reshape(-1, c) @ u[4 * a + b]
           ).reshape(n, th, tw, k) for b in range(4)] for a in range(4)]
    half = [[_signed_sum(_WINO_AT[p], [m[a][b] for a in range(4)]) for b in range(4)]
            for p in range(2)]
    y = [[_signed_sum(_WINO_AT[q], half[p]) for q in range(2)] for p in range(2)]
    y = jnp.stack([jnp.stack(y[0], 3), jnp.stack(y[1], 3)], 2)  # n, th, 2, tw, 2, k
    return y.reshape(n, 2 * th, 2 * tw, k)[:, :ho, :wo]


def _bt_stack(d, axis):
    """``B^T`` along a new ``axis`` of the four tile rows (or columns) ``d``."""
    return jnp.stack([_signed_sum(row, d) for row in _WINO_BT], axis)


def _winograd_stacked(xp, u, n, th, tw):
    """:func:`_winograd`'s products as one batched matrix product: the padded
    input ``xp`` as non-overlapping 2x2 blocks, tile row ``i`` = block
    ``t + i // 2``, parity ``i % 2`` (the same for columns)."""
    c, k = u.shape[1:]
    xb = xp.reshape(n, th + 1, 2, tw + 1, 2, c)
    rows = _bt_stack([xb[:, i // 2:i // 2 + th, i % 2] for i in range(4)], 0)
    v = _bt_stack([rows[:, :, :, j // 2:j // 2 + tw, j % 2] for j in range(4)], 1)
    m = jax.lax.dot_general(v.reshape(16, n * th * tw, c), u,
                            (((2,), (1,)), ((0,), (0,)))).reshape(4, 4, n, th, tw, k)
    half = jnp.stack([_signed_sum(p, list(m)) for p in _WINO_AT], 0)  # (2, 4, ...)
    y = jnp.stack([_signed_sum(q, [half[:, b] for b in range(4)]) for q in _WINO_AT],
                  1)  # (p, q, n, th, tw, k)
    return y.transpose(2, 3, 0, 4, 1, 5).reshape(n, 2 * th, 2 * tw, k)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _wino(x, w, pads, by_shape, stacked_max_tiles):
    return _winograd(x, w, pads, stacked_max_tiles)


def _wino_fwd(x, w, pads, by_shape, stacked_max_tiles):
    return _winograd(x, w, pads, stacked_max_tiles), (x, w)


def _wino_bwd(pads, by_shape, stacked_max_tiles, res, dy):
    x, w = res
    # d/dx: the flipped, in/out-transposed kernel over dy, padded 2 - p: a
    # stride-1 3x3 convolution again, decided like the forward one
    dx = winograd_conv(dy, _flip_io(w), (1, 1), _grad_pads((3, 3), pads),
                       dimension_numbers=_NHWC, by_shape=by_shape,
                       stacked_max_tiles=stacked_max_tiles)
    return dx, _xla_kernel_grad(x, w, pads, dy)


_wino.defvjp(_wino_fwd, _wino_bwd)


def winograd_conv(lhs, rhs, window_strides, padding, lhs_dilation=None,
                  rhs_dilation=None, dimension_numbers=None,
                  feature_group_count=1, precision=None,
                  preferred_element_type=None, *,
                  fallback=jax.lax.conv_general_dilated, by_shape: bool = True,
                  stacked_max_tiles: int | None = None):
    """``lax.conv_general_dilated`` with 3x3 kernels as Winograd F(2x2, 3x3).

    Each 2x2 output tile is ``A^T [(G g G^T) * (B^T d B)] A`` of its 4x4
    input tile (Lavin & Gray, "Fast Algorithms for Convolutional Neural
    Networks", 2016): 16 matrix products ``(tiles, c) @ (c, k)`` do the work
    of the convolution's 36, 2.25x fewer multiplies. On XLA:CPU, where both
    run near the FMA peak, that is VGG16's forward pass to ``block5_conv3``
    about a quarter faster for 4 images at 224 px (``docs/design-notes.md``),
    at the price of about 0.5 s of XLA compilation per layer (the
    convolution compiles in 0.02 s), which is why ``ConvNet.conv3x3_impl``
    defaults to ``"conv"``. Up to ``stacked_max_tiles`` output tiles (None:
    :data:`WINOGRAD_STACKED_MAX_TILES`) the 16 products are one batched
    product: faster with few tiles, and ~0.2 s to compile. The input gradient is the
    same kind of convolution (flipped kernel) and uses Winograd too; the
    kernel gradient is XLA's. Values equal the convolution's within float32
    rounding (relative error ~1e-6 of the largest output; F(4x4, 3x3) was
    ~1.5e-5 and not faster here).

    Applies to float32 NHWC/HWIO 3x3 kernels, stride 1, no dilation, one
    group, ``"SAME"``/``"VALID"``/explicit padding of 0-2 per side, and,
    with ``by_shape`` (``conv3x3_impl="auto"``), only where
    :func:`winograd_pays`. Any other case goes to ``fallback`` with the same
    arguments, so this is a drop-in ``conv_general_dilated``. Forward-mode
    differentiation (``jax.jvp``) is not defined for it (a custom VJP): use
    ``conv3x3_impl="conv"`` for that.
    """
    kw = _fallback_kwargs(lhs_dilation, rhs_dilation, dimension_numbers,
                          feature_group_count, precision, preferred_element_type)
    pads = _explicit_pads(padding, (3, 3)) if rhs.ndim == 4 else None
    ok = (pads is not None and lhs.ndim == 4 and tuple(rhs.shape[:2]) == (3, 3)
          and tuple(window_strides) == (1, 1) and feature_group_count == 1
          and all(d is None or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation))
          and preferred_element_type is None
          and lhs.dtype == rhs.dtype == jnp.float32
          and _is_nhwc_hwio(dimension_numbers, lhs, rhs)
          and all(0 <= p <= 2 for pair in pads for p in pair)
          and min(lhs.shape[1] + sum(pads[0]), lhs.shape[2] + sum(pads[1])) >= 3
          and (not by_shape or winograd_pays(*lhs.shape, rhs.shape[-1])))
    if not ok:
        return fallback(lhs, rhs, window_strides, padding, **kw)
    if stacked_max_tiles is None:
        stacked_max_tiles = WINOGRAD_STACKED_MAX_TILES
    return _wino(lhs, rhs, pads, by_shape, int(stacked_max_tiles))


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
    (``ConvNet.conv_vjp="custom"``, :func:`for_library_gradients`).

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


__all__ = ["conv_general_dilated", "depthwise_conv2d", "pointwise_conv",
           "winograd_conv", "winograd_pays", "hwio_vjp_conv", "for_library_gradients",
           "CONV_VJPS",
           "resolve_conv_impl", "resolve_depthwise_impl", "resolve_pointwise_impl",
           "resolve_conv3x3_impl", "CONV_IMPLS", "DEPTHWISE_IMPLS",
           "POINTWISE_IMPLS", "CONV3X3_IMPLS",
           "MIN_CONTRACTION"]
