"""Receptive-field crops of a unit's top dataset examples, from the original files.

:func:`example_boxes` maps each example's receptive field (model-input
pixels, :meth:`LayerExamples.box <jaxconvviz.dataset.result.LayerExamples.box>`)
through the image's recorded :class:`~jaxconvviz.dataset.sources.Transform`
to the original file's pixels; :func:`example_crops` cuts those boxes out of
the original files (Pillow), the parts of a field beyond the image shown
black, each resized to ``size x size``.

IO: reads image files with Pillow.
"""

from __future__ import annotations

import numpy as np

from jaxconvviz.dataset.result import DatasetExamples
from jaxconvviz.errors import InputError
from jaxconvviz.models.receptive import crop_patch


def _check(result, layer: str, unit) -> tuple:
    if not isinstance(result, DatasetExamples):
        raise InputError(f"result must be a DatasetExamples (from dataset_examples or "
                         f"DatasetExamples.load); got {type(result).__name__}.")
    le = result[layer]
    if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)) or not \
            0 <= unit < le.units:
        raise InputError(f"unit must be an int in [0, {le.units}) for layer "
                         f"{layer!r}; got {unit!r}.")
    return le, int(unit)


def _field_original(result, le, unit: int, rank: int):
    """The example's field in original pixels: (unclipped float box, clipped
    int box), or None without an example."""
    i = int(le.index[unit, rank])
    if i < 0:
        return None
    t = np.asarray(result.transforms[i], np.float64)
    oh, ow, sy, sx, oy, ox = t
    box = le.box(unit, rank)
    if box is None:  # dense layer: the whole input
        box = (0, result.input_hw[0], 0, result.input_hw[1])
    y0, y1, x0, x1 = box
    raw = (y0 * sy + oy, y1 * sy + oy, x0 * sx + ox, x1 * sx + ox)
    clip = (int(min(max(np.floor(round(raw[0], 9)), 0), oh)),
            int(min(max(np.ceil(round(raw[1], 9)), 0), oh)),
            int(min(max(np.floor(round(raw[2], 9)), 0), ow)),
            int(min(max(np.ceil(round(raw[3], 9)), 0), ow)))
    return raw, clip


def example_boxes(result: DatasetExamples, layer: str, unit: int
                  ) -> list[tuple[str, tuple[int, int, int, int], float]]:
    """``unit``'s top-k examples as ``[(name, (y0, y1, x0, x1), value)]``.

    The box is the example's receptive field in the original file's pixels
    (end exclusive, clipped to the image); strongest first; missing
    examples (fewer images than k) are left out.
    """
    le, unit = _check(result, layer, unit)
    out = []
    for r in range(le.value.shape[1]):
        f = _field_original(result, le, unit, r)
        if f is None:
            continue
        out.append((result.names[int(le.index[unit, r])], f[1],
                    float(le.value[unit, r])))
    return out


def _read(result, i: int, source):
    if source is not None:
        item = source.item(i)
    else:
        item = result.names[i]
        if item.startswith("array["):
            raise InputError(
                "this result came from an array source; pass source= (the same "
                "array or data source) to cut crops from it.")
    if isinstance(item, str) or hasattr(item, "__fspath__"):
        from PIL import Image

        with Image.open(item) as im:
            im.seek(0)  # a GIF's first frame, as the pass read it
            return np.asarray(im.convert("RGB"))
    a = np.asarray(item, np.float64)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def example_crops(result: DatasetExamples, layer: str, unit: int, *, size: int = 96,
                  source=None) -> np.ndarray:
    """uint8 ``(k, size, size, 3)``: ``unit``'s top-k receptive-field crops.

    Each crop is the example's full receptive field mapped to the original
    file (parts beyond the image black, so the unit's position stays at the
    centre), resized to ``size x size`` (bilinear); missing examples are
    black.

    Args:
      result: a :class:`~jaxconvviz.dataset.result.DatasetExamples`.
      layer: one of its layers.
      unit: a unit (channel) of that layer.
      size: side of each crop, pixels.
      source: for results of array (or grain) sources: the same source
        (:func:`~jaxconvviz.dataset.sources.open_source` input); files are
        read from ``result.names`` otherwise.
    """
    from PIL import Image

    le, unit = _check(result, layer, unit)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise InputError(f"size must be a positive int; got {size!r}.")
    if source is not None:
        from jaxconvviz.dataset.sources import open_source

        source = open_source(source)
    out = np.zeros((le.value.shape[1], size, size, 3), np.uint8)
    for r in range(le.value.shape[1]):
        f = _field_original(result, le, unit, r)
        if f is None:
            continue
        img = _read(result, int(le.index[unit, r]), source)
        y0, y1, x0, x1 = f[0]
        y0, x0 = int(np.floor(y0)), int(np.floor(x0))
        box = (y0, max(int(np.ceil(y1)), y0 + 1), x0, max(int(np.ceil(x1)), x0 + 1))
        patch = crop_patch(img, box)
        out[r] = np.asarray(Image.fromarray(patch).resize((size, size),
                                                          Image.BILINEAR))
    return out


__all__ = ["example_boxes", "example_crops"]
