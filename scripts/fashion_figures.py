"""Figures of the Fashion-MNIST note (chapter 8-3 of a Korean ML textbook,
"visualizing a convnet"): weights, kernels and feature maps of its small CNN.

Imported by the training script (``scripts/train_fashion_cnn.py``), which
trains the note's model and then calls :func:`save_note_figures`::

    from fashion_figures import save_note_figures
    paths = save_note_figures(untrained_params, trained_params, model,
                              test_image, "fashion_out")

It writes, like the note:

* ``note_weights_hist_<conv1>.png`` -- histograms of conv1's 288 weights, trained
  next to untrained, mean and std in the legends (the note prints
  ``-0.021 0.235`` for its trained model);
* ``note_kernels_<conv1>_trained.png`` / ``note_kernels_<conv1>_untrained.png`` -- the
  32 3x3 kernels as a 2x16 grid on the note's fixed scale ``vmin=-0.5,
  vmax=0.5``;
* ``note_feature_maps_<conv1>.png`` (4x8, 32 maps) and ``note_feature_maps_<conv2>.png``
  (8x8, 64 maps) of one image through the trained model;
* ``note_input_image.png`` -- the image (``cmap='gray_r'`` as the note).

The note's untrained model is a fresh Keras Conv2D, i.e. ``glorot_uniform``
kernels (a flat histogram); :func:`keras_untrained_params` makes those.
Flax's ``init_params`` default (lecun_normal) would look bell-shaped instead.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

import jaxconvviz as jcv
from jaxconvviz.commands.common import save_figure
from jaxconvviz.models.convnet import ConvNet, Layer
from jaxconvviz.views.kernels import glorot_uniform_like

#: The note's fixed colour scale of the kernel grids.
KERNEL_LIMIT = 0.5


def fashion_note_model() -> ConvNet:
    """The note's (8-2) CNN, Keras layer names: conv 32 3x3 same relu
    ``conv2d``, 2x2 max pool, conv 64 3x3 same relu ``conv2d_1``, max pool,
    flatten, dense 100 relu, dropout 0.4, dense 10 softmax; input 28x28x1
    scaled by 1/255 (``preprocessing="scale01"``)."""
    layers = (
        Layer.make("conv2d", "conv", features=32, kernel_size=3, padding="same",
                   activation="relu"),
        Layer.make("max_pooling2d", "maxpool", pool_size=2, strides=2,
                   padding="valid"),
        Layer.make("conv2d_1", "conv", features=64, kernel_size=3, padding="same",
                   activation="relu"),
        Layer.make("max_pooling2d_1", "maxpool", pool_size=2, strides=2,
                   padding="valid"),
        Layer.make("flatten", "flatten"),
        Layer.make("dense", "dense", features=100, activation="relu"),
        Layer.make("dropout", "dropout", rate=0.4),
        Layer.make("dense_1", "dense", features=10, activation="softmax"),
    )
    return ConvNet(layers=layers, input_shape=(28, 28, 1), preprocessing="scale01",
                   name_="fashion_cnn")


def keras_untrained_params(model: ConvNet, *, key: jax.Array) -> dict:
    """Params as a fresh Keras model has them: glorot_uniform kernels, zero
    biases (conv and dense layers)."""
    params = model.init_params(key)
    out = {}
    for i, (name, leaves) in enumerate(sorted(params.items())):
        leaves = dict(leaves)
        if "kernel" in leaves:
            leaves["kernel"] = glorot_uniform_like(leaves["kernel"],
                                                   key=jax.random.fold_in(key, i))
        if "bias" in leaves:
            leaves["bias"] = jax.numpy.zeros_like(leaves["bias"])
        out[name] = leaves
    return out


def _as_image(image) -> np.ndarray:
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[-1] != 1:
        raise ValueError(f"image must be one grey image (h, w) or (h, w, 1) in "
                         f"[0, 255]; got shape {x.shape}.")
    return x


def save_note_figures(untrained_params, trained_params, model: ConvNet, image,
                      out_dir, *, limit: float = KERNEL_LIMIT, bins: int = 10
                      ) -> dict[str, Path]:
    """Write the note's figures for a trained and an untrained model.

    Args:
      untrained_params: params of the untrained model (the note: a fresh Keras
        Conv2D; see :func:`keras_untrained_params`).
      trained_params: params after training.
      model: the network (e.g. :func:`fashion_note_model`); its first two conv
        layers are "conv1" and "conv2".
      image: one Fashion-MNIST image, ``(28, 28)`` or ``(28, 28, 1)``, raw
        pixels in [0, 255] (``model.preprocess`` scales them, as the note's
        ``/ 255.0``).
      out_dir: directory to write into (created).
      limit: kernel colour scale ``-limit..limit`` (the note: 0.5).
      bins: histogram bins (the note: matplotlib's default 10).

    Returns:
      ``{figure name: path}`` of the PNGs written.
    """
    from matplotlib.figure import Figure

    from jaxconvviz.plotting import (
        plot_feature_maps,
        plot_kernels,
        plot_weight_histograms,
    )

    if len(model.conv_layers) < 2:
        raise ValueError(f"model must have two conv layers; got {model.conv_layers}.")
    conv1, conv2 = model.conv_layers[:2]
    x = _as_image(image)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    def save(name, fig):
        paths[name] = save_figure(fig, out / f"note_{name}.png")

    fig = Figure(figsize=(3.2, 3.4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(x[..., 0], cmap="gray_r", vmin=0, vmax=255)
    ax.set_axis_off()
    ax.set_title("input image", fontsize=10)
    save("input_image", fig)

    k_tr = np.asarray(trained_params[conv1]["kernel"])
    k_un = np.asarray(untrained_params[conv1]["kernel"])
    save(f"weights_hist_{conv1}", plot_weight_histograms(
        {"trained": k_tr, "untrained": k_un}, layer=conv1, bins=bins,
        layout="side"))
    for label, params in (("trained", trained_params),
                          ("untrained", untrained_params)):
        kg = jcv.kernel_grid(params, conv1, model=model, channel=0, limit=limit)
        save(f"kernels_{conv1}_{label}", plot_kernels(
            np.asarray(kg.kernels), vmin=kg.vmin, vmax=kg.vmax, n_cols=16,
            title=f"{conv1} ({label}): {len(kg.filters)} kernels, "
            f"vmin={kg.vmin:g}, vmax={kg.vmax:g}"))
    acts = jcv.activations(trained_params, x[None], layers=(conv1, conv2),
                           model=model)
    for name in (conv1, conv2):
        maps = np.asarray(acts[name][0])
        save(f"feature_maps_{name}", plot_feature_maps(maps, layer=name, n_cols=8))
    return paths


__all__ = ["fashion_note_model", "keras_untrained_params", "save_note_figures",
           "KERNEL_LIMIT"]
