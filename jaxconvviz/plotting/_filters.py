"""Filter-atlas figure (book figure 5.30). NumPy + matplotlib only."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from jaxconvviz.errors import InputError


def plot_atlas(grid_u8, *, layer: str, n_filters: int,
               source: str = "VGG16") -> Figure:
    """A grid of filter patterns with a title naming the layer and the weights.

    Drawn at one figure pixel per grid pixel (``dpi=100``, plus a title strip),
    no ticks, nearest-neighbour, so the patterns stay sharp when saved.

    Args:
      grid_u8: uint8 ``(H, W, 3)`` (or ``(H, W)``) from
        :func:`jaxconvviz.atlas_grid`.
      layer: layer name the patterns maximise, e.g. ``"block3_conv1"``.
      n_filters: number of patterns in the grid (shown in the title).
      source: what the weights are, e.g. ``"VGG16 with HED weights
        (ImageNet-initialised, fine-tuned for edge detection)"``.

    Returns:
      A ``matplotlib.figure.Figure`` titled ``"Filter patterns for layer
      <layer> (<n> filters)"`` with ``source`` on a second line.
    """
    g = np.asarray(grid_u8)
    if g.dtype != np.uint8 or g.ndim not in (2, 3) or g.size == 0 or (
            g.ndim == 3 and g.shape[-1] not in (1, 3)):
        raise InputError(
            f"grid_u8 must be a uint8 (H, W, 3) or (H, W) image; got {g.dtype} "
            f"{g.shape}."
        )
    if g.ndim == 3 and g.shape[-1] == 1:
        g = g[..., 0]
    H, W = g.shape[:2]
    width_in = max(W, 320) / 100
    title_in = 0.6
    fig = Figure(figsize=(width_in, H / 100 * width_in / (W / 100) + title_in),
                 dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(g, cmap="gray" if g.ndim == 2 else None, vmin=0, vmax=255,
              interpolation="nearest", aspect="equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    s = "" if int(n_filters) == 1 else "s"
    ax.set_title(f"Filter patterns for layer {layer} ({int(n_filters)} filter{s})\n"
                 f"{source}", fontsize=10)
    return fig


__all__ = ["plot_atlas"]
