"""Grad-CAM figure: the image, the raw heatmap (with colour bar), the overlay."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from jaxconvviz.errors import InputError


def _format_predictions(predictions) -> str:
    """'name 92.5%, name 7.0%' from (name, score) or (wnid, name, score) rows."""
    parts = []
    for row in predictions:
        row = tuple(row)
        if len(row) not in (2, 3):
            raise InputError(
                "predictions must be (label, score) or (wnid, label, score) "
                f"rows; got {row!r}."
            )
        label, score = row[-2], float(row[-1])
        parts.append(f"{label} {score:.3g}" if not 0 <= score <= 1
                     else f"{label} {100 * score:.1f}%")
    return ", ".join(parts)


def plot_gradcam(image_u8, heatmap, overlay_u8, *, title: str | None = None,
                 predictions: Sequence[tuple] | None = None,
                 colormap: str = "jet") -> Figure:
    """Three panels: the image, the heatmap (``matshow``-style, with a colour
    bar, as DLwP listing 5.43 shows it) and the overlay (listing 5.44).

    Args:
      image_u8: the input image, uint8 RGB ``(H, W, 3)`` (any size).
      heatmap: one Grad-CAM map, float ``(h, w)`` in [0, 1], at the layer's
        own resolution (e.g. 14x14 for ``block5_conv3``).
      overlay_u8: uint8 RGB ``(H', W', 3)`` from :func:`jaxconvviz.overlay`.
      title: figure title, e.g. ``"Grad-CAM: African_elephant (386), logit
        21.3"``; None gives ``"Grad-CAM"``.
      predictions: optional top classes shown under the title, rows of
        ``(label, score)`` or ``(wnid, label, score)`` (the rows of
        :func:`jaxconvviz.decode_predictions`); scores in [0, 1] print as
        percentages.
      colormap: colormap of the heatmap panel (match the overlay's).

    Returns:
      A ``matplotlib.figure.Figure`` (not shown, not saved).
    """
    img = np.asarray(image_u8)
    hm = np.asarray(heatmap, dtype=np.float32)
    ov = np.asarray(overlay_u8)
    for name, a in (("image_u8", img), ("overlay_u8", ov)):
        if a.ndim != 3 or a.shape[-1] != 3 or a.dtype != np.uint8:
            raise InputError(
                f"{name} must be a uint8 RGB image (H, W, 3); got {a.dtype} "
                f"{a.shape}."
            )
    if hm.ndim != 2:
        raise InputError(f"heatmap must be one map (h, w); got shape {hm.shape}.")
    fig = Figure(figsize=(12.0, 4.4), dpi=100, layout="constrained")
    axes = fig.subplots(1, 3)
    axes[0].imshow(img)
    axes[0].set_title(f"image {img.shape[1]}x{img.shape[0]}")
    im = axes[1].imshow(hm, cmap=colormap, vmin=0.0, vmax=1.0,
                        interpolation="nearest")
    axes[1].set_title(f"heatmap {hm.shape[1]}x{hm.shape[0]}")
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
    axes[2].imshow(ov)
    axes[2].set_title("overlay")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    text = title if title is not None else "Grad-CAM"
    if predictions:
        text += "\n" + _format_predictions(predictions)
    fig.suptitle(text)
    return fig


__all__ = ["plot_gradcam"]
