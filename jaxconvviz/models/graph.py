"""The graph of a :class:`~jaxconvviz.models.convnet.ConvNet`: its layer specs
(:class:`Layer`) and the topology derived from them (each layer's sources,
ancestors, cuts), checked once and memoized per layer tuple.

Imports only the layer-kind table (:mod:`jaxconvviz.models.layers`).
"""

from __future__ import annotations

import functools

from jaxconvviz.errors import InputError
from jaxconvviz.models.kinds.registry import Layer
from jaxconvviz.models.layers import KINDS

#: Derived facts of a layer tuple (names, index, sources, shapes...), keyed
#: by the tuple's identity: see :func:`memo`.
_MEMO: dict[int, tuple[tuple, dict]] = {}
_MEMO_MODELS = 64
_MEMO_ENTRIES = 4096


def memo(layers: tuple) -> dict:
    """A dict of facts derived from exactly this ``layers`` tuple.

    Why identity and not ``functools.lru_cache``: a model's metadata
    (``layer_index``, ``sources``, ``output_shape``, ``default_layer``...) is
    read dozens of times per call of a technique, and an ``lru_cache`` keyed
    by the tuple hashes its hundreds of frozen ``Layer`` dataclasses every
    time (Python caches no tuple hash). Measured on a 2-core CPU, that and
    the repeated lookups were 5.3 ms of MobileNetV2's 14 ms one-image
    Grad-CAM and 20 ms of DenseNet121's 72 ms. The entry holds the tuple
    itself, so its ``id`` cannot be reused while the entry lives; clones of
    a model share the tuple and so the facts.
    """
    hit = _MEMO.get(id(layers))
    if hit is None or hit[0] is not layers:
        if len(_MEMO) >= _MEMO_MODELS:
            _MEMO.pop(next(iter(_MEMO)))
        hit = _MEMO[id(layers)] = (layers, {})
    elif len(hit[1]) > _MEMO_ENTRIES:  # e.g. output_shape at many sizes
        hit[1].clear()
    return hit[1]


def memoized(layers: tuple, key, compute):
    facts = memo(layers)
    try:
        return facts[key]
    except KeyError:
        value = facts[key] = compute()
        return value


@functools.lru_cache(maxsize=256)
def graph_sources(layers: tuple[Layer, ...], input_name: str
                  ) -> tuple[tuple[int, ...], ...]:
    """Per layer, the indices of its inputs (-1: the model input); checks the
    topology (known names in topological order, arity, no dead ends)."""
    index: dict[str, int] = {}
    sources: list[tuple[int, ...]] = []
    for i, spec in enumerate(layers):
        if spec.name in index or spec.name == input_name:
            raise InputError(f"two layers (or a layer and the input) are named "
                             f"{spec.name!r}.")
        if spec.inputs:
            try:
                src = tuple(-1 if n == input_name else index[n] for n in spec.inputs)
            except KeyError as e:
                raise InputError(
                    f"layer {spec.name!r} reads {e.args[0]!r}, which is not the "
                    f"input {input_name!r} nor a layer before it (layers must be "
                    "in topological order).") from None
        else:
            src = (i - 1,)
        merge = KINDS[spec.kind].merge
        if (len(src) < 2) if merge else (len(src) != 1):
            raise InputError(
                f"layer {spec.name!r} ({spec.kind}) takes "
                f"{'two or more inputs' if merge else 'one input'}; got "
                f"{len(src)} ({', '.join(spec.inputs) or 'the previous layer'}).")
        index[spec.name] = i
        sources.append(src)
    if layers:
        used = ancestors(tuple(sources), len(layers) - 1)
        dead = [s.name for i, s in enumerate(layers) if i not in used]
        if dead:
            raise InputError(
                f"layers {dead} do not feed the output layer "
                f"{layers[-1].name!r} (the last one); drop them or reorder.")
    return tuple(sources)


@functools.lru_cache(maxsize=4096)
def ancestors(sources: tuple[tuple[int, ...], ...], i: int) -> frozenset[int]:
    """Layer ``i`` and every layer it depends on (not the input, -1)."""
    seen, todo = {i}, [i]
    while todo:
        for j in sources[todo.pop()]:
            if j >= 0 and j not in seen:
                seen.add(j)
                todo.append(j)
    return frozenset(seen)


@functools.lru_cache(maxsize=1024)
def bypasses(sources: tuple[tuple[int, ...], ...], cut: int) -> frozenset[int]:
    """Layers reachable from the input on a path that avoids layer ``cut``."""
    reach: set[int] = set()
    for i, src in enumerate(sources):
        if i != cut and any(j == -1 or j in reach for j in src):
            reach.add(i)
    return frozenset(reach)


__all__ = ["Layer", "ancestors", "bypasses", "graph_sources", "memo", "memoized"]
