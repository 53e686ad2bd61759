"""Type aliases used in public signatures (annotations only; no package imports).

Pixel domains are part of the name:

* ``ImagesRGB``: RGB float32 in [0, 255], shape ``(n, h, w, 3)``.
* ``ImagesCaffe``: BGR with the ImageNet mean pixel subtracted (Keras "caffe").
* ``ImagesU8``: display images, uint8 in [0, 255].
"""

from __future__ import annotations

from typing import Any

import jax
from jaxtyping import Array, Float, Int, UInt8

PRNGKey = jax.Array
Params = dict[str, dict[str, Any]]

ImagesRGB = Float[Array, "n h w 3"]
ImagesCaffe = Float[Array, "n h w c"]
ImagesU8 = UInt8[Array, "n h w 3"]
Heatmaps = Float[Array, "n h w"]
ClassIndex = Int[Array, " n"]

__all__ = [
    "PRNGKey",
    "Params",
    "ImagesRGB",
    "ImagesCaffe",
    "ImagesU8",
    "Heatmaps",
    "ClassIndex",
]
