"""Analytic shapes, receptive fields and multiply-add counts of ConvNet layers.

Everything here is arithmetic on layer specs -- no tracing, no arrays -- so
it is free to call before compute (input checks, device plans, benchmarks).
Functions take the layer specs, each layer's input indices (``-1`` is the
model input; see :meth:`ConvNet.sources
<jaxconvviz.models.convnet.ConvNet.sources>`) and per-example shapes without
the batch axis: ``(h, w, c)`` for feature maps, ``(units,)`` after a global
pool or flatten. ``h`` or ``w`` below 1 means the input is too small.

Imports numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from jaxconvviz.errors import InputError
from jaxconvviz.models.layers import pads2, pair

Shape = tuple[int, ...]


def conv_out(n: int, k: int, s: int, d: int, padding: str) -> int:
    """Output length of a conv/pool along one axis (Keras/XLA conventions).

    ``"same"``: ``ceil(n / s)``; ``"valid"``: ``(n - (k - 1) d - 1) // s + 1``.
    """
    if padding == "same":
        return math.ceil(n / s)
    return (n - (k - 1) * d - 1) // s + 1


_conv_out = conv_out  # the name convnet.py used


def _spatial(spec, shp: Shape, k, s, d, c: int) -> Shape:
    pad = spec.opt("padding", "same" if "conv" in spec.kind else "valid")
    h = conv_out(shp[0], k[0], s[0], d[0], pad)
    w = conv_out(shp[1], k[1], s[1], d[1], pad)
    return (h, w, int(c))


def _conv_shape(spec, ins):
    (shp,) = ins
    o = spec.opt
    k, s, d = pair(o("kernel_size", 3)), pair(o("strides", 1)), pair(o("dilation", 1))
    c = shp[-1] * int(o("depth_multiplier", 1)) if spec.kind == "depthwise_conv" \
        else o("features")
    return _spatial(spec, shp, k, s, d, c)


def _pool_shape(spec, ins):
    (shp,) = ins
    p = pair(spec.opt("pool_size", 2))
    s = pair(spec.opt("strides", p))
    return _spatial(spec, shp, p, s, (1, 1), shp[-1])


def _global_shape(spec, ins):
    (shp,) = ins
    return (1, 1, shp[-1]) if spec.opt("keepdims", False) else (shp[-1],)


def _reshape_shape(spec, ins):
    (shp,) = ins
    target = tuple(int(t) for t in spec.opt("target_shape"))
    if -1 in target:
        known = math.prod(t for t in target if t != -1)
        target = tuple(math.prod(shp) // known if t == -1 else t for t in target)
    return target


def _pad_shape(spec, ins):
    (shp,) = ins
    sign = 1 if spec.kind == "zeropad" else -1
    (t, b), (lf, r) = pads2(spec.opt("padding" if sign > 0 else "cropping", 0))
    return (shp[0] + sign * (t + b), shp[1] + sign * (lf + r)) + tuple(shp[2:])


def _concat_shape(spec, ins):
    rank = len(ins[0])
    axis = int(spec.opt("axis", -1))
    axis = axis - 1 if axis > 0 else axis + rank  # Keras axes count the batch
    out = list(ins[0])
    out[axis] = sum(s[axis] for s in ins)
    return tuple(out)


def _broadcast_shape(spec, ins):
    return tuple(int(a) for a in np.broadcast_shapes(*ins))


def _same(spec, ins):
    return ins[0]


#: kind -> ``shape(spec, input_shapes) -> output shape`` (batch axis omitted).
SHAPES: dict[str, Callable] = {
    "conv": _conv_shape,
    "depthwise_conv": _conv_shape,
    "separable_conv": _conv_shape,
    "dense": lambda spec, ins: tuple(ins[0][:-1]) + (int(spec.opt("features")),),
    "maxpool": _pool_shape,
    "avgpool": _pool_shape,
    "gap": _global_shape,
    "gmp": _global_shape,
    "flatten": lambda spec, ins: (math.prod(ins[0]),),
    "reshape": _reshape_shape,
    "zeropad": _pad_shape,
    "cropping": _pad_shape,
    "concatenate": _concat_shape,
    **{k: _broadcast_shape
       for k in ("add", "subtract", "multiply", "maximum", "average")},
    **{k: _same for k in ("dropout", "identity", "batchnorm", "layernorm",
                          "normalization", "layerscale", "activation",
                          "rescaling")},
}

#: Kinds whose output is no longer a map over the input's pixels.
_UNSPATIAL = ("gap", "gmp", "flatten", "reshape")


def node_shapes(layers: Sequence, sources: Sequence[tuple[int, ...]],
                input_shape: Shape, nodes: Iterable[int]) -> dict[int, Shape]:
    """Per-example output shapes of the layers ``nodes`` (their indices; the
    set must be closed under inputs, e.g. the ancestors of a layer), computed
    in topological (index) order from ``input_shape`` ``(h, w, c)``."""
    shapes: dict[int, Shape] = {-1: tuple(int(a) for a in input_shape)}
    for i in sorted(nodes):
        spec = layers[i]
        shapes[i] = tuple(int(a) for a in SHAPES[spec.kind](
            spec, tuple(shapes[j] for j in sources[i])))
    del shapes[-1]
    return shapes


def param_shapes(spec, in_shape: Shape) -> dict[str, Shape]:
    """Shapes of one layer's params (Keras layouts) given its input shape
    (the first input's, batch axis omitted); ``{}`` for kinds without."""
    o = spec.opt
    c = int(in_shape[-1])
    k = spec.kind
    bias = o("use_bias", True)
    if k in ("conv", "dense", "depthwise_conv", "separable_conv"):
        f = int(o("features")) if k != "depthwise_conv" else c * int(
            o("depth_multiplier", 1))
        if k == "dense":
            out = {"kernel": (c, f)}
        elif k == "conv":
            out = {"kernel": (*pair(o("kernel_size", 3)), c // int(o("groups", 1)),
                              f)}
        elif k == "depthwise_conv":
            out = {"kernel": (*pair(o("kernel_size", 3)), c,
                              int(o("depth_multiplier", 1)))}
        else:
            m = int(o("depth_multiplier", 1))
            out = {"depthwise_kernel": (*pair(o("kernel_size", 3)), c, m),
                   "pointwise_kernel": (1, 1, c * m, f)}
        if bias:
            out["bias"] = (f,)
        return out
    if k in ("batchnorm", "layernorm"):
        names = (("gamma",) if o("scale", True) else ()) + (
            ("beta",) if o("center", True) else ())
        if k == "batchnorm":
            names += ("moving_mean", "moving_variance")
        return {n: (c,) for n in names}
    if k == "normalization" and o("mean") is None:
        return {"mean": (c,), "variance": (c,), "count": ()}
    if k == "layerscale":
        return {"gamma": (c,)}
    return {}


def spatial_nodes(layers: Sequence, sources: Sequence[tuple[int, ...]]
                  ) -> tuple[bool, ...]:
    """Per layer: whether its output is a ``(h, w, c)`` map over the input's
    pixels (rank 3 and fed by such a map; a global pool, flatten or reshape
    ends it, so a squeeze-excite branch's ``(1, 1, c)`` is not spatial, but
    the product of the gate with the feature map is)."""
    out: list[bool] = []
    for i, spec in enumerate(layers):
        fed = any(j == -1 or out[j] for j in sources[i])
        if spec.kind in _UNSPATIAL:
            out.append(False)
        elif spec.kind == "dense":
            out.append(fed and bool(spec.opt("spatial_dense", fed)))
        else:
            out.append(fed)
    return tuple(out)


def layer_macs(spec, in_shape: Shape, out_shape: Shape, *, channels: int | None = None
               ) -> int:
    """Multiply-adds of one layer for one example (convs and dense layers;
    0 for the rest). ``channels``: count only that many output channels."""
    o = spec.opt
    if spec.kind in ("conv", "depthwise_conv", "separable_conv"):
        kh, kw = pair(o("kernel_size", 3))
        h, w = out_shape[0], out_shape[1]
        c_in = int(in_shape[-1])
        c_out = int(out_shape[-1]) if channels is None else channels
        if spec.kind == "conv":
            return h * w * kh * kw * (c_in // int(o("groups", 1))) * c_out
        m = int(o("depth_multiplier", 1))
        if spec.kind == "depthwise_conv":
            return h * w * kh * kw * (c_out if channels is None else channels)
        return h * w * (kh * kw * c_in * m + c_in * m * c_out)
    if spec.kind == "dense":
        c_out = int(out_shape[-1]) if channels is None else channels
        return math.prod(out_shape[:-1]) * int(in_shape[-1]) * c_out
    return 0


def conv_macs(model, layer: str, size: int, *, channel_only: bool = False) -> int:
    """Multiply-adds of the convolutions (and dense layers) that ``layer``
    depends on, itself included.

    One ``size`` x ``size`` image, forward pass only (``h' * w' * k_h * k_w
    * c_in / groups * c_out`` per conv layer, 'same' padding counted as full
    windows; see :func:`layer_macs`); only ``layer``'s ancestors count, as
    only they are computed. ``channel_only``: ``layer`` itself with one
    output channel, as :meth:`~jaxconvviz.ConvNet.channel_forward` computes
    it.
    """
    sources = model.sources
    last = model.layer_index(layer)
    nodes = sorted(_ancestors_of(model, last))
    shapes = node_shapes(model.layers, sources,
                         (size, size, int(model.input_shape[2])), nodes)
    shapes[-1] = (size, size, int(model.input_shape[2]))
    total = 0
    for i in nodes:
        spec = model.layers[i]
        total += layer_macs(spec, shapes[sources[i][0]], shapes[i],
                            channels=1 if channel_only and i == last else None)
    return total


#: Node kinds whose cost is their multiply-adds (:func:`layer_macs`); every
#: other node (batch norms, activations, adds, pads, depthwise convs, ...) is
#: bound by memory traffic and counted by :func:`memory_bound_elements`.
MAC_BOUND_KINDS = frozenset({"conv", "separable_conv", "dense"})


def memory_bound_elements(model, layer: str, size: int) -> int:
    """Output elements of the memory-bound nodes ``layer`` depends on (every
    kind but :data:`MAC_BOUND_KINDS`; ``layer`` included), for one ``size`` x
    ``size`` image: what a multiply-add count misses in graphs made of many
    small nodes (MobileNet, EfficientNet: 1-2 % of VGG16's multiply-adds, yet
    a third of its time per step on XLA:CPU)."""
    nodes = sorted(_ancestors_of(model, model.layer_index(layer)))
    shapes = node_shapes(model.layers, model.sources,
                         (size, size, int(model.input_shape[2])), nodes)
    return sum(math.prod(shapes[i]) for i in nodes
               if model.layers[i].kind not in MAC_BOUND_KINDS)


def _ancestors_of(model, i: int) -> frozenset[int]:
    seen, todo = {i}, [i]
    while todo:
        for j in model.sources[todo.pop()]:
            if j >= 0 and j not in seen:
                seen.add(j)
                todo.append(j)
    return frozenset(seen)


def receptive_fields(layers: Sequence, sources: Sequence[tuple[int, ...]],
                     nodes: Iterable[int]) -> dict[int, tuple[tuple[int, int], ...]]:
    """Receptive field of each layer in ``nodes``: per axis ``(size, jump)``,
    the input pixels one output position sees and the input distance between
    neighbouring outputs (padding ignored; over several paths the largest).
    Global pools, flatten and reshape see the whole input: ``(0, 0)``."""
    rf: dict[int, tuple[tuple[int, int], ...]] = {-1: ((1, 1), (1, 1))}
    for i in sorted(nodes):
        spec = layers[i]
        ins = [rf[j] for j in sources[i]]
        if spec.kind in _UNSPATIAL or any(r == ((0, 0), (0, 0)) for r in ins):
            rf[i] = ((0, 0), (0, 0))
            continue
        size = tuple(max(r[a][0] for r in ins) for a in range(2))
        jump = tuple(max(r[a][1] for r in ins) for a in range(2))
        o = spec.opt
        if spec.kind in ("conv", "depthwise_conv", "separable_conv",
                         "maxpool", "avgpool"):
            pool = spec.kind.endswith("pool")
            k = pair(o("pool_size", 2)) if pool else pair(o("kernel_size", 3))
            s = pair(o("strides", k)) if pool else pair(o("strides", 1))
            d = (1, 1) if pool else pair(o("dilation", 1))
            rf[i] = tuple((size[a] + (k[a] - 1) * d[a] * jump[a], jump[a] * s[a])
                          for a in range(2))
        else:
            rf[i] = tuple((size[a], jump[a]) for a in range(2))
    del rf[-1]
    return rf


def check_kind(kind: str) -> None:
    if kind not in SHAPES:
        raise InputError(f"kind must be one of {tuple(SHAPES)}; got {kind!r}.")


__all__ = ["SHAPES", "conv_out", "node_shapes", "spatial_nodes", "layer_macs",
           "conv_macs", "memory_bound_elements", "MAC_BOUND_KINDS",
           "receptive_fields", "param_shapes"]
