"""Activation-grid and feature-map figures (book listing 5.31; the
Fashion-MNIST note's 4x8 / 8x8 feature maps). NumPy + matplotlib only."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from jaxconvviz.errors import InputError
from jaxconvviz.plotting._common import cmap_with_bad, tile_gapped


def plot_activation_grid(grid, *, layer: str, image_name: str | None = None,
                         tile_hw: tuple[int, int] | None = None,
                         n_channels: int | None = None, cmap: str = "viridis"
                         ) -> Figure:
    """One layer's activation grid drawn as the book draws it.

    ``plt.figure(figsize=(scale * W, scale * H))`` with ``scale = 1 / size``
    (one inch per tile), ``plt.title(layer_name)``, ``plt.grid(False)``,
    ``plt.imshow(display_grid, cmap='viridis')`` -- here with the aspect kept
    (square pixels), a fixed 0..255 colour scale (the grid's own range) and
    no ticks. Save with ``dpi=tile_h`` to show every activation pixel.

    Args:
      grid: ``(H, W)`` float in [0, 255] from :func:`jaxconvviz.activation_grid`.
      layer: layer name, the title.
      image_name: optional input name added to the title.
      tile_hw: ``(h, w)`` of one channel tile; sets the figure size (one inch
        per tile, as the book) and, with ``n_channels``, the padding mask.
        None: 16 inches wide (the book's 16 tiles per row).
      n_channels: number of real channels; padding tiles after them are left
        white instead of drawn (needs ``tile_hw``).
      cmap: colormap (book: viridis).

    With ``tile_hw`` the channels are numbered: each row is labelled with its
    first channel and each column with its offset (channel = row + column),
    and a line under the grid counts the solid tiles -- channels that are
    constant, i.e. zero after a ReLU, on this image.

    Returns:
      A ``matplotlib.figure.Figure``.
    """
    g = np.asarray(grid, dtype=np.float32)
    if g.ndim != 2 or g.size == 0:
        raise InputError(f"grid must be a 2-D (H, W) array; got shape {g.shape}.")
    H, W = g.shape
    if tile_hw is not None:
        th, tw = (int(v) for v in tile_hw)
        if th < 1 or tw < 1 or H % th or W % tw:
            raise InputError(
                f"tile_hw must divide the grid shape {g.shape}; got {tile_hw!r}."
            )
        figsize = (W / tw, H / th)
        if n_channels is not None:
            cols = W // tw
            g = g.copy()
            for k in range(int(n_channels), (H // th) * cols):
                r, c = divmod(k, cols)
                g[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = np.nan
    else:
        figsize = (16.0, 16.0 * H / W)
    fig = Figure(figsize=(figsize[0], figsize[1] + 0.35), dpi=100,
                 layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(np.ma.masked_invalid(g), cmap=cmap_with_bad(cmap), vmin=0.0, vmax=255.0,
              interpolation="nearest", aspect="equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    title = layer if image_name is None else f"{layer} ({image_name})"
    ax.set_title(title, fontsize=11)
    if tile_hw is not None:
        _number_channels(ax, g, th, tw, n_channels)
    return fig


def solid_channels(grid, tile_hw: tuple[int, int],
                   n_channels: int | None = None) -> list[int]:
    """Channels whose tile in an activation grid is one flat value (a channel
    constant on the image: zero after a ReLU), in channel order."""
    g = np.asarray(grid, dtype=np.float32)
    th, tw = (int(v) for v in tile_hw)
    rows, cols = g.shape[0] // th, g.shape[1] // tw
    tiles = g.reshape(rows, th, cols, tw).transpose(0, 2, 1, 3).reshape(
        rows * cols, th * tw)
    n = rows * cols if n_channels is None else int(n_channels)
    flat = np.nanmax(tiles[:n], axis=1) == np.nanmin(tiles[:n], axis=1)
    return [int(k) for k in np.flatnonzero(flat)]


def _number_channels(ax, g, th: int, tw: int, n_channels: int | None) -> None:
    rows, cols = g.shape[0] // th, g.shape[1] // tw
    n = rows * cols if n_channels is None else int(n_channels)
    ax.set_yticks([r * th + (th - 1) / 2 for r in range(rows)],
                  [str(r * cols) for r in range(rows)], fontsize=7)
    ax.xaxis.tick_top()
    ax.set_xticks([c * tw + (tw - 1) / 2 for c in range(cols)],
                  [f"+{c}" for c in range(cols)], fontsize=7)
    ax.tick_params(length=0, pad=1)
    solid = solid_channels(g, (th, tw), n)
    note = (f"channel = row label + column; {len(solid)} of {n} tiles are solid: "
            "channels that are zero (constant) on this image" if solid else
            "channel = row label + column; no channel is zero on this image")
    ax.set_xlabel(note, fontsize=8)


def plot_feature_maps(maps, *, layer: str, n_rows: int | None = None,
                      n_cols: int = 8, image_name: str | None = None,
                      cmap: str = "viridis") -> Figure:
    """The note's grid of one image's feature maps (conv1 4x8, conv2 8x8).

    The note's ``plt.subplots(4, 8, figsize=(15, 8))`` with
    ``imshow(feature_maps[0, :, :, i * 8 + j])`` and axes off: each map on
    its own min..max colour scale (imshow's autoscale), map ``k`` at row
    ``k // n_cols``, column ``k % n_cols``. Drawn as one image with white
    1-pixel gaps (same picture, one artist instead of 64).

    Args:
      maps: one image's activation ``(h, w, c)`` float (ReLU output).
      layer: layer name for the title.
      n_rows: rows; None = ``ceil(c / n_cols)``. Maps past
        ``n_rows * n_cols`` are not drawn.
      n_cols: maps per row (the note: 8).
      image_name: optional input name for the title.
      cmap: colormap (matplotlib's default viridis, as the note).

    Returns:
      A ``matplotlib.figure.Figure``.
    """
    m = np.asarray(maps, dtype=np.float32)
    if m.ndim != 3 or m.size == 0:
        raise InputError(f"maps must be one image's (h, w, c); got shape {m.shape}.")
    for name, v in (("n_cols", n_cols), ("n_rows", n_rows)):
        if v is None and name == "n_rows":
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{name} must be an integer >= 1; got {v!r}.")
    h, w, c = m.shape
    if n_rows is None:
        n_rows = math.ceil(c / n_cols)
    tiles = np.moveaxis(m, -1, 0)
    lo = tiles.min(axis=(1, 2), keepdims=True)
    span = tiles.max(axis=(1, 2), keepdims=True) - lo
    tiles = np.where(span > 0, (tiles - lo) / np.where(span > 0, span, 1.0), 0.0)
    img = tile_gapped(tiles, n_rows, n_cols)
    per = 1.5 if max(n_rows, n_cols) <= 8 else 12.0 / max(n_rows, n_cols)
    fig = Figure(figsize=(n_cols * per, n_rows * per * h / w + 0.4), dpi=100,
                 layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(np.ma.masked_invalid(img), cmap=cmap_with_bad(cmap), vmin=0.0, vmax=1.0,
              interpolation="nearest")
    ax.set_axis_off()
    shown = min(c, n_rows * n_cols)
    title = f"{layer}: {shown} of {c} feature maps {h}x{w} (each on its own scale)"
    if image_name:
        title += f", {image_name}"
    ax.set_title(title, fontsize=10)
    return fig


__all__ = ["plot_activation_grid", "plot_feature_maps", "solid_channels"]
