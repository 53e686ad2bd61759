"""Winograd F(2x2, 3x3) for stride-1 3x3 float32 convolutions
(:func:`winograd_conv`), and the layer shapes where it pays on XLA:CPU
(:func:`winograd_pays`, the ``"by_shape"`` choice of ``Backend.conv3x3``).

Imports jax and numpy only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxconvviz.backend._geometry import (
    NHWC,
    explicit_pads,
    fallback_kwargs,
    flip_io,
    grad_pads,
    is_nhwc_hwio,
    xla_kernel_grad,
)

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
    dx = winograd_conv(dy, flip_io(w), (1, 1), grad_pads((3, 3), pads),
                       dimension_numbers=NHWC, by_shape=by_shape,
                       stacked_max_tiles=stacked_max_tiles)
    return dx, xla_kernel_grad(x, w, pads, dy)


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
    convolution compiles in 0.02 s), which is why ``Backend.conv3x3``
    resolves to ``"conv"`` by default. Up to ``stacked_max_tiles`` output tiles (None:
    :data:`WINOGRAD_STACKED_MAX_TILES`) the 16 products are one batched
    product: faster with few tiles, and ~0.2 s to compile. The input gradient is the
    same kind of convolution (flipped kernel) and uses Winograd too; the
    kernel gradient is XLA's. Values equal the convolution's within float32
    rounding (relative error ~1e-6 of the largest output; F(4x4, 3x3) was
    ~1.5e-5 and not faster here).

    Applies to float32 NHWC/HWIO 3x3 kernels, stride 1, no dilation, one
    group, ``"SAME"``/``"VALID"``/explicit padding of 0-2 per side, and,
    with ``by_shape`` (``Backend.conv3x3="by_shape"``), only where
    :func:`winograd_pays`. Any other case goes to ``fallback`` with the same
    arguments, so this is a drop-in ``conv_general_dilated``. Forward-mode
    differentiation (``jax.jvp``) is not defined for it (a custom VJP): use
    ``Backend(conv3x3="conv")`` for that.
    """
    kw = fallback_kwargs(lhs_dilation, rhs_dilation, dimension_numbers,
                         feature_group_count, precision, preferred_element_type)
    pads = explicit_pads(padding, (3, 3)) if rhs.ndim == 4 else None
    ok = (pads is not None and lhs.ndim == 4 and tuple(rhs.shape[:2]) == (3, 3)
          and tuple(window_strides) == (1, 1) and feature_group_count == 1
          and all(d is None or tuple(d) == (1, 1) for d in (lhs_dilation, rhs_dilation))
          and preferred_element_type is None
          and lhs.dtype == rhs.dtype == jnp.float32
          and is_nhwc_hwio(dimension_numbers, lhs, rhs)
          and all(0 <= p <= 2 for pair in pads for p in pair)
          and min(lhs.shape[1] + sum(pads[0]), lhs.shape[2] + sum(pads[1])) >= 3
          and (not by_shape or winograd_pays(*lhs.shape, rhs.shape[-1])))
    if not ok:
        return fallback(lhs, rhs, window_strides, padding, **kw)
    if stacked_max_tiles is None:
        stacked_max_tiles = WINOGRAD_STACKED_MAX_TILES
    return _wino(lhs, rhs, pads, by_shape, int(stacked_max_tiles))


__all__ = ["winograd_conv", "winograd_pays", "WINOGRAD_MIN_TILES",
           "WINOGRAD_MIN_CHANNELS", "WINOGRAD_MAX_INPUT_BYTES",
           "WINOGRAD_STACKED_MAX_TILES"]
