"""Image encoding for the report (Pillow): uint8 arrays -> compressed bytes.

Photos, heatmap overlays and activation grids are lossy (JPEG); pattern tiles
are PNG or WebP, whichever is smaller (a smooth 64 px tile is often smaller
as lossless PNG; a noisy one as WebP). Nothing here writes files.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from jaxconvviz.errors import InputError

#: JPEG quality of photos, overlays, patches and activation grids.
JPEG_QUALITY = 82
#: WebP quality of pattern tiles (when smaller than their PNG).
WEBP_QUALITY = 85


def _image(a) -> Image.Image:
    a = np.asarray(a)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1]
                                                      not in (1, 3)):
        raise InputError(f"image must be uint8 (h, w), (h, w, 1) or (h, w, 3); got "
                         f"{a.dtype} {a.shape}.")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    return Image.fromarray(np.ascontiguousarray(a))


def jpeg(a, *, quality: int = JPEG_QUALITY) -> bytes:
    """``a`` (uint8 RGB or grey) as JPEG bytes (4:2:0, optimised)."""
    buf = io.BytesIO()
    _image(a).save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def png(a) -> bytes:
    """``a`` (uint8) as optimised PNG bytes (lossless)."""
    buf = io.BytesIO()
    _image(a).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def tile(a) -> tuple[bytes, str]:
    """A pattern tile as ``(bytes, extension)``: PNG or WebP, the smaller."""
    p = png(a)
    buf = io.BytesIO()
    _image(a).save(buf, format="WEBP", quality=WEBP_QUALITY, method=4)
    w = buf.getvalue()
    return (p, "png") if len(p) <= len(w) else (w, "webp")


def resize(a, hw: tuple[int, int], *, smooth: bool = True) -> np.ndarray:
    """uint8 image resized to ``(h, w)``: box filter when shrinking and
    ``smooth``, nearest neighbour otherwise (kernels, tiny fields stay crisp)."""
    im = _image(a)
    h, w = (int(v) for v in hw)
    if im.size == (w, h):
        return np.asarray(im)
    shrink = w < im.size[0] or h < im.size[1]
    mode = Image.BOX if (smooth and shrink) else Image.NEAREST
    return np.asarray(im.resize((w, h), mode))


def fit_width(a, max_width: int) -> np.ndarray:
    """Shrink a uint8 image to at most ``max_width`` columns, keeping aspect."""
    a = np.asarray(a)
    h, w = a.shape[:2]
    if w <= max_width:
        return a
    return resize(a, (max(1, round(h * max_width / w)), max_width))


__all__ = ["jpeg", "png", "tile", "resize", "fit_width"]
