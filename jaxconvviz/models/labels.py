"""ImageNet class index and ``decode_predictions``, Keras-identical (no globals).

The class index ships in the package (``data/imagenet_class_index.json``,
byte-identical to the file Keras downloads, MD5
``c2c37ea517e94d9795004a39431a14cb``).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from jaxconvviz.errors import InputError

CLASS_INDEX_PATH = Path(__file__).parents[1] / "data" / "imagenet_class_index.json"


@functools.cache
def _default_index() -> tuple[tuple[str, str], ...]:
    return load_class_index(CLASS_INDEX_PATH)


def load_class_index(path=CLASS_INDEX_PATH) -> tuple[tuple[str, str], ...]:
    """Read a Keras class index JSON -> tuple of ``(wnid, name)``, by index."""
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    return tuple(tuple(raw[str(i)]) for i in range(len(raw)))


def class_label(k: int, n_classes: int = 1000, *, class_index=None) -> str:
    """The one display form of class ``k`` of an ``n_classes``-way output:
    ``"African_elephant (386)"`` (name, then index) where ``class_index``
    (default: the ImageNet index) names exactly ``n_classes`` classes, else
    ``"class 9"``.

    Raises:
      InputError: ``k`` is not in ``0..n_classes - 1``.
    """
    k = int(k)
    if not 0 <= k < n_classes:
        raise InputError(f"class k must be in 0..{n_classes - 1}; got {k}.")
    index = _default_index() if class_index is None else class_index
    if len(index) != n_classes:
        return f"class {k}"
    return f"{index[k][1]} ({k})"


def decode_predictions(probs, *, top: int = 5, class_index=None
                       ) -> list[list[tuple[str, str, float]]]:
    """Top-``top`` ``(wnid, name, score)`` per image, highest score first.

    Same ranking as ``keras.applications.imagenet_utils.decode_predictions``
    (``argsort()[-top:][::-1]``, then a stable sort by score).

    Args:
      probs: ``(n, 1000)`` scores (probabilities from :func:`predict`).
      top: how many classes per image, 1..1000.
      class_index: ``(wnid, name)`` per class; default the ImageNet index.
    """
    p = np.asarray(probs)
    index = _default_index() if class_index is None else class_index
    if p.ndim != 2 or p.shape[1] != len(index):
        raise InputError(
            f"probs must be a batch of predictions of shape (n, {len(index)}); "
            f"got shape {p.shape}."
        )
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or not (
            1 <= top <= len(index)):
        raise InputError(f"top must be an integer in 1..{len(index)}; got {top!r}.")
    results = []
    for row in p:
        idx = row.argsort()[-top:][::-1]
        res = [(*index[i], row[i]) for i in idx]
        res.sort(key=lambda t: t[2], reverse=True)
        results.append(res)
    return results


__all__ = ["class_label", "decode_predictions", "load_class_index", "CLASS_INDEX_PATH"]
