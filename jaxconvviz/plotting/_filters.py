"""Filter-atlas figures (book figure 5.30) and book-vs-lucid side by side.
NumPy + matplotlib only."""

from __future__ import annotations

import numpy as np
from matplotlib import patheffects
from matplotlib.figure import Figure

from jaxconvviz.errors import InputError

#: Smallest figure width in pixels: small grids are drawn scaled up
#: (nearest neighbour) so tiles and their numbers stay readable.
MIN_WIDTH_PX = 900
#: Height of the title strip in pixels (two lines).
TITLE_PX = 56


def _check_grid(grid_u8, name: str = "grid_u8") -> np.ndarray:
    g = np.asarray(grid_u8)
    if g.dtype != np.uint8 or g.ndim not in (2, 3) or g.size == 0 or (
            g.ndim == 3 and g.shape[-1] not in (1, 3)):
        raise InputError(
            f"{name} must be a uint8 (H, W, 3) or (H, W) image; got {g.dtype} "
            f"{g.shape}."
        )
    return g[..., 0] if g.ndim == 3 and g.shape[-1] == 1 else g


def _tile_origins(shape, n: int, n_cols: int, margin: int):
    """Top-left ``(y, x)`` of each of ``n`` tiles in a row-major grid."""
    H, W = shape[:2]
    cols = min(n, n_cols)
    rows = -(-n // n_cols)
    th = (H - (rows - 1) * margin) / rows
    tw = (W - (cols - 1) * margin) / cols
    return [((k // n_cols) * (th + margin), (k % n_cols) * (tw + margin))
            for k in range(n)], th, tw


def _draw(ax, g, *, filter_indices=None, n_cols=8, margin=5):
    ax.imshow(g, cmap="gray" if g.ndim == 2 else None, vmin=0, vmax=255,
              interpolation="nearest", aspect="equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_axis_off()
    if filter_indices is None:
        return
    idx = [int(i) for i in filter_indices]
    origins, th, _ = _tile_origins(g.shape, len(idx), n_cols, margin)
    fs = max(6.0, min(11.0, th / 6))
    for (y, x), k in zip(origins, idx, strict=True):
        ax.text(x + 1.5, y + 1.5, str(k), color="white", fontsize=fs,
                va="top", ha="left",
                path_effects=[patheffects.withStroke(linewidth=2,
                                                     foreground="black")])


def plot_atlas(grid_u8, *, layer: str, n_filters: int, source: str = "VGG16",
               filter_indices=None, n_cols: int = 8, margin: int = 5) -> Figure:
    """A grid of filter patterns with a title naming the layer and the weights.

    The grid fills the canvas below a title strip (no axes frame, no ticks,
    nearest-neighbour); grids narrower than :data:`MIN_WIDTH_PX` are drawn
    scaled up by an integer factor. With ``filter_indices`` each tile is
    numbered with its filter in its top-left corner.

    Args:
      grid_u8: uint8 ``(H, W, 3)`` (or ``(H, W)``) from
        :func:`jaxconvviz.atlas_grid` / :func:`jaxconvviz.tile_grid`.
      layer: layer name the patterns maximise, e.g. ``"block3_conv1"``.
      n_filters: number of patterns in the grid (shown in the title).
      source: what the weights and settings are (second title line).
      filter_indices: the filter of each tile, in grid order (None: no
        numbers).
      n_cols, margin: the grid's layout (as :func:`jaxconvviz.tile_grid`),
        needed to place the numbers.

    Returns:
      A ``matplotlib.figure.Figure`` titled ``"Filter patterns for layer
      <layer> (<n> filters)"`` with ``source`` on a second line.
    """
    g = _check_grid(grid_u8)
    if filter_indices is not None and len(filter_indices) != int(n_filters):
        raise InputError(
            f"filter_indices must have n_filters={n_filters} entries; got "
            f"{len(filter_indices)}.")
    H, W = g.shape[:2]
    scale = max(1, -(-MIN_WIDTH_PX // W))
    w_px, h_px = W * scale, H * scale
    fig = Figure(figsize=(w_px / 100, (h_px + TITLE_PX) / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, h_px / (h_px + TITLE_PX)))
    _draw(ax, g, filter_indices=filter_indices, n_cols=n_cols, margin=margin)
    s = "" if int(n_filters) == 1 else "s"
    fig.text(0.5, 1 - 4 / (h_px + TITLE_PX),
             f"Filter patterns for layer {layer} ({int(n_filters)} filter{s})\n"
             f"{source}", ha="center", va="top", fontsize=10)
    return fig


def plot_side_by_side(left_u8, right_u8, *, layer: str, filter_indices,
                      titles=("book style", "lucid style"), source: str = "",
                      n_cols: int = 4, margin: int = 3) -> Figure:
    """Two grids of the same filters next to each other (e.g. book vs lucid).

    Args:
      left_u8, right_u8: uint8 grids of the same shape (``tile_grid`` of the
        same filters, same ``n_cols``/``margin``).
      layer: the layer (title).
      filter_indices: the filter of each tile (numbers on both grids).
      titles: the two panel titles.
      source: a second title line (weights, steps, size).
      n_cols, margin: the grids' layout.

    Returns:
      A ``matplotlib.figure.Figure``, both grids filling their half.
    """
    a, b = _check_grid(left_u8, "left_u8"), _check_grid(right_u8, "right_u8")
    if a.shape != b.shape:
        raise InputError(f"left_u8 and right_u8 must have the same shape; got "
                         f"{a.shape} and {b.shape}.")
    H, W = a.shape[:2]
    gap = max(8, W // 40)
    scale = max(1, -(-MIN_WIDTH_PX // (2 * W + gap)))
    w_px, h_px, g_px = 2 * W * scale, H * scale, gap * scale
    sub_px = 22
    total_h = h_px + TITLE_PX + sub_px
    fig = Figure(figsize=((w_px + g_px) / 100, total_h / 100), dpi=100)
    for i, (g, t) in enumerate(((a, titles[0]), (b, titles[1]))):
        x0 = i * (W * scale + g_px) / (w_px + g_px)
        ax = fig.add_axes((x0, 0, W * scale / (w_px + g_px), h_px / total_h))
        _draw(ax, g, filter_indices=filter_indices, n_cols=n_cols, margin=margin)
        fig.text(x0 + W * scale / (w_px + g_px) / 2, (h_px + 3) / total_h, t,
                 ha="center", va="bottom", fontsize=10)
    n = len(filter_indices)
    fig.text(0.5, 1 - 4 / total_h,
             f"{n} filters of {layer}: book vs lucid feature visualization\n"
             f"{source}", ha="center", va="top", fontsize=10)
    return fig


__all__ = ["plot_atlas", "plot_side_by_side"]
