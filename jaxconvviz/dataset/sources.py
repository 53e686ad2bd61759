"""Dataset sources: what ``source=`` may be, in one deterministic order.

:func:`open_source` turns a folder, a glob, a list of paths, a ``.txt`` file
of paths, an image array or a ``grain`` ``RandomAccessDataSource`` into a
:class:`DataSource`: a fixed sequence of images whose position is the
*global image index* used everywhere in the dataset results. :func:`decode`
reads image ``i`` resized to the model's input the way Keras'
``load_img(target_size=...)`` does (see :data:`RESIZE_RULE`) and returns the
:class:`Transform` that maps model-input pixels back to the original file.

Order:
  - folder: every file under it (recursively; symlinks to files followed,
    symlinks to folders not, so no loops; hidden files and folders -- names
    starting with ``.`` -- skipped) whose suffix is one of
    :data:`IMAGE_SUFFIXES` (any case), sorted by the path relative to the
    folder (``/``-separated, code-point order);
  - glob (a string with ``*``, ``?`` or ``[``; ``**`` recurses): the matching
    files, sorted, whatever their suffix;
  - list/tuple of paths, ``.txt`` file (one path a line, blank lines and
    lines starting with ``#`` skipped, relative paths relative to the
    ``.txt``'s folder): the order given;
  - array ``(n, h, w, 3)`` uint8 or float RGB in [0, 255]: ``x[i]``;
  - grain source: ``src[i]``, each item an image array ``(h, w, 3)`` (or
    ``(h, w)`` grey) or a path.

Which files are bad is found while decoding (:class:`BadImage`), never
while listing: a file that cannot be used costs one warning, not the run.
What is refused up front (:class:`~jaxconvviz.errors.InputError`, before any
compute): an empty source, a folder or ``.txt`` that cannot be read, a listed
path that does not exist, an array of the wrong shape or dtype; and, by
:func:`probe` (a few decodes), a source none of whose sampled images can be
used.

Decoded files, and what is a bad file:
  - JPEG (also CMYK: converted to RGB as Pillow/Keras do), PNG (palette,
    grey, RGBA -- alpha dropped --, 16-bit: scaled to 8 bits), WebP, BMP,
    GIF (first frame): decoded exactly as :func:`jaxconvviz.images.load_img`;
  - bad (:class:`BadImage`): 0 bytes, truncated, not an image, a header that
    declares more than the pixel limit (:func:`jaxconvviz.images.max_image_pixels`,
    50 megapixels unless ``$JAXCONVVIZ_MAX_IMAGE_PIXELS`` says otherwise;
    checked from the header before any pixel is decoded, so a
    decompression bomb costs no memory), a file that vanished, an array
    item of the wrong shape.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxconvviz.errors import InputError, InputTypeError, InputWarning
from jaxconvviz.images import read_image_u8
from jaxconvviz.pixels import check_pixel_range

__all__ = [
    "BadImage", "DataSource", "DEMO_PHOTOS", "IMAGE_SUFFIXES", "RESIZE_RULE",
    "Transform", "decode", "open_source", "probe",
]

#: Suffixes a folder source picks up (compared in lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")

#: How images become ``size x size``: Keras' ``load_img(target_size=(size,
#: size))`` rule, which the zoo and VGG16 use -- a plain resize of the whole
#: image to ``size x size`` (no aspect-preserving crop, no padding) with
#: Pillow's *nearest* filter; an image already ``size x size`` is untouched.
RESIZE_RULE = "keras-load_img: whole image resized to size x size, PIL nearest"

#: The demo dataset: 37 small (160 px) JPEG crops of public-domain / CC0 /
#: CDLA-Permissive photos -- elephants, a cat, an astronaut, coffee, a rocket
#: launch, galaxies, a photographer, grass, gravel, bricks -- shipped with the
#: package (sources and licences: ``jaxconvviz/data/LICENSE-NOTES.md``).
DEMO_PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos"

_GLOB_CHARS = "*?["


class BadImage(ValueError):  # noqa: N818 -- the interface's name
    """Image ``i`` of a source cannot be used; ``reason`` is one line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Transform(NamedTuple):
    """How one image became the model's input (the :data:`RESIZE_RULE`).

    Model-input pixel ``(y, x)`` (continuous, pixel edges at integers) comes
    from original pixel ``(y * scale[0] + offset[0], x * scale[1] + offset[1])``.
    For the Keras rule ``scale = (orig_h / size, orig_w / size)`` and
    ``offset = (0, 0)``; the fields are general so a cropping rule fits too.

    Attributes:
      orig_hw: ``(h, w)`` of the original file (or array item), pixels.
      scale: ``(sy, sx)`` original pixels per model-input pixel.
      offset: ``(oy, ox)`` original pixel of model-input pixel edge ``(0, 0)``.
    """

    orig_hw: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def resize(cls, orig_hw: tuple[int, int], size: int) -> Transform:
        """The Keras rule: ``orig_hw`` stretched to ``size x size``."""
        h, w = int(orig_hw[0]), int(orig_hw[1])
        return cls((h, w), (h / size, w / size), (0.0, 0.0))

    def to_original(self, y0, y1, x0, x1) -> tuple[int, int, int, int]:
        """Box ``[y0, y1) x [x0, x1)`` in model-input pixels (may reach past
        the input, as a receptive field does) -> the covering box in original
        pixels, ``(y0, y1, x0, x1)`` ints, half-open, clipped to the image
        (floor of the start, ceil of the end; may be empty if the box lies
        wholly outside)."""
        h, w = self.orig_hw
        sy, sx = self.scale
        oy, ox = self.offset

        def edge(v, s, o, lo, hi, fn):
            return int(min(max(fn(round(v * s + o, 9)), lo), hi))

        return (edge(y0, sy, oy, 0, h, np.floor), edge(y1, sy, oy, 0, h, np.ceil),
                edge(x0, sx, ox, 0, w, np.floor), edge(x1, sx, ox, 0, w, np.ceil))

    def as_array(self) -> np.ndarray:
        """float32 ``(6,)``: ``[orig_h, orig_w, sy, sx, oy, ox]``; all zeros
        is "no image" (padding, bad file)."""
        return np.asarray([*self.orig_hw, *self.scale, *self.offset], np.float32)

    @classmethod
    def from_array(cls, a) -> Transform:
        """Inverse of :meth:`as_array` (one row of an ``(n, 6)`` array).
        float32 holds sizes up to 2**24 exactly; a Keras-rule ``scale`` (no
        offset, ``orig / size`` for one integer ``size`` on both axes) is
        recomputed in float64, so boxes map exactly as before storing."""
        a = np.asarray(a, np.float64).reshape(6)
        h, w, sy, sx = a[:4]
        if sy > 0 and sx > 0 and a[4] == 0 and a[5] == 0:
            size = round(h / sy)
            if size >= 1 and round(w / sx) == size and all(
                    abs(o / size - s) <= 1e-6 * s for o, s in ((h, sy), (w, sx))):
                return cls.resize((int(round(h)), int(round(w))), int(size))
        return cls((int(round(a[0])), int(round(a[1]))), (float(a[2]), float(a[3])),
                   (float(a[4]), float(a[5])))


NO_IMAGE = np.zeros(6, np.float32)


class DataSource:
    """A fixed, ordered sequence of images (see the module docstring).

    ``len(ds)``; ``ds.name(i)`` (the file path, or ``"array[i]"`` for an
    array item); ``ds.paths`` (``list[str]``, or None for arrays and grain
    sources); ``ds.fingerprint()`` (a hex string that changes when the list of
    names or their byte sizes changes: for resume checks).
    """

    def __init__(self, *, paths: list[str] | None = None,
                 sizes: list[int] | None = None, items=None, what: str = "source",
                 kind: str = "files",
                 digest: str = ""):
        self.paths = paths
        #: The folder of a folder source (names are under it), else None.
        self.root: str | None = None
        self._sizes = sizes
        self._items = items
        self.what = what
        self.kind = kind
        self._digest = digest
        self._n = len(paths) if paths is not None else len(items)

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"DataSource({self.kind}, {self._n} images)"

    def name(self, i: int) -> str:
        i = self._check(i)
        if self.paths is not None:
            return self.paths[i]
        return f"array[{i}]"

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(f"{self.kind}\n{self._n}\n".encode())
        if self.paths is not None:
            for p, s in zip(self.paths, self._sizes, strict=True):
                # surrogateescape: names that are not UTF-8 on disk hash too
                h.update(f"{p}\t{s}\n".encode("utf-8", "surrogateescape"))
        else:
            h.update(self._digest.encode())
        return h.hexdigest()

    def _check(self, i) -> int:
        if isinstance(i, bool) or not isinstance(i, int | np.integer) or not \
                0 <= i < self._n:
            raise InputError(f"image index must be an int in [0, {self._n}); got "
                             f"{i!r}.")
        return int(i)

    def item(self, i: int):
        """Raw item ``i``: a path (str) or an array."""
        i = self._check(i)
        if self.paths is not None:
            return self.paths[i]
        return self._items[i]


def _walk(root: Path) -> list[str]:
    out = []
    errors: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=errors.append):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            suffix = os.path.splitext(f)[1].lower()
            if not f.startswith(".") and suffix in IMAGE_SUFFIXES:
                out.append(os.path.join(dirpath, f))
    if errors and not out:
        e = errors[0]
        raise InputError(f"cannot read folder {e.filename!r}: {e.strerror}.")
    if errors:
        e = errors[0]
        more = f" and {len(errors) - 1} more" if len(errors) > 1 else ""
        warnings.warn(f"{len(errors)} folder(s) under {str(root)!r} cannot be read "
                      f"({e.filename!r}: {e.strerror}{more}); their images are left "
                      "out.", InputWarning, stacklevel=3)
    out.sort(key=lambda p: Path(p).relative_to(root).as_posix())
    return out


def _read_list(txt: Path, what: str) -> list[str]:
    try:
        lines = txt.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{what}: cannot read the list of paths {str(txt)!r}: "
                         f"{e}.") from None
    out = []
    for line in lines:
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        p = Path(s).expanduser()
        out.append(str(p if p.is_absolute() else txt.parent / p))
    return out


def _stat_all(paths: list[str], what: str) -> list[int]:
    sizes, missing = [], []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            missing.append(p)
            continue
        if not os.path.isfile(p):
            missing.append(p)
            continue
        sizes.append(st.st_size)
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise InputError(
            f"{what}: {len(missing)} of {len(paths)} listed paths are not files: "
            f"{', '.join(repr(m) for m in missing[:3])}{more}.")
    return sizes


def _from_paths(paths: list[str], what: str, kind: str, origin: str) -> DataSource:
    if not paths:
        raise InputError(f"{what}: no images in {origin}.")
    return DataSource(paths=paths, sizes=_stat_all(paths, what), what=what, kind=kind)


def _array_digest(x: np.ndarray) -> str:
    h = hashlib.sha256(f"{x.dtype}{x.shape}".encode())
    h.update(np.ascontiguousarray(x).view(np.uint8).reshape(-1))
    return h.hexdigest()


def open_source(source, *, what: str = "source") -> DataSource:
    """``source`` as a :class:`DataSource` (see the module docstring).

    Args:
      source: a folder, a glob string, a list/tuple of paths, a ``.txt`` file
        of paths, a single image file, an array ``(n, h, w, 3)`` (uint8, or
        float RGB in [0, 255]), a ``grain`` ``RandomAccessDataSource`` (or
        any object with ``__len__`` and ``__getitem__`` returning arrays or
        paths), or a :class:`DataSource` (returned as is).
      what: the argument's name in error messages.

    Raises:
      InputError: empty, unreadable, missing listed files, bad array.
      InputTypeError: an unsupported type.
    """
    if isinstance(source, DataSource):
        return source
    if isinstance(source, np.ndarray) or (hasattr(source, "__array__") and hasattr(
            source, "shape") and hasattr(source, "dtype")):
        x = np.asarray(source)
        if x.ndim != 4 or x.shape[-1] != 3 or 0 in x.shape[1:]:
            raise InputError(f"{what} as an array must be (n, h, w, 3) RGB; got shape "
                             f"{x.shape}.")
        if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
            raise InputError(f"{what} as an array must be uint8 or float RGB in [0, "
                             f"255]; got dtype {x.dtype}.")
        if len(x) == 0:
            raise InputError(f"{what}: the array holds no images (shape {x.shape}).")
        if x.dtype != np.uint8:
            check_pixel_range(x, name=what)
        return DataSource(items=x, what=what, kind="array", digest=_array_digest(x))
    if isinstance(source, str | os.PathLike):
        s = os.fspath(source)
        p = Path(s).expanduser()
        if p.is_dir():
            try:
                paths = _walk(p)
            except PermissionError as e:
                raise InputError(f"{what}: cannot read folder {s!r}: {e}.") from None
            ds = _from_paths(paths, what, "folder",
                               f"folder {s!r} (looked for {', '.join(IMAGE_SUFFIXES)}, "
                               "recursively)")
            ds.root = str(p)
            return ds
        if p.is_file():
            if p.suffix.lower() == ".txt":
                return _from_paths(_read_list(p, what), what, "list",
                                   f"list file {s!r}")
            return _from_paths([str(p)], what, "list", repr(s))
        if isinstance(source, str) and any(c in s for c in _GLOB_CHARS):
            paths = sorted(q for q in _glob.glob(os.path.expanduser(s), recursive=True)
                           if os.path.isfile(q))
            return _from_paths(paths, what, "glob", f"glob {s!r} (no file matches)")
        raise InputError(f"{what} must be a folder, an image file, a .txt list of "
                         f"paths, a glob or an array; {s!r} does not exist.")
    if isinstance(source, list | tuple):
        if not all(isinstance(q, str | os.PathLike) for q in source):
            bad = next(q for q in source if not isinstance(q, str | os.PathLike))
            raise InputTypeError(f"{what} as a list must hold paths; got an item of "
                                 f"type {type(bad).__name__}.")
        paths = [str(Path(os.fspath(q)).expanduser()) for q in source]
        return _from_paths(paths, what, "list", f"the empty {type(source).__name__}")
    if hasattr(source, "__len__") and hasattr(source, "__getitem__"):
        try:
            n = len(source)
        except Exception as e:  # noqa: BLE001 -- a user object
            raise InputError(f"{what}: len() of the data source failed: {e}.") from None
        if n == 0:
            raise InputError(f"{what}: the data source {type(source).__name__} is "
                             "empty.")
        cls = type(source)
        # A repr is part of the fingerprint only when the class wrote one
        # (object's default names a memory address, new in every run).
        text = repr(source) if cls.__repr__ is not object.__repr__ else ""
        return DataSource(items=_GrainItems(source, n), what=what, kind="grain",
                          digest=f"{cls.__module__}.{cls.__qualname__}\n{text}")
    raise InputTypeError(
        f"{what} must be a folder, glob, list of paths, .txt file, image array or "
        f"grain data source; got {type(source).__name__}.")


class _GrainItems(Sequence):
    def __init__(self, src, n: int):
        self.src, self.n = src, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return self.src[i]


def _resize_array(a: np.ndarray, size: int) -> np.ndarray:
    """A uint8 ``(h, w, 3)`` array resized by the Keras rule (Pillow nearest)."""
    if a.shape[:2] == (size, size):
        return a
    from PIL import Image
    return np.asarray(Image.fromarray(a).resize((size, size), Image.NEAREST))


def _array_u8(a, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4) or 0 in a.shape:
        raise BadImage(f"{what} is not an image array (h, w, 3); shape {a.shape}")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    a = a[..., :3]
    if a.dtype == np.uint8:
        return np.array(a, copy=True)  # never a view of the caller's array
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise BadImage(f"{what} has dtype {a.dtype}, not uint8 or float")
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise BadImage(f"{what} has NaN or inf pixels")
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def decode(ds: DataSource, i: int, *, size: int) -> tuple[np.ndarray, Transform]:
    """Image ``i`` of ``ds`` as the model sees it.

    Returns:
      ``(uint8 (size, size, 3) RGB, Transform)``: pixels equal to
      ``jaxconvviz.images.load_img(path, target_size=(size, size))`` (Keras'
      ``load_img`` + ``img_to_array``) as uint8; array items are rounded and
      clipped to uint8 first, then resized by the same rule.

    Raises:
      BadImage: the item cannot be used (the reason is one line).
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise InputError(f"size must be a positive int (pixels); got {size!r}.")
    size = int(size)
    if ds.kind == "grain":
        try:
            item = ds.item(i)
        except Exception as e:  # noqa: BLE001 -- a user's data source
            text = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise BadImage(f"{ds.name(i)}: the data source failed: {text}") from None
    else:
        item = ds.item(i)
    if isinstance(item, str | os.PathLike):
        try:
            a, orig = read_image_u8(item, target_size=(size, size))
        except InputError as e:
            text = str(e)
            prefix = f"{str(item)!r} "
            raise BadImage(text[len(prefix):] if text.startswith(prefix) else text
                           ) from None
        except MemoryError:
            raise BadImage("out of memory while decoding") from None
        except OSError as e:  # vanished, permission
            raise BadImage(f"cannot be read: {e.strerror or e}") from None
        except Exception as e:  # noqa: BLE001 -- a malformed file may raise anything
            text = str(e).splitlines()[0] if str(e) else ""
            raise BadImage(f"cannot be decoded ({type(e).__name__}: {text})") from None
        return a, Transform.resize(orig, size)
    a = _array_u8(item, ds.name(i))
    return _resize_array(a, size), Transform.resize(a.shape[:2], size)


def probe(ds: DataSource, *, k: int = 4, size: int = 32) -> None:
    """Refuse a source none of whose images can be used, before any compute.

    Decodes up to ``k`` images spread evenly over ``ds`` (the first, the
    last and between); returns as soon as one decodes. If none does, raises
    an :class:`~jaxconvviz.errors.InputError` naming each tried image and why
    (a folder of files that are not images, a glob of the wrong files, a
    list whose files all vanished). Cost: at most ``k`` decodes.
    """
    n = len(ds)
    tried = []
    m = max(1, min(k, n))
    picks = {int(round(j * (n - 1) / max(m - 1, 1))) for j in range(m)}
    for i in sorted(picks):
        try:
            decode(ds, i, size=size)
            return
        except BadImage as e:
            tried.append(f"{ds.name(i)}: {e.reason}")
    raise InputError(f"{ds.what}: none of the {len(tried)} images tried can be read "
                     f"(of {n}): " + "; ".join(tried))
