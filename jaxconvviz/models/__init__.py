"""Networks and their weights.

The Keras-named ConvNet (its graph, VGG16 presets, imported Keras models),
preprocessing, labels, forward/predict and weight files.
"""

__all__: list[str] = []  # the public names are re-exported by jaxconvviz
