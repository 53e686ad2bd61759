"""Method comparison figures: heatmaps of several methods side by side, and a
bar chart of their faithfulness metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from jaxconvviz.errors import InputError


def plot_methods(images_u8, overlays_u8, labels: Sequence[str], *,
                 row_titles: Sequence[str] | None = None,
                 title: str | None = None) -> Figure:
    """A grid: one row per image -- the image, then one overlay per method.

    Args:
      images_u8: uint8 RGB ``(n, H, W, 3)`` (or one image ``(H, W, 3)``).
      overlays_u8: uint8 ``(n, m, H', W', 3)`` (or ``(m, H', W', 3)``):
        heatmaps of ``m`` methods blended onto the images
        (:func:`jaxconvviz.overlay`).
      labels: ``m`` panel titles (e.g. ``"Grad-CAM\\ndel. AUC 0.12"``), or
        ``n * m`` of them, row by row.
      row_titles: ``n`` titles of the image panels (e.g. class and score).
      title: figure title.

    Returns:
      A ``matplotlib.figure.Figure``.
    """
    imgs = np.asarray(images_u8)
    ovs = np.asarray(overlays_u8)
    if imgs.ndim == 3:
        imgs, ovs = imgs[None], ovs[None]
    if (imgs.ndim != 4 or imgs.shape[-1] != 3 or ovs.ndim != 5
            or ovs.shape[0] != imgs.shape[0] or ovs.shape[-1] != 3
            or imgs.dtype != np.uint8 or ovs.dtype != np.uint8):
        raise InputError(
            f"images_u8 must be uint8 (n, H, W, 3) and overlays_u8 uint8 (n, m, "
            f"H, W, 3); got {imgs.dtype} {imgs.shape} and {ovs.dtype} {ovs.shape}.")
    n, m = ovs.shape[:2]
    labels = list(labels)
    if len(labels) == m:
        labels = labels * n
    if len(labels) != n * m:
        raise InputError(f"labels must hold {m} or {n * m} titles; got {len(labels)}.")
    if row_titles is not None and len(row_titles) != n:
        raise InputError(f"row_titles must hold {n} titles; got {len(row_titles)}.")
    fig = Figure(figsize=(1.9 * (m + 1), 2.25 * n + 0.5), dpi=100,
                 layout="constrained")
    axes = np.asarray(fig.subplots(n, m + 1, squeeze=False))
    for i in range(n):
        axes[i, 0].imshow(imgs[i])
        axes[i, 0].set_title(row_titles[i] if row_titles else "image", fontsize=8)
        for j in range(m):
            axes[i, j + 1].imshow(ovs[i, j])
            axes[i, j + 1].set_title(labels[i * m + j], fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_metrics(table: Mapping[str, Mapping[str, float]], *,
                 better: Mapping[str, str] | None = None,
                 title: str | None = None) -> Figure:
    """Bar charts of metrics per method, one panel per metric, each bar
    labelled with its value. A metric whose name ends in ``%`` is drawn on a
    0-100 axis, so an all-zero panel reads as 0 %, not as an empty plot.

    Args:
      table: ``{method: {metric: value}}`` (every method the same metrics).
      better: optional ``{metric: "lower" | "higher"}`` shown in the panel
        titles.
      title: figure title.
    """
    methods = list(table)
    if not methods:
        raise InputError("table must hold at least one method; got none.")
    metrics = list(table[methods[0]])
    for mth in methods:
        if list(table[mth]) != metrics:
            raise InputError(
                f"every method must have the metrics {metrics}; {mth!r} has "
                f"{list(table[mth])}.")
    ncols = 2 if len(metrics) > 2 else len(metrics)
    nrows = -(-len(metrics) // ncols)
    fig = Figure(figsize=(max(3.0, 0.4 * len(methods) + 1.2) * ncols,
                          3.6 * nrows), dpi=100, layout="constrained")
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    x = np.arange(len(methods))
    for ax, met in zip(axes, metrics, strict=False):
        vals = [float(table[mth][met]) for mth in methods]
        bars = ax.bar(x, vals, color="C0")
        ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=1)
        lo, hi = min(0.0, *vals), max(0.0, *vals)
        if met.rstrip().endswith("%"):
            hi = max(hi, 100.0)
        elif hi == lo:
            hi = lo + 1.0
        ax.set_ylim(lo - 0.1 * (hi - lo) * (lo < 0), hi + 0.12 * (hi - lo))
        ax.set_xticks(x, methods, rotation=60, ha="right", fontsize=8)
        hint = f" ({better[met]} is better)" if better and met in better else ""
        ax.set_title(met + hint, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


__all__ = ["plot_methods", "plot_metrics"]
