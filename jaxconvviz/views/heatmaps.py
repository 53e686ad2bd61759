"""Heatmap display: smooth resizing, colour mapping and blending onto images.

NumPy in, NumPy out; uses matplotlib's colormap registry (no pyplot, no
figures) and Pillow's resampling. Imports no jax, so the package exports it
lazily.

The book (DLwP listing 5.44) writes ``heatmap * 0.4 + img`` with OpenCV: a
sum that exceeds 255 wherever the image is bright and then wraps or
saturates on save. :func:`overlay` blends instead --
``(1 - alpha) * image + alpha * colour`` -- a convex combination of two
[0, 255] images, rounded and clipped, so it never leaves [0, 255].
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from jaxconvviz.errors import InputError

_RESAMPLE = {
    "nearest": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
}

#: Colormaps suggested in error messages (any matplotlib name is accepted).
SUGGESTED_COLORMAPS = ("jet", "turbo", "viridis", "inferno", "magma", "plasma",
                       "hot", "gray")


def _colormap(name: str):
    import matplotlib

    if not isinstance(name, str) or name not in matplotlib.colormaps:
        raise InputError(
            f"colormap must be a matplotlib colormap name such as "
            f"{', '.join(SUGGESTED_COLORMAPS)}; got {name!r}."
        )
    return matplotlib.colormaps[name]


def _check_heatmaps(heatmaps) -> np.ndarray:
    a = np.array(heatmaps, dtype=np.float32)  # copy: never touch the caller's
    if a.ndim != 3:
        raise InputError(
            f"heatmaps must have shape (n, h, w); got {a.shape}"
            + (" (add a batch axis: h[None])" if a.ndim == 2 else "") + "."
        )
    if a.size == 0:
        raise InputError(f"heatmaps must not be empty; got shape {a.shape}.")
    if not np.isfinite(a).all():
        raise InputError("heatmaps contain NaN or inf values.")
    lo, hi = float(a.min()), float(a.max())
    if lo < -1e-5 or hi > 1 + 1e-5:
        raise InputError(
            f"heatmaps must lie in [0, 1] (as grad_cam returns them); got values "
            f"in [{lo:.4g}, {hi:.4g}]. Normalise first, e.g. h / h.max()."
        )
    return np.clip(a, 0.0, 1.0)


def resize_heatmaps(heatmaps, size: tuple[int, int], *,
                    interpolation: str = "bilinear") -> np.ndarray:
    """Resize ``(n, h, w)`` maps in [0, 1] to ``size = (H, W)``, smoothly.

    Pillow resampling on float32 ("F" mode) images with pixel-centre
    alignment, like OpenCV's default ``INTER_LINEAR`` the book uses; values
    are clipped back to [0, 1] (bicubic can overshoot).

    Args:
      heatmaps: float ``(n, h, w)`` in [0, 1].
      size: target ``(H, W)``.
      interpolation: ``"bilinear"`` (default), ``"bicubic"`` or ``"nearest"``.

    Returns:
      float32 ``(n, H, W)`` in [0, 1].
    """
    if interpolation not in _RESAMPLE:
        raise InputError(
            f"interpolation must be one of {sorted(_RESAMPLE)}; got "
            f"{interpolation!r}."
        )
    ok = (isinstance(size, (tuple, list)) and len(size) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                  and v > 0 for v in size))
    if not ok:
        raise InputError(f"size must be (H, W) with positive integers; got {size!r}.")
    a = _check_heatmaps(heatmaps)
    hh, ww = (int(v) for v in size)
    if a.shape[1:] == (hh, ww):
        return a
    out = np.empty((a.shape[0], hh, ww), np.float32)
    for i, m in enumerate(a):
        img = Image.fromarray(np.ascontiguousarray(m))  # float32 -> mode "F"
        out[i] = np.asarray(img.resize((ww, hh), _RESAMPLE[interpolation]))
    return np.clip(out, 0.0, 1.0)


def colorize(heatmaps, *, colormap: str = "jet") -> np.ndarray:
    """Colour ``(n, h, w)`` maps in [0, 1] -> uint8 RGB ``(n, h, w, 3)``."""
    cmap = _colormap(colormap)
    a = _check_heatmaps(heatmaps)
    rgb = cmap(a)[..., :3]  # float RGBA in [0, 1] -> drop alpha
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def overlay(images, heatmaps, *, alpha: float = 0.4, colormap: str = "jet",
            interpolation: str = "bilinear") -> np.ndarray:
    """Blend colour-mapped heatmaps onto images (DLwP listing 5.44, clipped).

    Each heatmap is resized to its image's size with smooth interpolation,
    coloured with ``colormap`` (the book's JET by default) and blended::

        out = (1 - alpha) * image + alpha * colour     # then round, clip

    ``alpha`` is the heatmap's weight (the book's 0.4 "intensity"); unlike
    the book's ``heatmap * 0.4 + img`` the result never exceeds 255.

    Args:
      images: RGB ``(n, H, W, 3)``, or grey ``(n, H, W)`` / ``(n, H, W, 1)``
        (drawn as grey RGB), uint8 or float in [0, 255] (values outside are
        clipped), e.g. the original photo at full resolution. A 3-D array
        whose last axis is 3 is an RGB image missing its batch axis (error).
      heatmaps: float ``(n, h, w)`` in [0, 1], e.g. from
        :func:`jaxconvviz.grad_cam`; any ``h, w``.
      alpha: heatmap weight in [0, 1]; 0 returns the image, 1 the colour map.
      colormap: a matplotlib colormap name (``"jet"``, ``"turbo"``,
        ``"viridis"``, ...).
      interpolation: heatmap resizing, ``"bilinear"`` (default, as OpenCV's
        ``cv2.resize`` in the book), ``"bicubic"`` or ``"nearest"``.

    Returns:
      uint8 NumPy array ``(n, H, W, 3)``.

    Raises:
      ValueError: bad shapes, ``n`` mismatch, ``alpha`` outside [0, 1],
        heatmaps outside [0, 1] or non-finite, unknown colormap.
    """
    cmap = _colormap(colormap)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating,
                                                          np.integer)) or not (
            0.0 <= float(alpha) <= 1.0):
        raise InputError(f"alpha must be a number in [0, 1]; got {alpha!r}.")
    img = np.array(images, dtype=np.float32)
    if img.ndim == 3 and img.shape[-1] != 3:  # grey (n, H, W)
        img = img[..., None]
    if img.ndim == 4 and img.shape[-1] == 1:  # grey (n, H, W, 1)
        img = np.repeat(img, 3, axis=-1)
    if img.ndim != 4 or img.shape[-1] != 3:
        raise InputError(
            f"images must have shape (n, H, W, 3), or (n, H, W) / (n, H, W, 1) "
            f"for grey images; got {img.shape}"
            + (" (add a batch axis: x[None])" if img.ndim == 3 else "") + "."
        )
    if not np.isfinite(img).all():
        raise InputError("images contain NaN or inf values.")
    maps = _check_heatmaps(heatmaps)
    if maps.shape[0] != img.shape[0]:
        raise InputError(
            f"images and heatmaps must hold the same number of items; got "
            f"{img.shape[0]} images and {maps.shape[0]} heatmaps."
        )
    maps = resize_heatmaps(maps, tuple(img.shape[1:3]), interpolation=interpolation)
    colour = cmap(maps)[..., :3].astype(np.float32) * 255.0
    a = float(alpha)
    out = (1.0 - a) * np.clip(img, 0.0, 255.0) + a * colour
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


__all__ = ["overlay", "colorize", "resize_heatmaps", "SUGGESTED_COLORMAPS"]
