"""Kernel and weight figures: kernel grids, weight histograms (the
Fashion-MNIST note's views); also the tiling helper the feature-map figure
shares. NumPy + matplotlib only."""

from __future__ import annotations

import math
from collections.abc import Mapping

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from jaxconvviz.errors import InputError
from jaxconvviz.plotting._common import cmap_with_bad, tile_gapped


def plot_kernels(kernels, *, vmin: float, vmax: float, n_cols: int = 16,
                 layer: str | None = None, title: str | None = None,
                 cmap: str = "viridis", colorbar: bool = True) -> Figure:
    """A grid of small conv kernels on one fixed colour scale.

    The note's ``plt.subplots(2, 16, figsize=(15, 2))`` with
    ``imshow(conv_weights[:, :, 0, k], vmin=-0.5, vmax=0.5)``: kernel ``k`` at
    row ``k // n_cols``, column ``k % n_cols``, drawn as one image with a
    1-pixel white gap between kernels, plus a colour bar (grey kernels).

    Args:
      kernels: ``(n, kh, kw)`` float weights (one input channel or a mean), or
        ``(n, kh, kw, 3)`` RGB display images in [0, 1] (see
        :func:`jaxconvviz.kernel_grid`); typically ``kg.kernels``.
      vmin, vmax: weight values at the ends of the colour scale (the note:
        -0.5, 0.5); for RGB kernels they are only quoted in the title.
      n_cols: kernels per row (the note: 16).
      layer: layer name for the title.
      title: full title (overrides the default built from ``layer``).
      cmap: colormap of grey kernels (matplotlib's default, viridis, as the
        note).
      colorbar: draw a colour bar (grey kernels only).

    Returns:
      A ``matplotlib.figure.Figure`` (not shown, not saved).
    """
    k = np.asarray(kernels, dtype=np.float32)
    rgb = k.ndim == 4 and k.shape[-1] == 3
    if not (k.ndim == 3 or rgb) or k.shape[0] < 1:
        raise InputError(
            f"kernels must be (n, kh, kw) or RGB (n, kh, kw, 3); got shape "
            f"{k.shape}."
        )
    if not (np.isfinite(vmin) and np.isfinite(vmax) and vmin < vmax):
        raise InputError(f"vmin must be < vmax; got vmin={vmin!r}, vmax={vmax!r}.")
    if isinstance(n_cols, bool) or not isinstance(n_cols, int) or n_cols < 1:
        raise InputError(f"n_cols must be an integer >= 1; got {n_cols!r}.")
    n = k.shape[0]
    n_cols = min(n_cols, n)
    n_rows = math.ceil(n / n_cols)
    per = min(0.9, 12.0 / n_rows)  # the note: ~0.9 in per kernel; cap height
    width = max(4.0, n_cols * per + (1.2 if colorbar and not rgb else 0.3))
    fig = Figure(figsize=(width, n_rows * per + 0.9), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    if rgb:
        ax.imshow(tile_gapped(k, n_rows, n_cols, fill=1.0), interpolation="nearest")
        scale = f"RGB, grey = 0, +-{vmax:.3g} saturates"
    else:
        im = ax.imshow(np.ma.masked_invalid(tile_gapped(k, n_rows, n_cols)),
                       cmap=cmap_with_bad(cmap), vmin=vmin, vmax=vmax,
                       interpolation="nearest")
        scale = f"vmin={vmin:.3g}, vmax={vmax:.3g}"
        if colorbar:
            fig.colorbar(im, ax=ax, shrink=0.9, label="weight")
    ax.set_axis_off()
    kh, kw = k.shape[1:3]
    if title is None:
        title = (f"{layer}: " if layer else "") + f"{n} kernels {kh}x{kw}\n{scale}"
    ax.set_title(title, fontsize=10)
    return fig


def plot_weight_histograms(weights_by_label: Mapping[str, object], *,
                           layer: str, bins: int = 60, layout: str = "overlay",
                           tail: float = 0.001) -> Figure:
    """Histograms of one layer's weights for several models (trained vs
    untrained), with each model's mean and std in the legend.

    The note's ``plt.hist(conv_weights.reshape(-1, 1))`` for a trained and an
    untrained model, on shared bin edges (the min..max over all models) so
    the shapes compare.

    Args:
      weights_by_label: ``{label: weights}``, any array shapes (flattened),
        e.g. ``{"trained": k1, "untrained": k0}``.
      layer: layer name for the title.
      bins: number of shared equal-width bins.
      tail: fraction of the weights left out at each end of the x range
        (they are counted in the edge bins and the title says how many);
        0 shows min..max.
      layout: ``"overlay"`` (one axes, translucent bars) or ``"side"`` (one
        axes per model, shared x axis).

    Returns:
      A ``matplotlib.figure.Figure``.
    """
    if not isinstance(weights_by_label, Mapping) or not weights_by_label:
        raise InputError(
            "weights_by_label must be a non-empty dict {label: weights}; got "
            f"{weights_by_label!r:.80}."
        )
    if layout not in ("overlay", "side"):
        raise InputError(f"layout must be 'overlay' or 'side'; got {layout!r}.")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise InputError(f"bins must be an integer >= 1; got {bins!r}.")
    if not 0.0 <= float(tail) < 0.5:
        raise InputError(f"tail must be in [0, 0.5); got {tail!r}.")
    data = {str(k): np.asarray(v, dtype=np.float64).ravel()
            for k, v in weights_by_label.items()}
    for k, v in data.items():
        if v.size == 0 or not np.isfinite(v).all():
            raise InputError(f"weights for {k!r} must be non-empty and finite.")
    # The x range covers the central 99.8% of all weights, not min..max: a
    # few outliers (block3_conv1 of VGG16 has one at +0.5 for a std of 0.02)
    # would squeeze the distribution into two bins. What lies outside is
    # counted in the edge bins and said in the title.
    everything = np.concatenate(list(data.values()))
    lo, hi = (float(q) for q in np.quantile(everything, [tail, 1.0 - tail]))
    if hi <= lo:
        lo, hi = float(everything.min()), float(everything.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.02 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    edges = np.linspace(lo, hi, bins + 1)
    outside = int(((everything < lo) | (everything > hi)).sum())
    m = len(data)
    if layout == "overlay":
        fig = Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        axes = [ax] * m
    else:
        fig = Figure(figsize=(4.0 * m, 3.6), dpi=100, layout="constrained")
        axes = list(np.atleast_1d(fig.subplots(1, m, sharex=True)))
    colors = matplotlib.colormaps["tab10"].colors
    for i, ((label, w), ax) in enumerate(zip(data.items(), axes, strict=True)):
        ax.hist(np.clip(w, lo, hi), bins=edges,
                alpha=0.55 if layout == "overlay" else 0.9,
                color=colors[i % 10], edgecolor=colors[i % 10],
                label=f"{label}: mean={w.mean():.4g}, std={w.std():.4g} "
                f"(n={w.size})")
        ax.axvline(0.0, color="0.3", lw=0.8, ls=":")
        ax.set_xlim(lo, hi)
        ax.set_xlabel("weight value")
        ax.set_ylabel("number of weights")
        if layout == "side":
            ax.set_title(label, fontsize=10)
            ax.legend(fontsize=8, loc="upper right")
    if layout == "overlay":
        axes[0].legend(fontsize=8, loc="upper right")
    if outside:
        fig.suptitle(
            f"{layer} weights ({outside} beyond [{lo:.3g}, {hi:.3g}] counted in "
            f"the edge bins; full range {everything.min():.3g}.."
            f"{everything.max():.3g})", fontsize=10)
        return fig
    fig.suptitle(f"{layer} weights", fontsize=11)
    return fig


__all__ = ["plot_kernels", "plot_weight_histograms"]
