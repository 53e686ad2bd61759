"""Layer kinds: one :class:`LayerKind` record each, in a registry.

A record holds a kind's forward pass, output shape, params (names in Keras
weight order, shapes, initializers), receptive-field window and multiply-add
count, the Keras classes it imports (and how their configs are checked and
translated) and the Keras class and config it exports as. Adding a kind is
one record and one call::

    from jaxconvviz.models.kinds import LayerKind, register_layer_kind

    register_layer_kind(LayerKind(
        "scale", apply=lambda net, spec, xs: xs[0] * spec.opt("factor"),
        keras=("Scale",), from_keras=lambda k: k.layer(factor=k.get("factor")),
        keras_class="Scale", to_keras=lambda spec: {"factor": spec.opt("factor")}))

The built-in kinds live in one module per family: the convolutions and
``dense`` in :mod:`jaxconvviz.models.layers` (next to the functions choosing
their algorithms), :mod:`~jaxconvviz.models.kinds.pool`,
:mod:`~jaxconvviz.models.kinds.norm`, :mod:`~jaxconvviz.models.kinds.merge`,
:mod:`~jaxconvviz.models.kinds.reshape` and
:mod:`~jaxconvviz.models.kinds.pointwise`; shared helpers in
:mod:`~jaxconvviz.models.kinds.common`.
"""

from __future__ import annotations

from jaxconvviz.models.kinds.registry import (
    KerasLayer,
    LayerKind,
    layer_kind,
    layer_params,
    make_params,
    register_layer_kind,
    unregister_layer_kind,
)

__all__ = ["LayerKind", "KerasLayer", "register_layer_kind",
           "unregister_layer_kind", "layer_kind", "layer_params", "make_params"]

# The built-in kinds register when jaxconvviz.models.layers is imported.
import jaxconvviz.models.layers  # noqa: E402, F401, I001
