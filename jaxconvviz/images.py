"""Image file IO through Pillow, NumPy in and out (no jax).

``load_img`` mirrors ``keras.utils.load_img`` + ``img_to_array``: RGB float32
in [0, 255], resized with Keras' default *nearest* interpolation and no
aspect-ratio crop, so published Keras probabilities reproduce.

Hostile files: the pixel count is checked from the header before any pixel
is decoded, against :data:`MAX_IMAGE_PIXELS` (this package's own limit,
``$JAXCONVVIZ_MAX_IMAGE_PIXELS`` or ``max_pixels=``; Pillow's global
decompression-bomb limit is left as the caller set it and its warning never
shows). 16-bit images are scaled to 8 bits, not clipped.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxconvviz._atomic import atomic_write
from jaxconvviz.errors import InputError, InputWarning, MissingFileError
from jaxconvviz.pixels import PixelRangeWarning, check_pixel_range

#: Default largest image :func:`load_img` decodes, in pixels (50 megapixels:
#: 600 MB as float32 RGB). Override with ``$JAXCONVVIZ_MAX_IMAGE_PIXELS`` or
#: ``max_pixels=``.
MAX_IMAGE_PIXELS = 50_000_000
#: Environment variable that overrides :data:`MAX_IMAGE_PIXELS`.
MAX_PIXELS_ENV = "JAXCONVVIZ_MAX_IMAGE_PIXELS"
#: Images with a side under this many pixels get an :class:`InputWarning`.
MIN_SIDE = 32
# Pillow modes of 16/32-bit integer greyscale (PNG 16-bit grey opens as I;16).
_WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_PIL_LIMIT = threading.Lock()

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


def max_image_pixels(max_pixels: int | None = None) -> int:
    """The pixel limit: ``max_pixels``, else ``$JAXCONVVIZ_MAX_IMAGE_PIXELS``,
    else :data:`MAX_IMAGE_PIXELS`."""
    if max_pixels is None:
        env = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not env:
            return MAX_IMAGE_PIXELS
        try:
            max_pixels = int(env.replace("_", ""))
        except ValueError:
            max_pixels = 0
        if max_pixels < 1:
            raise InputError(f"${MAX_PIXELS_ENV} must be a positive int (pixels); "
                             f"got {env!r}.")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int | np.integer) \
            or max_pixels < 1:
        raise InputError(f"max_pixels must be a positive int or None; got "
                         f"{max_pixels!r}.")
    return int(max_pixels)


def _open_checked(path: Path, limit: int):
    """``Image.open`` (header only) with this package's pixel limit instead of
    Pillow's: no DecompressionBombWarning/Error, a one-line InputError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except Image.DecompressionBombError:
            # Over twice Pillow's limit: read the header without the limit to
            # name the size (Pillow's limit is a module global).
            with _PIL_LIMIT:
                saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    img = Image.open(path)
                finally:
                    Image.MAX_IMAGE_PIXELS = saved
    return _check_limit(img, path, limit)


def _open_bytes_checked(data: bytes, path: Path, limit: int):
    """:func:`_open_checked` for a file already read into memory, safe in
    worker threads: no ``warnings.catch_warnings`` (it swaps process-wide
    state and is not thread-safe); Pillow's own limit is switched off only
    while the header is parsed from memory, under a lock."""
    with _PIL_LIMIT:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            img = Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    return _check_limit(img, path, limit)


def _check_limit(img, path: Path, limit: int):
    w, h = img.size
    if w * h > limit:
        img.close()
        raise InputError(
            f"{str(path)!r} is {w}x{h} = {w * h:,} pixels, over the limit of "
            f"{limit:,}; refused before decoding (downscale it, or raise the limit "
            f"with ${MAX_PIXELS_ENV} or max_pixels=).")
    return img


def _to_8bit(img) -> Image.Image:
    """16-bit greyscale scaled to 8 bits (65535 -> 255), not clipped; 32-bit
    integer greyscale outside [0, 65535] stretched from its own min..max."""
    if img.mode not in _WIDE_GREY:
        return img
    a = np.asarray(img).astype(np.float64)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if lo >= 0 and hi <= 65535:
        a = a * (255.0 / 65535.0)
    else:
        a = (a - lo) * (255.0 / max(hi - lo, 1.0))
    return Image.fromarray(np.rint(a).astype(np.uint8), mode="L")


def load_img(path, *, target_size: tuple[int, int] | None = None,
             interpolation: str = "nearest", color_mode: str = "rgb",
             max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as float32 in [0, 255], shape ``(h, w, 3)`` (RGB).

    Args:
      path: an image file Pillow can read (PNG, JPEG, ...). Grey, palette and
        RGBA images are converted to RGB (alpha dropped), as Keras does.
      target_size: ``(h, w)`` to resize to, or None to keep the file's size.
      interpolation: Keras' default ``"nearest"``; also ``bilinear``,
        ``bicubic``, ``lanczos``, ``box``, ``hamming``.
      color_mode: ``"rgb"`` (default) or ``"grayscale"`` (Pillow's ITU-R 601
        luma, shape ``(h, w, 1)``), as Keras' ``load_img``.
      max_pixels: the largest image decoded (None: ``$JAXCONVVIZ_MAX_IMAGE_PIXELS``
        or :data:`MAX_IMAGE_PIXELS`, 50 million); checked from the header.

    16-bit images are scaled to 8 bits (Pillow already does so for 16-bit
    RGB; greyscale ``I;16`` is divided by 257). An image with a side under
    :data:`MIN_SIDE` px gets an :class:`~jaxconvviz.errors.InputWarning`
    (naming the size it is upsampled to, if any).

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: unreadable image, over ``max_pixels``, bad ``target_size``
        or ``interpolation``.
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
    a, _ = _read(path, target_size, interpolation, color_mode,
                 max_image_pixels(max_pixels), warn_tiny=True)
    return a.astype(np.float32)


def read_image_u8(path, *, target_size: tuple[int, int] | None = None,
                  interpolation: str = "nearest",
                  max_pixels: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """``(uint8 (h, w, 3) RGB, (orig_h, orig_w))``: :func:`load_img`'s pixels
    (same conversions, same resize rule, same pixel limit) as uint8, plus
    the file's own size; no tiny-image warning, no warning at all. For the
    dataset loader: safe to call from many threads at once (the file is read
    whole first, then parsed from memory).

    Raises:
      InputError: unreadable image or over the pixel limit (one line).
      OSError: the file cannot be read.
    """
    path = Path(path)
    if interpolation not in _INTERPOLATIONS:
        raise InputError(
            f"interpolation must be one of {sorted(_INTERPOLATIONS)}; got "
            f"{interpolation!r}.")
    limit = max_image_pixels(max_pixels)
    data = path.read_bytes()  # OSError (missing, a folder) is the caller's
    return _read(path, target_size, interpolation, "rgb", limit, warn_tiny=False,
                 data=data)


def _read(path: Path, target_size, interpolation: str, color_mode: str, limit: int,
          *, warn_tiny: bool, data: bytes | None = None
          ) -> tuple[np.ndarray, tuple[int, int]]:
    try:
        with (_open_checked(path, limit) if data is None
              else _open_bytes_checked(data, path, limit)) as img:
            orig = (img.size[1], img.size[0])
            img = _to_8bit(img)
            if img.mode != "RGB":  # (convert to the same mode is a full copy)
                img = img.convert("RGB")
            if color_mode != "rgb":
                img = img.convert(_COLOR_MODES[color_mode])
            if warn_tiny:
                _warn_tiny(path, img.size, target_size)
            if target_size is not None:
                h, w = (int(v) for v in target_size)
                if img.size != (w, h):  # Pillow sizes are (w, h)
                    img = img.resize((w, h), _INTERPOLATIONS[interpolation])
            a = np.array(img, dtype=np.uint8)
            return (a[..., None] if a.ndim == 2 else a), orig
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if isinstance(e, InputError):
            raise
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, UnidentifiedImageError):  # its text repeats the path
            text = "cannot identify image file (not a format Pillow reads)"
        raise InputError(f"{str(path)!r} is not a readable image: {text}") from None


def _warn_tiny(path: Path, size: tuple[int, int], target_size) -> None:
    w, h = size
    if min(w, h) >= MIN_SIDE:
        return
    if target_size is not None and (int(target_size[0]) > h or int(target_size[1]) > w):
        what = (f"upsampled to {int(target_size[1])}x{int(target_size[0])}; the "
                "result shows the interpolation more than the image")
    else:
        what = "the network sees very few pixels; results mean little"
    warnings.warn(f"{str(path)!r} is only {w}x{h} px (under {MIN_SIDE} on a side): "
                  f"{what}.", InputWarning, stacklevel=4)


def to_uint8(x) -> np.ndarray:
    """Clip to [0, 255] and round to uint8 (a copy)."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float32)), 0, 255).astype(np.uint8)


def png_writer(array_u8):
    """A ``write(fh)`` that writes a uint8 ``(h, w)`` or ``(h, w, 3)`` array
    as PNG (for :func:`jaxconvviz._atomic.atomic_write`); checked now."""
    a = np.asarray(array_u8)
    if a.dtype != np.uint8 or a.ndim not in (2, 3):
        raise InputError(
            f"array_u8 must be uint8 (h, w) or (h, w, 3); got {a.dtype} "
            f"{a.shape}."
        )
    return lambda fh: Image.fromarray(a).save(fh, format="PNG")


def save_image(array_u8, path) -> Path:
    """Write a uint8 ``(h, w)`` or ``(h, w, 3)`` array as PNG, atomically."""
    return atomic_write(path, png_writer(array_u8))


__all__ = [
    "load_img", "read_image_u8", "to_uint8", "save_image", "png_writer", "CAT_PHOTO",
    "ELEPHANT_PHOTO", "MAX_IMAGE_PIXELS", "MAX_PIXELS_ENV", "MIN_SIDE",
    "max_image_pixels", "check_pixel_range", "PixelRangeWarning",
]
