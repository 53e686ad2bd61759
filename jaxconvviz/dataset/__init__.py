"""Datasets: every unit's top examples and statistics over a whole image dataset.

:func:`dataset_examples` streams a dataset through a model
(:mod:`~jaxconvviz.dataset.examples`; the device state and its merge are in
:mod:`~jaxconvviz.dataset.stream`) and returns a
:class:`DatasetExamples` (:mod:`~jaxconvviz.dataset.result`);
:mod:`~jaxconvviz.dataset.crops` cuts each example's receptive field from
the original files. Reading: a folder / list / array of images in a fixed
order (:mod:`~jaxconvviz.dataset.sources`), decoded batches
(:mod:`~jaxconvviz.dataset.loader`), atomic checkpoints
(:mod:`~jaxconvviz.dataset.checkpoint`).

Its modules read image files through Pillow, except
:mod:`~jaxconvviz.dataset.stream` (compute); so that importing that one
pulls in no Pillow, the names below load on first use (PEP 562).
"""

import importlib

#: Public name -> its module.
_LAZY = {
    "DatasetExamples": "result",
    "LayerExamples": "result",
    "dataset_examples": "examples",
    "example_boxes": "crops",
    "example_crops": "crops",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
