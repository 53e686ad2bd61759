"""Figures of the direction techniques: the activation factorization of
Olah et al. 2018 (the image, a colour per group over it, each group's
feature visualization and spatial map) and the activation atlas."""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from jaxconvviz.errors import InputError
from jaxconvviz.plotting._common import new_figure


def group_colors(n: int) -> np.ndarray:
    """float ``(n, 3)`` in [0, 1]: one distinct colour per group (tab10, then
    tab20)."""
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return np.asarray([cmap(i % cmap.N)[:3] for i in range(n)], np.float32)


def group_overlay(maps) -> np.ndarray:
    """float RGBA ``(h', w', 4)``: each position in the colour of its
    strongest group (maps scaled to their own peak), opacity the square
    root of that scaled value."""
    m = np.asarray(maps, np.float32)
    if m.ndim != 3:
        raise InputError(f"maps must be (G, h, w); got shape {m.shape}.")
    peak = m.reshape(m.shape[0], -1).max(1)
    s = m / np.where(peak > 0, peak, 1.0)[:, None, None]
    col = group_colors(m.shape[0])
    rgb = col[s.argmax(0)]
    alpha = np.sqrt(np.clip(s.max(0), 0, 1)) * 0.8
    return np.concatenate([rgb, alpha[..., None]], -1)


def plot_factorization(image_u8, maps, images_u8=None, *, attribution=None,
                       title: str | None = None) -> Figure:
    """The factorization figure: the image; the image with each position
    coloured by its groups; then per group its feature visualization
    (framed in the group's colour, with its attribution when given) and its
    spatial map.

    Args:
      image_u8: uint8 RGB ``(H, W, 3)``.
      maps: float ``(G, h', w')`` group maps
        (:attr:`~jaxconvviz.Factorization.maps`).
      images_u8: uint8 ``(G, s, s, 3)`` group renderings, or None.
      attribution: float ``(G,)``, or None.
      title: figure title.
    """
    img = np.asarray(image_u8)
    m = np.asarray(maps, np.float32)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise InputError(f"image_u8 must be (H, W, 3); got {img.shape}.")
    g = m.shape[0]
    col = group_colors(g)
    n_cols = max(g, 2)
    rows = 3 if images_u8 is not None else 2
    fig = new_figure(150 * n_cols, 160 * rows + 40)
    gs = fig.add_gridspec(rows, n_cols)
    h, w = img.shape[:2]
    ax = fig.add_subplot(gs[0, 0])
    ax.imshow(img)
    ax.set_title("image", fontsize=9)
    ax.axis("off")
    ax = fig.add_subplot(gs[0, 1])
    ax.imshow(img)
    ax.imshow(group_overlay(m), extent=(-0.5, w - 0.5, h - 0.5, -0.5),
              interpolation="bilinear")
    ax.set_title("groups", fontsize=9)
    ax.axis("off")
    r = 1
    if images_u8 is not None:
        ims = np.asarray(images_u8)
        for k in range(g):
            ax = fig.add_subplot(gs[1, k])
            ax.imshow(ims[k])
            ax.set_xticks([])
            ax.set_yticks([])
            for sp in ax.spines.values():
                sp.set_edgecolor(col[k])
                sp.set_linewidth(4)
            t = f"group {k}"
            if attribution is not None:
                t += f"\nattr {float(attribution[k]):+.3g}"
            ax.set_title(t, fontsize=8, color=col[k])
        r = 2
    for k in range(g):
        ax = fig.add_subplot(gs[r, k])
        ax.imshow(m[k], cmap="magma")
        ax.set_title(f"map {k}", fontsize=8, color=col[k])
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9, wspace=0.1,
                        hspace=0.35)
    return fig


def plot_activation_atlas(atlas_u8, *, grid: int, title: str | None = None,
                          lines: bool = True) -> Figure:
    """The composed atlas image (:meth:`~jaxconvviz.ActivationAtlas.compose`),
    with faint grid lines between cells."""
    a = np.asarray(atlas_u8)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise InputError(f"atlas_u8 must be (H, W, 3); got {a.shape}.")
    side = max(min(a.shape[0], 1200), 300)
    fig = new_figure(side, side + (30 if title else 0))
    ax = fig.add_axes((0, 0, 1, side / (side + (30 if title else 0))))
    ax.imshow(a, interpolation="lanczos")
    if lines:
        step = a.shape[0] / grid
        for i in range(1, grid):
            ax.axhline(i * step - 0.5, color="0.85", lw=0.4)
            ax.axvline(i * step - 0.5, color="0.85", lw=0.4)
    ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10, y=0.995)
    return fig


__all__ = ["group_colors", "group_overlay", "plot_factorization",
           "plot_activation_atlas"]
