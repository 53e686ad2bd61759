"""Flattening a Keras model config into one graph of layer entries.

Nested ``Sequential``/functional blocks are inlined under their layers' own
names, plus an identity node named after the block (its output); a nested
``Sequential`` of random augmentation layers stays one node (imported as an
identity). Layers are put in a topological order that keeps Keras' own order
among ready nodes, and :func:`prune` keeps the output's ancestors. Shared
layers, several inputs or outputs, cycles and dangling references raise
:class:`~jaxconvviz.errors.InputError` naming the file and the layer.

Pure Python on the config dicts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxconvviz.errors import InputError

#: Random data-augmentation layers: identity at inference, allowed (only) in a
#: nested ``Sequential`` such as DLwP 2nd ed.'s ``data_augmentation`` block,
#: which is imported as one identity layer.
AUGMENTATION_LAYERS = frozenset({
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomContrast",
    "RandomTranslation", "RandomBrightness",
})

#: Keras model classes (nested ones are inlined).
MODEL_CLASSES = ("Sequential", "Functional", "Model")


def keras_class(entry: Mapping) -> str:
    return str(entry.get("class_name"))


def layer_name(entry: Mapping) -> str:
    cfg = entry.get("config") or {}
    return str(entry.get("name") or cfg.get("name"))


def _history(obj: Any, out: list[str]) -> None:
    """Collect the source layer names of Keras 3 ``__keras_tensor__`` args."""
    if isinstance(obj, Mapping):
        if obj.get("class_name") == "__keras_tensor__":
            out.append(str(obj["config"]["keras_history"][0]))
            return
        for v in obj.values():
            _history(v, out)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _history(v, out)


def _inbound(entry: Mapping) -> list[list[str]]:
    """Per call of the layer, the names of the layers feeding it."""
    nodes = entry.get("inbound_nodes") or []
    calls = []
    for node in nodes:
        srcs: list[str] = []
        if isinstance(node, Mapping):  # Keras 3: {"args": [...], "kwargs": {...}}
            _history(node.get("args", []), srcs)
            _history(node.get("kwargs", {}), srcs)
        else:  # tf.keras 2: [[name, node_index, tensor_index, kwargs], ...]
            srcs = [str(t[0]) for t in node]
        calls.append(srcs)
    return calls


def endpoints(value) -> list[str]:
    """``input_layers``/``output_layers`` -> layer names (one or a list)."""
    if not value:
        return []
    if isinstance(value[0], str):
        return [value[0]]
    return [str(v[0]) for v in value]


def call_args(entry: Mapping) -> list:
    """The positional args of an op node's one call: layer names of tensors,
    numbers as they are (``x + 3.0`` in Keras 3 -> ``["conv", 3.0]``)."""
    nodes = entry.get("inbound_nodes") or []
    if not nodes or not isinstance(nodes[0], Mapping):
        return []
    out = []
    for a in nodes[0].get("args", []):
        if isinstance(a, Mapping) and a.get("class_name") == "__keras_tensor__":
            out.append(str(a["config"]["keras_history"][0]))
        elif isinstance(a, list | tuple):
            srcs: list[str] = []
            _history(a, srcs)
            out.extend(srcs)
        else:
            out.append(a)
    return out


@dataclasses.dataclass
class GraphNode:
    """One flattened graph node: its Keras entry and the node names it reads
    (``None``: an alias node, an identity named after a nested model)."""

    entry: Mapping | None
    name: str
    inputs: tuple[str, ...]
    cls: str


def _is_nested(entry: Mapping) -> bool:
    return keras_class(entry) in MODEL_CLASSES


def _augmentation_only(entry: Mapping) -> bool:
    inner = (entry.get("config") or {}).get("layers") or []
    allowed = AUGMENTATION_LAYERS | {"InputLayer", "Dropout"}
    return keras_class(entry) == "Sequential" and all(
        keras_class(e) in allowed for e in inner)


def _inline_sequential(inner: Mapping, src: str, label: str,
                       out: list[GraphNode]) -> str:
    prev = src
    for e in inner.get("layers") or []:
        if keras_class(e) == "InputLayer":
            continue
        prev = _add_node(e, (prev,), label, out)
    return prev


def _add_node(e: Mapping, srcs: tuple[str, ...], label: str,
              out: list[GraphNode]) -> str:
    """Append ``e`` (inlining nested models) fed by ``srcs``; its output name."""
    name, cls = layer_name(e), keras_class(e)
    if _is_nested(e) and not _augmentation_only(e):
        inner = e.get("config") or {}
        if len(srcs) != 1:
            raise InputError(
                f"{label}: nested model {name!r} ({cls}) takes {len(srcs)} inputs; "
                "only single-input nested models are supported.")
        if cls == "Sequential":
            last = _inline_sequential(inner, srcs[0], label, out)
        else:
            last = _inline_functional(inner, srcs, label, out)
        # an identity under the nested model's own name keeps it targetable
        out.append(GraphNode(None, name, (last,), cls))
        return name
    out.append(GraphNode(e, name, srcs, cls))
    return name


def _inline_functional(inner: Mapping, srcs: tuple[str, ...] | None, label: str,
                       out: list[GraphNode]) -> str:
    """Flatten a functional model's layers into ``out`` (topological order);
    ``srcs`` feed its inputs (None: top level, its InputLayer stays)."""
    entries = list(inner.get("layers") or [])
    by_name = {layer_name(e): e for e in entries}
    inputs = endpoints(inner.get("input_layers"))
    outputs = endpoints(inner.get("output_layers"))
    if len(inputs) != 1 or len(outputs) != 1:
        raise InputError(
            f"{label}: model {inner.get('name')!r} has {len(inputs)} input(s) "
            f"{inputs} and {len(outputs)} output(s) {outputs}; only "
            "single-input, single-output models are supported."
        )
    resolved: dict[str, str] = {}
    if srcs is None:
        resolved[inputs[0]] = inputs[0]
    else:
        resolved[inputs[0]] = srcs[0]
    calls: dict[str, list[str]] = {}
    for name, e in by_name.items():
        if keras_class(e) == "InputLayer":
            continue
        c = _inbound(e)
        if len(c) > 1:
            raise InputError(
                f"{label}: layer {name!r} ({keras_class(e)}) is called {len(c)} times "
                "(a shared layer); shared layers are not supported -- give each "
                "call its own layer.")
        if not c:
            continue  # not connected: Keras never runs it
        for s in c[0]:
            if s not in by_name:
                raise InputError(
                    f"{label}: layer {name!r} ({keras_class(e)}) reads from unknown "
                    f"layer {s!r}.")
        calls[name] = c[0]
    # Kahn's order (stable: Keras' own layer order among ready nodes)
    done = set(n for n, e in by_name.items() if keras_class(e) == "InputLayer")
    pending = [n for n in by_name if n in calls]
    while pending:
        ready = [n for n in pending if all(s in done for s in calls[n])]
        if not ready:
            raise InputError(f"{label}: the layer graph has a cycle among "
                             f"{pending[:5]}.")
        for n in ready:
            srcs_n = tuple(resolved[s] for s in calls[n]) if calls[n] else ()
            resolved[n] = _add_node(by_name[n], srcs_n, label, out)
            done.add(n)
        pending = [n for n in pending if n not in done]
    if outputs[0] not in resolved:
        raise InputError(f"{label}: output layer {outputs[0]!r} is not connected "
                         "to the input.")
    return resolved[outputs[0]]


def graph_nodes(config: Mapping, label: str) -> tuple[str, list[GraphNode], str, Any,
                                                        Mapping]:
    """(model name, flattened nodes, input name, build shape, input entry)."""
    cls = keras_class(config)
    inner = config.get("config") or {}
    nodes: list[GraphNode] = []
    if cls == "Sequential":
        layers = list(inner.get("layers") or [])
        if not layers:
            raise InputError(f"{label}: the model has no layers.")
        first = layers[0]
        in_name = layer_name(first) if keras_class(first) == "InputLayer" else "input"
        _inline_sequential(inner, in_name, label, nodes)
        build = inner.get("build_input_shape")
        in_entry = first
    elif cls in ("Functional", "Model"):
        by_name = {layer_name(e): e for e in inner.get("layers") or []}
        ins = endpoints(inner.get("input_layers"))
        _inline_functional(inner, None, label, nodes)
        in_name = ins[0]
        in_entry = by_name.get(in_name, {})
        build = None
    else:
        raise InputError(
            f"{label}: model class {cls!r} is not supported; expected a "
            "Sequential or functional Model (subclassed models store no layer "
            "graph)."
        )
    if not nodes:
        raise InputError(f"{label}: the model has no layers besides its input.")
    return str(inner.get("name") or "keras_model"), nodes, in_name, build, in_entry


def prune(nodes: list[GraphNode], out: str) -> list[GraphNode]:
    """The ancestors of the output node ``out``, in order (``out`` last)."""
    keep = {out}
    for n in reversed(nodes):
        if n.name in keep:
            keep.update(n.inputs)
    return [n for n in nodes if n.name in keep]


__all__ = ["AUGMENTATION_LAYERS", "MODEL_CLASSES", "GraphNode", "graph_nodes",
           "prune", "keras_class", "layer_name", "endpoints", "call_args"]
