"""Datasets: read a folder / list / array of images in a fixed order
(:mod:`~jaxconvviz.dataset.sources`), stream it in decoded batches
(:mod:`~jaxconvviz.dataset.loader`), checkpoint a pass
(:mod:`~jaxconvviz.dataset.checkpoint`)."""

__all__: list[str] = []
