"""Receptive fields of units, computed analytically from a model's layer table.

For a chain of convolutions and poolings, a unit at output position ``i`` of
a layer sees the input pixels ``start + i * jump ... start + i * jump + size
- 1`` along each axis, where, layer by layer (kernel ``k``, stride ``s``,
dilation ``d``, padding ``p`` pixels before the first input pixel)::

    size  <- size + (d * (k - 1)) * jump
    start <- start - p * jump
    jump  <- jump * s

starting from ``size = 1, start = 0, jump = 1`` at the input. ``start`` may
be negative and ``start + size`` may pass the image: those pixels are the
zero padding the unit also sees. ``p`` follows Keras/TensorFlow: ``valid``
pads nothing; ``same`` pads ``max((ceil(n / s) - 1) * s + d * (k - 1) + 1 -
n, 0)`` pixels in total, the smaller half before, so the offsets depend on
the input size ``n`` (the sizes and jumps do not).

Layers without a spatial footprint (activation, batchnorm, dropout,
rescaling) leave the field unchanged; zero padding and cropping shift it.
In graph models only the layer's ancestors count, and a merge (add,
concatenate) sees the union of its inputs' fields. Layers after the spatial
part (dense, flatten, global pooling) have no receptive field of this kind.

Pure Python/NumPy: no jax, Pillow or matplotlib.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from jaxconvviz.errors import InputError
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.models.layers import pads2


class ReceptiveField(NamedTuple):
    """The input region of the units of one layer, per axis ``(h, w)``.

    Attributes:
      size: ``(rh, rw)``: the side of one unit's field in input pixels.
      jump: ``(jh, jw)``: input pixels between neighbouring units (the
        product of the strides).
      start: ``(sh, sw)``: the first input row/column of unit ``(0, 0)``'s
        field (negative: the field starts in the padding).
      input_hw: the input size the offsets were computed for.
      output_hw: the layer's output size for that input.
    """

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[int, int]
    input_hw: tuple[int, int]
    output_hw: tuple[int, int]

    def box(self, i: int, j: int) -> tuple[int, int, int, int]:
        """``(y0, y1, x0, x1)`` (end exclusive) of unit ``(i, j)``'s field in
        input pixels, not clipped to the image."""
        y0 = self.start[0] + int(i) * self.jump[0]
        x0 = self.start[1] + int(j) * self.jump[1]
        return y0, y0 + self.size[0], x0, x0 + self.size[1]


#: Layer kinds that keep the spatial grid (each output position reads the
#: same position of its inputs).
_SAME_GRID = ("dropout", "identity", "batchnorm", "layernorm", "normalization",
              "layerscale", "gamma", "activation", "rescaling", "add", "subtract",
              "multiply", "maximum", "average", "concatenate")


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else tuple(int(a) for a in v)


def _axis(n: int, k: int, s: int, d: int, padding: str) -> tuple[int, int]:
    """(output size, padding before) of one axis, Keras/TF conventions."""
    span = d * (k - 1) + 1
    if padding == "same":
        out = math.ceil(n / s)
        total = max((out - 1) * s + span - n, 0)
        return out, total // 2
    if padding == "valid":
        return (n - span) // s + 1, 0
    raise InputError(f"padding must be 'same' or 'valid'; got {padding!r}.")


def receptive_field(model: ConvNet, layer: str, input_hw: tuple[int, int]
                    ) -> ReceptiveField:
    """The receptive field of ``layer``'s units for an ``(h, w)`` input.

    Args:
      model: the network (its static layer table is all that is read).
      layer: a spatial layer of ``model`` (``model.spatial_layers``).
      input_hw: ``(h, w)`` of the input image in pixels (both >= 1).

    Returns:
      :class:`ReceptiveField`; e.g. VGG16 ``block5_conv3`` at 224 px:
      ``size=(196, 196), jump=(16, 16), start=(-90, -90)``.

    Raises:
      ValueError: ``layer`` is not a spatial layer (the message lists them),
        bad ``input_hw``, or the input is too small for the layer.
    """
    model.check_layer(layer, model.spatial_layers, name="layer")
    ok = (isinstance(input_hw, (tuple, list)) and len(input_hw) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                  and v >= 1 for v in input_hw))
    if not ok:
        raise InputError(f"input_hw must be (h, w) with positive integers; got "
                         f"{input_hw!r}.")
    target = model.layer_index(layer)
    sources = model.sources
    need, todo = {target}, [target]  # the layer's ancestors (graph models)
    while todo:
        for j in sources[todo.pop()]:
            if j >= 0 and j not in need:
                need.add(j)
                todo.append(j)
    # per node and axis: [size, jump, start, n]
    fields: dict[int, list[list[int]]] = {
        -1: [[1, 1, 0, int(input_hw[0])], [1, 1, 0, int(input_hw[1])]]}
    for i in sorted(need):
        spec = model.layers[i]
        ins = [fields[j] for j in sources[i]]
        # a merge (add, concatenate, ...) sees the union of its inputs' fields
        f = []
        for a in (0, 1):
            start = min(x[a][2] for x in ins)
            end = max(x[a][2] + x[a][0] for x in ins)
            f.append([end - start, max(x[a][1] for x in ins), start, ins[0][a][3]])
        kind, o = spec.kind, spec.opt
        if kind in ("conv", "depthwise_conv", "separable_conv", "maxpool",
                    "avgpool"):
            pool = kind.endswith("pool")
            k = _pair(o("pool_size", 2)) if pool else _pair(o("kernel_size", 3))
            s_ = _pair(o("strides", k)) if pool else _pair(o("strides", 1))
            d = (1, 1) if pool else _pair(o("dilation", 1))
            padding = o("padding", "valid" if pool else "same")
            for a in (0, 1):
                out, before = _axis(f[a][3], k[a], s_[a], d[a], padding)
                f[a][0] += d[a] * (k[a] - 1) * f[a][1]
                f[a][2] -= before * f[a][1]
                f[a][1] *= s_[a]
                f[a][3] = out
        elif kind in ("zeropad", "cropping"):
            sign = 1 if kind == "zeropad" else -1
            pads = pads2(o("padding" if kind == "zeropad" else "cropping", 0))
            for a in (0, 1):
                f[a][2] -= sign * pads[a][0] * f[a][1]
                f[a][3] += sign * (pads[a][0] + pads[a][1])
        elif kind not in _SAME_GRID:
            raise InputError(f"receptive_field: layer {spec.name!r} of kind "
                             f"{kind!r} is not supported on the way to {layer!r}.")
        if min(f[0][3], f[1][3]) < 1:
            raise InputError(
                f"input_hw {tuple(input_hw)} is too small for layer {layer!r}: "
                f"it needs at least {model.min_input_size(layer)} px.")
        fields[i] = f
    f = fields[target]
    return ReceptiveField((f[0][0], f[1][0]), (f[0][1], f[1][1]),
                          (f[0][2], f[1][2]), tuple(int(v) for v in input_hw),
                          (f[0][3], f[1][3]))


def crop_patch(image, box: tuple[int, int, int, int], *, fill: float = 0.0
               ) -> np.ndarray:
    """The pixels of ``image`` inside ``box``; parts outside the image get ``fill``.

    A unit at the border of a feature map sees zero padding beyond the
    image; the patch keeps the field's full size (and the unit's position
    in it) and shows that part as ``fill``.

    Args:
      image: ``(h, w)`` or ``(h, w, c)`` array (any dtype, any pixel domain).
      box: ``(y0, y1, x0, x1)``, end exclusive, as
        :meth:`ReceptiveField.box` gives it; may extend past the image.
      fill: value of the pixels outside the image.

    Returns:
      ``(y1 - y0, x1 - x0[, c])`` array of ``image``'s dtype (a copy).

    Raises:
      ValueError: an empty box, or a box that misses the image entirely.
    """
    a = np.asarray(image)
    if a.ndim not in (2, 3):
        raise InputError(f"image must have shape (h, w) or (h, w, c); got {a.shape}.")
    y0, y1, x0, x1 = (int(v) for v in box)
    h, w = a.shape[:2]
    if y1 <= y0 or x1 <= x0:
        raise InputError(f"box must be (y0, y1, x0, x1) with y0 < y1 and x0 < x1; "
                         f"got {tuple(box)}.")
    if y1 <= 0 or x1 <= 0 or y0 >= h or x0 >= w:
        raise InputError(f"box {tuple(box)} lies outside the {h}x{w} image.")
    out = np.full((y1 - y0, x1 - x0, *a.shape[2:]), fill, dtype=a.dtype)
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    out[sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0] = a[sy0:sy1, sx0:sx1]
    return out


def top_units(acts, k: int, *, min_distance: tuple[int, int] = (1, 1)
              ) -> list[tuple[int, int, int, float]]:
    """The ``k`` strongest positions of one channel over a batch of maps.

    Greedy: positions in decreasing activation; one is skipped when an
    already chosen position of the same image lies closer than
    ``min_distance = (dy, dx)`` units on both axes (so the patches are not
    near-copies of each other). Ties keep the first in (image, row, column)
    order.

    Args:
      acts: ``(n, h, w)`` activations of one filter on ``n`` images.
      k: how many positions to return (fewer if the maps have fewer).
      min_distance: see above; ``(1, 1)`` allows any two distinct positions.

    Returns:
      ``[(image, i, j, value), ...]``, strongest first.
    """
    a = np.asarray(acts, dtype=np.float32)
    if a.ndim != 3:
        raise InputError(f"acts must have shape (n, h, w); got {a.shape}.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be an integer >= 1; got {k!r}.")
    flat = a.ravel()
    order = np.argsort(-flat, kind="stable")
    dy, dx = (int(v) for v in min_distance)
    chosen: list[tuple[int, int, int, float]] = []
    for f in order:
        n_, i, j = np.unravel_index(int(f), a.shape)
        if any(c[0] == n_ and abs(c[1] - i) < dy and abs(c[2] - j) < dx
               for c in chosen):
            continue
        chosen.append((int(n_), int(i), int(j), float(flat[f])))
        if len(chosen) == k:
            break
    return chosen


__all__ = ["ReceptiveField", "receptive_field", "crop_patch", "top_units"]
