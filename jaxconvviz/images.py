"""Image file IO through Pillow, NumPy in and out (no jax).

``load_img`` mirrors ``keras.utils.load_img`` + ``img_to_array``: RGB float32
in [0, 255], resized with Keras' default *nearest* interpolation and no
aspect-ratio crop, so published Keras probabilities reproduce.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxconvviz._atomic import atomic_write
from jaxconvviz.errors import InputError, MissingFileError

_INTERPOLATIONS = {
    "nearest": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS,
    "box": Image.BOX,
    "hamming": Image.HAMMING,
}

#: Photos shipped with the package (see ``data/LICENSE-NOTES.md``).
DATA_DIR = Path(__file__).parent / "data"
CAT_PHOTO = DATA_DIR / "chelsea.png"
ELEPHANT_PHOTO = DATA_DIR / "african_elephants.jpg"


_COLOR_MODES = {"rgb": "RGB", "grayscale": "L"}


def check_image_path(path, *, name: str = "image") -> Path:
    """``path`` as a Path if it names an existing file, else an error that
    says what it is instead (missing, or a folder)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(
            f"{name} must be an image file (PNG, JPEG, ...); {str(path)!r} is a "
            "folder.")
    if not path.is_file():
        raise MissingFileError(f"{name} file not found: {str(path)!r}.")
    return path


def load_img(path, *, target_size: tuple[int, int] | None = None,
             interpolation: str = "nearest", color_mode: str = "rgb") -> np.ndarray:
    """Read an image file as float32 in [0, 255], shape ``(h, w, 3)`` (RGB).

    Args:
      path: an image file Pillow can read (PNG, JPEG, ...). Grey, palette and
        RGBA images are converted to RGB (alpha dropped), as Keras does.
      target_size: ``(h, w)`` to resize to, or None to keep the file's size.
      interpolation: Keras' default ``"nearest"``; also ``bilinear``,
        ``bicubic``, ``lanczos``, ``box``, ``hamming``.
      color_mode: ``"rgb"`` (default) or ``"grayscale"`` (Pillow's ITU-R 601
        luma, shape ``(h, w, 1)``), as Keras' ``load_img``.

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: unreadable image, bad ``target_size`` or ``interpolation``.
    """
    path = Path(path)
    if interpolation not in _INTERPOLATIONS:
        raise InputError(
            f"interpolation must be one of {sorted(_INTERPOLATIONS)}; got "
            f"{interpolation!r}."
        )
    if color_mode not in _COLOR_MODES:
        raise InputError(
            f"color_mode must be one of {sorted(_COLOR_MODES)}; got {color_mode!r}."
        )
    if target_size is not None:
        ok = (isinstance(target_size, (tuple, list)) and len(target_size) == 2
              and all(isinstance(v, (int, np.integer)) and v > 0
                      for v in target_size))
        if not ok:
            raise InputError(
                f"target_size must be (h, w) with positive integers or None; got "
                f"{target_size!r}."
            )
    check_image_path(path)
    try:
        with Image.open(path) as img:
            img = img.convert("RGB").convert(_COLOR_MODES[color_mode])
            if target_size is not None:
                h, w = (int(v) for v in target_size)
                if img.size != (w, h):  # Pillow sizes are (w, h)
                    img = img.resize((w, h), _INTERPOLATIONS[interpolation])
            a = np.asarray(img, dtype=np.float32).copy()
            return a[..., None] if a.ndim == 2 else a
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise InputError(f"{str(path)!r} is not a readable image: {e}") from None


def to_uint8(x) -> np.ndarray:
    """Clip to [0, 255] and round to uint8 (a copy)."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float32)), 0, 255).astype(np.uint8)


def save_image(array_u8, path) -> Path:
    """Write a uint8 ``(h, w)`` or ``(h, w, 3)`` array as PNG, atomically."""
    a = np.asarray(array_u8)
    if a.dtype != np.uint8 or a.ndim not in (2, 3):
        raise InputError(
            f"array_u8 must be uint8 (h, w) or (h, w, 3); got {a.dtype} "
            f"{a.shape}."
        )
    return atomic_write(path, lambda fh: Image.fromarray(a).save(fh, format="PNG"))


__all__ = ["load_img", "to_uint8", "save_image", "CAT_PHOTO", "ELEPHANT_PHOTO"]
