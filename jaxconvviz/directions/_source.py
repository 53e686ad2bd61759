"""Batches of dataset images for the direction techniques (private).

An array ``(n, h, w, 3)`` (uint8, or float RGB in [0, 255], kept exact) or a
sequence of such ``(h, w, 3)`` arrays of one shape is read here; anything
else goes to the dataset reader (:mod:`jaxconvviz.dataset.sources` /
``loader``: folders, globs, path lists, ``.txt`` lists, grain sources), with
its resize rule, bad-file warnings and decoding threads.

Imports jax and numpy only (the dataset reader lazily).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from jaxconvviz.errors import InputError


class Batch(NamedTuple):
    """``images`` float32 ``(B, s, s, 3)`` RGB [0, 255]; ``index`` int32
    ``(B,)`` global image index, -1 for padding or a bad file."""

    images: np.ndarray
    index: np.ndarray


class Source(NamedTuple):
    """``n`` images, ``names[i]`` (a path or ``"array[i]"``), ``batches(size,
    batch_size)`` -> iterator of :class:`Batch`, ``image(i, size)`` ->
    float32 ``(size, size, 3)`` for crops, and ``size``: the images' own
    side when they are square arrays, else None."""

    n: int
    names: list
    batches: object
    image: object
    size: int | None = None


def _resize(a: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or a.shape[1:3] == (size, size):
        return a
    import jax

    return np.asarray(jax.image.resize(a, (a.shape[0], size, size, a.shape[3]),
                                       "bilinear"))


def _array_source(arr: np.ndarray) -> Source:
    n = arr.shape[0]

    def batches(size, batch_size, start=0) -> Iterator[Batch]:
        for s in range(start, n, batch_size):
            part = np.asarray(arr[s:s + batch_size], np.float32)
            idx = np.arange(s, s + part.shape[0], dtype=np.int32)
            part = _resize(part, size)
            m = part.shape[0]
            if m < batch_size:
                part = np.concatenate([part, np.zeros((batch_size - m, *part.shape[1:]),
                                                      np.float32)])
                idx = np.concatenate([idx, np.full(batch_size - m, -1, np.int32)])
            yield Batch(part, idx)

    def image(i, size=None):
        return _resize(np.asarray(arr[i:i + 1], np.float32), size)[0]

    h, w = arr.shape[1:3]
    return Source(n, [f"array[{i}]" for i in range(n)], batches, image,
                  int(h) if h == w else None)


def _dataset_source(source, what: str) -> Source | None:
    try:
        from jaxconvviz.dataset import loader, sources  # type: ignore
    except ImportError:
        return None
    ds = sources.open_source(source, what=what)
    sources.probe(ds)

    def batches(size, batch_size, start=0) -> Iterator[Batch]:
        for b in loader.iterate(ds, size=int(size), batch_size=batch_size,
                                start=start):
            yield Batch(np.asarray(b.images, np.float32), np.asarray(b.index, np.int32))

    def image(i, size=None):
        im, _ = sources.decode(ds, i, size=int(size))
        return np.asarray(im, np.float32)

    return Source(len(ds), [ds.name(i) for i in range(len(ds))], batches, image)


def open_images(source, *, what: str = "source") -> Source:
    """The :class:`Source` of ``source`` (see the module docstring).

    Raises:
      InputError: an empty source, arrays of the wrong shape, or a source
        this build cannot read (paths without the dataset subpackage).
    """
    if isinstance(source, (list, tuple)) and source and all(
            hasattr(a, "shape") for a in source):
        shapes = {tuple(a.shape) for a in source}
        if len(shapes) != 1:
            raise InputError(f"{what}: a list of images must share one shape; "
                             f"got {sorted(shapes)[:4]}.")
        source = np.stack([np.asarray(a) for a in source])
    if hasattr(source, "shape") and hasattr(source, "dtype"):
        arr = np.asarray(source)
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0:
            raise InputError(f"{what} must be a non-empty array (n, h, w, 3) of RGB "
                             f"images in [0, 255]; got shape {arr.shape}.")
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 255:
            raise InputError(f"{what} must hold RGB pixel values in [0, 255]; got "
                             f"values in [{arr.min()}, {arr.max()}].")
        return _array_source(arr)
    src = _dataset_source(source, what)
    if src is None:
        raise InputError(
            f"{what} must be an image array (n, h, w, 3) or a list of (h, w, 3) "
            f"arrays in this build (folders and path lists need the dataset "
            f"reader, jaxconvviz.dataset); got {type(source).__name__}.")
    if src.n == 0:
        raise InputError(f"{what} holds no images.")
    return src
