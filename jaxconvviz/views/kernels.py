"""Kernel (weight) views: conv filters as small images, weight histograms.

The Fashion-MNIST note (chapter 8-3 of a Korean ML textbook) looks at a
trained CNN's weights directly: the 32 first-layer 3x3 kernels drawn as a
2x16 grid with a fixed colour scale (``vmin=-0.5, vmax=0.5``) and a histogram
of all weights with their mean and std, each next to an untrained model's.
These are the pure parts; :mod:`jaxconvviz.plotting` draws them.

Kernels are Keras/Flax HWIO ``(kh, kw, in, out)``. Any conv layer of any
:class:`~jaxconvviz.models.convnet.ConvNet` works (``model=``; None infers VGG16).

Imports jax and numpy only (no matplotlib / PIL / h5py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxconvviz._types import Params
from jaxconvviz.errors import InputError
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.models.vgg import resolve_model


class KernelGrid(NamedTuple):
    """Conv kernels ready to draw (see :func:`kernel_grid`).

    Attributes:
      kernels: ``(n, kh, kw)`` float32 weights, or with ``rgb`` ``(n, kh, kw, 3)``
        RGB display images in [0, 1] (weight ``vmin`` -> 0, 0 -> 0.5,
        ``vmax`` -> 1, per colour channel).
      vmin, vmax: weight values at the two ends of the colour scale
        (symmetric: ``vmin == -vmax``).
      rgb: whether ``kernels`` are RGB images.
      filters: the output-filter index of each kernel.
      channel: the input channel shown, or ``"mean"`` (averaged over input
        channels) or ``"rgb"``.
    """

    kernels: jnp.ndarray
    vmin: float
    vmax: float
    rgb: bool
    filters: tuple[int, ...]
    channel: int | str


class WeightHistogram(NamedTuple):
    """Histogram and moments of one layer's weights (see :func:`weight_histogram`).

    Attributes:
      counts: ``(bins,)`` int64, summing to ``size`` when no range clips.
      edges: ``(bins + 1,)`` float64 bin edges.
      mean, std: of all the weights (the note prints both).
      size: number of weights.
    """

    counts: np.ndarray
    edges: np.ndarray
    mean: float
    std: float
    size: int


def layer_kernel(params: Params, layer: str, *, model: ConvNet | None = None,
                 kinds: tuple[str, ...] = ("conv",)) -> jnp.ndarray:
    """The ``kernel`` array of ``layer`` after checking the name.

    Args:
      params: ``{layer: {"kernel", "bias"}}``.
      layer: a layer of ``model`` whose kind is in ``kinds``.
      model: the network; None infers the VGG16 preset from ``params``.

    Returns:
      The kernel as float32 (conv: HWIO ``(kh, kw, in, out)``; dense
      ``(in, out)``).
    """
    model = resolve_model(params, model=model)
    allowed = tuple(s.name for s in model.layers if s.kind in kinds)
    model.check_layer(layer, allowed, name="layer")
    try:
        kernel = params[layer]["kernel"]
    except (KeyError, TypeError):
        raise InputError(
            f"params have no kernel for layer {layer!r}; found layers "
            f"{sorted(params)[:12]}."
        ) from None
    return jnp.asarray(kernel, jnp.float32)


def _check_index(v, n: int, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < n:
        raise InputError(f"{name} must be an integer in 0..{n - 1}; got {v!r}.")
    return int(v)


def kernel_grid(params: Params, layer: str, *, model: ConvNet | None = None,
                channel: int | None = None, filters: Sequence[int] | None = None,
                rgb: bool | None = None, limit: float | None = None
                ) -> KernelGrid:
    """A conv layer's kernels as small images with one shared colour scale.

    Which 2-D slice of each HWIO kernel ``(kh, kw, in, out)`` is shown:

    * ``channel=i``: input channel ``i`` of every filter, ``(n, kh, kw)``
      (the note's ``conv_weights[:, :, 0, k]`` is ``channel=0``);
    * ``channel=None`` with 1 input channel: that channel;
    * ``channel=None`` with 3 input channels (a colour first layer such as
      VGG16 ``block1_conv1``, 3x3x3x64) and ``rgb`` not False: each filter as
      a tiny RGB image ``(n, kh, kw, 3)``, ``0.5 + w / (2 * limit)`` per colour
      channel, so grey = 0 and the same ``limit`` for all filters. The input
      channels are put in RGB order as the model's own preprocessing maps
      them (VGG16's caffe input is BGR, so they are reversed);
    * ``channel=None`` otherwise (deeper layers): the mean over the input
      channels -- a summary; pick ``channel=`` to see actual weights.

    Args:
      params: model weights.
      layer: a conv layer of ``model``.
      model: the network; None infers the VGG16 preset from ``params``.
      channel: input channel to show, or None (see above).
      filters: output filters to show (indices), None = all, in order.
      rgb: force (True) or refuse (False) the RGB view; None = automatic.
      limit: colour-scale half range: ``vmin = -limit, vmax = limit``. None =
        the largest ``|w|`` shown (1.0 if all are 0). The note fixes 0.5 so
        trained and untrained kernels share a scale.

    Returns:
      :class:`KernelGrid`.

    Raises:
      ValueError: not a conv layer, bad ``channel``/``filters``/``limit``,
        ``rgb=True`` on a layer without 3 input channels or with ``channel``.
    """
    model = resolve_model(params, model=model)
    kernel = layer_kernel(params, layer, model=model)
    if kernel.ndim != 4:
        raise InputError(
            f"layer {layer!r} kernel must be HWIO (kh, kw, in, out); got shape "
            f"{tuple(kernel.shape)}."
        )
    cin, cout = int(kernel.shape[2]), int(kernel.shape[3])
    if filters is None:
        filters = tuple(range(cout))
    else:
        filters = tuple(_check_index(f, cout, "filters") for f in filters)
        if not filters:
            raise InputError("filters must select at least one filter; got none.")
    if channel is not None:
        channel = _check_index(channel, cin, "channel")
    if limit is not None and not (np.isfinite(limit) and limit > 0):
        raise InputError(f"limit must be a positive number or None; got {limit!r}.")
    if rgb is None:
        rgb = channel is None and cin == 3
    elif rgb and (cin != 3 or channel is not None):
        raise InputError(
            f"rgb=True needs a layer with 3 input channels and channel=None; "
            f"got {cin} input channels and channel={channel!r}."
        )
    k = kernel[..., jnp.asarray(filters)]  # (kh, kw, in, n)
    if rgb:
        k = jnp.transpose(k, (3, 0, 1, 2))[..., _rgb_order(model)]  # (n, kh, kw, 3)
        lim = _limit(k, limit)
        img = jnp.clip(0.5 + k / (2.0 * lim), 0.0, 1.0)
        return KernelGrid(img, -lim, lim, True, filters, "rgb")
    if channel is not None:
        k2, which = k[:, :, channel, :], channel
    elif cin == 1:
        k2, which = k[:, :, 0, :], 0
    else:
        k2, which = k.mean(axis=2), "mean"
    k2 = jnp.transpose(k2, (2, 0, 1))  # (n, kh, kw)
    lim = _limit(k2, limit)
    return KernelGrid(k2, -lim, lim, False, filters, which)


def _rgb_order(model: ConvNet) -> jnp.ndarray:
    """Which input channel of ``model`` each of R, G, B lands in, read off the
    model's own preprocessing (caffe: BGR, so ``(2, 1, 0)``)."""
    probe = 255.0 * jnp.eye(3, dtype=jnp.float32).reshape(1, 1, 3, 3)  # R, G, B px
    lin = model.preprocess(probe) - model.preprocess(jnp.zeros_like(probe))
    return jnp.argmax(jnp.abs(lin[0, 0]), axis=-1)


def _limit(k, limit):
    if limit is not None:
        return float(limit)
    m = float(jnp.abs(k).max())
    return m if m > 0 else 1.0


def weight_histogram(params: Params, layer: str, *, model: ConvNet | None = None,
                     bins: int = 10, value_range: tuple[float, float] | None = None
                     ) -> WeightHistogram:
    """Histogram, mean and std of a conv or dense layer's kernel weights.

    The note's ``plt.hist(conv_weights.reshape(-1, 1))`` (numpy/matplotlib
    default: 10 equal bins over the min..max) and
    ``print(conv_weights.mean(), conv_weights.std())``. Biases are not
    included, as in the note.

    Args:
      params: model weights.
      layer: a conv or dense layer of ``model``.
      model: the network; None infers the VGG16 preset from ``params``.
      bins: number of equal-width bins, >= 1.
      value_range: ``(lo, hi)`` of the bins (share it to compare two models);
        None = the weights' min and max. Weights outside are not counted.

    Returns:
      :class:`WeightHistogram` (NumPy arrays; moments in float64).
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise InputError(f"bins must be an integer >= 1; got {bins!r}.")
    if value_range is not None:
        lo, hi = value_range
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise InputError(
                f"value_range must be (lo, hi) with finite lo < hi; got "
                f"{value_range!r}."
            )
    model = resolve_model(params, model=model)
    w = np.asarray(layer_kernel(params, layer, model=model, kinds=("conv", "dense")),
                   np.float64).ravel()
    counts, edges = np.histogram(w, bins=int(bins), range=value_range)
    return WeightHistogram(counts.astype(np.int64), edges, float(w.mean()),
                           float(w.std()), int(w.size))


def glorot_uniform_like(kernel, *, key: jax.Array) -> jax.Array:
    """A fresh kernel as Keras initialises it (an *untrained* layer).

    Keras' default ``kernel_initializer`` for Conv2D and Dense is
    ``glorot_uniform``: uniform on ``[-l, l]`` with
    ``l = sqrt(6 / (fan_in + fan_out))``, ``fan_in = kh * kw * in`` and
    ``fan_out = kh * kw * out`` for a conv (``in``/``out`` for a dense
    kernel) -- the flat histogram the note shows for its untrained model.
    (Flax's own default, used by ``ConvNet.init_params``, is lecun_normal.)

    Args:
      kernel: an HWIO ``(kh, kw, in, out)`` or dense ``(in, out)`` kernel (only
        its shape is used).
      key: PRNG key.

    Returns:
      float32 array of ``kernel``'s shape.
    """
    shape = tuple(getattr(kernel, "shape", ()))
    if len(shape) < 2:
        raise InputError(f"kernel must be at least 2-D (..., in, out); got shape "
                         f"{shape}.")
    init = jax.nn.initializers.glorot_uniform(in_axis=-2, out_axis=-1)
    return init(key, shape, jnp.float32)


__all__ = [
    "KernelGrid",
    "WeightHistogram",
    "kernel_grid",
    "glorot_uniform_like",
    "layer_kernel",
    "weight_histogram",
]
