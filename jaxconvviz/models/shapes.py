"""Analytic shapes, receptive fields and multiply-add counts of ConvNet layers.

Everything here is arithmetic on layer specs -- no tracing, no arrays -- so
it is free to call before compute (input checks, device plans, benchmarks).
Functions take the layer specs, each layer's input indices (``-1`` is the
model input; see :meth:`ConvNet.sources
<jaxconvviz.models.convnet.ConvNet.sources>`) and per-example shapes without
the batch axis: ``(h, w, c)`` for feature maps, ``(units,)`` after a global
pool or flatten. ``h`` or ``w`` below 1 means the input is too small.

Each kind's own arithmetic (output shape, params, window, multiply-adds)
is in its layer-kind record (:mod:`jaxconvviz.models.kinds`); this module
walks the graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

from jaxconvviz.errors import InputError
from jaxconvviz.models.kinds.common import conv_out
from jaxconvviz.models.kinds.registry import (
    KINDS,
    MAC_BOUND_KINDS,
    RecordField,
    param_specs,
)

Shape = tuple[int, ...]

#: kind -> ``shape(spec, input_shapes) -> output shape`` (batch axis omitted):
#: a live view of the layer-kind records' ``shape``.
SHAPES: Mapping[str, Callable] = RecordField("shape")


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
    return {n: shape for n, shape, _ in param_specs(spec, in_shape)}


def spatial_nodes(layers: Sequence, sources: Sequence[tuple[int, ...]]
                  ) -> tuple[bool, ...]:
    """Per layer: whether its output is a ``(h, w, c)`` map over the input's
    pixels (rank 3 and fed by such a map; a global pool, flatten or reshape
    ends it, so a squeeze-excite branch's ``(1, 1, c)`` is not spatial, but
    the product of the gate with the feature map is)."""
    out: list[bool] = []
    for i, spec in enumerate(layers):
        fed = any(j == -1 or out[j] for j in sources[i])
        out.append(fed and KINDS[spec.kind].is_spatial(spec))
    return tuple(out)


def layer_macs(spec, in_shape: Shape, out_shape: Shape, *, channels: int | None = None
               ) -> int:
    """Multiply-adds of one layer for one example (convs and dense layers;
    0 for the rest). ``channels``: count only that many output channels."""
    macs = KINDS[spec.kind].macs
    return 0 if macs is None else int(macs(spec, in_shape, out_shape, channels))


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


def memory_bound_elements(model, layer: str, size: int) -> int:
    """Output elements of the memory-bound nodes ``layer`` depends on (every
    kind but :data:`MAC_BOUND_KINDS`; ``layer`` included), for one ``size`` x
    ``size`` image: the memory traffic a multiply-add count misses, which
    dominates graphs of many small nodes (MobileNet, EfficientNet)."""
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
        record = KINDS[layers[i].kind]
        ins = [rf[j] for j in sources[i]]
        if record.spatial is False or any(r == ((0, 0), (0, 0)) for r in ins):
            rf[i] = ((0, 0), (0, 0))
            continue
        size = tuple(max(r[a][0] for r in ins) for a in range(2))
        jump = tuple(max(r[a][1] for r in ins) for a in range(2))
        if record.window is not None:
            k, s, d = record.window(layers[i])
            rf[i] = tuple((size[a] + (k[a] - 1) * d[a] * jump[a], jump[a] * s[a])
                          for a in range(2))
        else:
            rf[i] = tuple((size[a], jump[a]) for a in range(2))
    del rf[-1]
    return rf


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InputError(f"kind must be one of {tuple(KINDS)}; got {kind!r}.")


__all__ = ["SHAPES", "conv_out", "node_shapes", "spatial_nodes", "layer_macs",
           "conv_macs", "memory_bound_elements", "MAC_BOUND_KINDS",
           "receptive_fields", "param_shapes"]
