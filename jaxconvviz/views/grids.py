"""Tile images into one grid array (pure NumPy; no Pillow, no matplotlib).

:func:`tile_grid` lays out uint8 tiles in row-major order with a margin of
background between them; :func:`atlas_grid` first maps each raw filter
pattern to display pixels with the book's :func:`~jaxconvviz.deprocess_image`.
"""

from __future__ import annotations

import numpy as np

from jaxconvviz.errors import InputError
from jaxconvviz.models.preprocess import deprocess_image


def _check_layout(n_cols, margin) -> tuple[int, int]:
    if isinstance(n_cols, bool) or not isinstance(n_cols, (int, np.integer)) or (
            n_cols < 1):
        raise InputError(f"n_cols must be an integer >= 1; got {n_cols!r}.")
    if isinstance(margin, bool) or not isinstance(margin, (int, np.integer)) or (
            margin < 0):
        raise InputError(f"margin must be an integer >= 0; got {margin!r}.")
    return int(n_cols), int(margin)


def tile_grid(tiles_u8, *, n_cols: int = 8, margin: int = 5,
              background: int = 0) -> np.ndarray:
    """Tile ``n`` equal-sized images into one array, row-major.

    Tile ``k`` goes to row ``k // n_cols``, column ``k % n_cols``, its top-left
    corner at ``(row * (h + margin), col * (w + margin))``. The grid has
    ``min(n, n_cols)`` columns and ``ceil(n / n_cols)`` rows; cells after the
    last tile and the margins are ``background``. No margin after the last
    row or column (the book's ``8 * size + 7 * margin``).

    Args:
      tiles_u8: uint8 ``(n, h, w)`` or ``(n, h, w, c)``, display pixels.
      n_cols: tiles per row.
      margin: background pixels between neighbouring tiles.
      background: fill value (0 = black, as the book).

    Returns:
      uint8 ``(rows * h + (rows - 1) * margin, cols * w + (cols - 1) * margin
      [, c])``.
    """
    t = np.asarray(tiles_u8)
    if t.dtype != np.uint8 or t.ndim not in (3, 4) or t.shape[0] == 0:
        raise InputError(
            f"tiles_u8 must be a non-empty uint8 batch (n, h, w) or (n, h, w, c); "
            f"got {t.dtype} {t.shape}."
        )
    n_cols, margin = _check_layout(n_cols, margin)
    if not 0 <= int(background) <= 255:
        raise InputError(f"background must be in 0..255; got {background!r}.")
    n, h, w = t.shape[:3]
    cols = min(n, n_cols)
    rows = -(-n // n_cols)
    out = np.full((rows * h + (rows - 1) * margin, cols * w + (cols - 1) * margin,
                   *t.shape[3:]), background, np.uint8)
    for k in range(n):
        r, c = divmod(k, n_cols)
        y, x = r * (h + margin), c * (w + margin)
        out[y:y + h, x:x + w] = t[k]
    return out


def atlas_grid(images, *, n_cols: int = 8, margin: int = 5) -> np.ndarray:
    """Display grid of filter patterns: deprocess each image, tile row-major.

    Each image is mapped to uint8 on its own statistics with the book's
    :func:`~jaxconvviz.deprocess_image` (centre, scale to std 0.1, shift to
    0.5, clip), then tiled by :func:`tile_grid` on a black background.

    Layout: **row-major** -- pattern ``k`` is at row ``k // n_cols``, column
    ``k % n_cols``, so a row reads filters in order. The book's listing 5.39
    places filter ``i + 8 * j`` at row ``i``, column ``j`` (column-major);
    transpose the grid of tiles to get that layout.

    Args:
      images: float ``(f, h, w, c)``, raw patterns from
        :func:`~jaxconvviz.filter_patterns` (any domain; ``c`` = 3 for RGB or
        caffe-BGR models -- BGR patterns are shown with their channel order as
        is, as the book does).
      n_cols: patterns per row (the book: 8).
      margin: black pixels between patterns (the book: 5).

    Returns:
      uint8 ``(H, W, c)`` with ``H = rows * h + (rows - 1) * margin``,
      ``W = min(f, n_cols) * w + (min(f, n_cols) - 1) * margin``; the last row
      is padded with black.
    """
    a = np.asarray(images, dtype=np.float32)
    if a.ndim != 4 or a.shape[0] == 0:
        raise InputError(
            f"images must be a non-empty batch (f, h, w, c); got shape {a.shape}."
        )
    if not np.isfinite(a).all():
        raise InputError("images contains NaN or inf values.")
    _check_layout(n_cols, margin)
    return tile_grid(deprocess_image(a), n_cols=n_cols, margin=margin)


__all__ = ["tile_grid", "atlas_grid"]
