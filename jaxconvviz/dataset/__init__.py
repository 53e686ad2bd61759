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

This package is IO (it reads image files through Pillow); only
:mod:`~jaxconvviz.dataset.stream` is compute.
"""

from jaxconvviz.dataset.crops import example_boxes, example_crops
from jaxconvviz.dataset.examples import dataset_examples
from jaxconvviz.dataset.result import DatasetExamples, LayerExamples

__all__ = ["DatasetExamples", "LayerExamples", "dataset_examples", "example_boxes",
           "example_crops"]
