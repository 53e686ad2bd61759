"""Shared figure helpers."""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.figure import Figure


def new_figure(width_px: int, height_px: int, *, dpi: int = 100) -> Figure:
    """A pyplot-free Figure sized in pixels."""
    return Figure(figsize=(max(width_px, 1) / dpi, max(height_px, 1) / dpi), dpi=dpi)


def tile_gapped(tiles: np.ndarray, n_rows: int, n_cols: int, *, gap: int = 1,
                 fill: float = np.nan) -> np.ndarray:
    """(n, h, w[, 3]) -> one image, tile k at (k // n_cols, k % n_cols),
    ``gap`` pixels of ``fill`` between tiles and in empty cells."""
    n, h, w = tiles.shape[:3]
    extra = tiles.shape[3:]
    out = np.full((n_rows * (h + gap) - gap, n_cols * (w + gap) - gap) + extra,
                  fill, dtype=np.float32)
    for k in range(min(n, n_rows * n_cols)):
        r, c = divmod(k, n_cols)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = (
            tiles[k])
    return out


def cmap_with_bad(name: str, bad: str = "white"):
    return matplotlib.colormaps[name].with_extremes(bad=bad)


__all__ = ["new_figure", "tile_gapped", "cmap_with_bad"]
