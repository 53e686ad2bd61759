"""Intermediate-activation grids: every channel of a layer as one tiled image.

The book's listing 5.31 ("Visualizing every channel in every intermediate
activation") as pure functions. Each channel of one image's ``(h, w, c)``
activation is standardised on its own, ``(x - mean) / std * 64 + 128``, and
clipped to [0, 255] -- a standard score of +-2 spans the range -- and the
channels are tiled ``images_per_row`` to a row.

Unlike the book, a *dead* channel (constant over the image, e.g. a ReLU map
that is 0 everywhere, so ``std == 0``) does not divide by zero: it is shown
flat at ``dead_value`` (default 0, which is what the book's NaN became after
``astype('uint8')``, so its figures show dead channels as the darkest colour).

Imports jax and numpy only (no matplotlib / PIL / h5py).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jaxconvviz._types import Params
from jaxconvviz.backend import xla
from jaxconvviz.errors import InputError
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.models.predict import activations as _activations
from jaxconvviz.models.predict import check_layers
from jaxconvviz.models.vgg import resolve_model
from jaxconvviz.pixels import check_pixel_range

#: The book's display mapping: standard score * SCALE + OFFSET, clipped.
SCALE = 64.0
OFFSET = 128.0
#: The book shows the first 8 layers (``model.layers[:8]``).
DEFAULT_NUM_LAYERS = 8


def _check_rank(acts, rank: int, name: str, want: str):
    shape = getattr(acts, "shape", None)
    if shape is None or len(shape) != rank:
        got = tuple(shape) if shape is not None else type(acts).__name__
        hint = ""
        if shape is not None and len(shape) == rank + 1 and rank == 3:
            hint = " (one image: pass acts[0], or use activation_grids for a batch)"
        if shape is not None and len(shape) == 2:
            hint = " (a dense/flatten layer has no spatial map)"
        raise InputError(f"{name} must have shape {want}; got {got}{hint}.")
    if min(shape) < 1:
        raise InputError(f"{name} must not be empty; got shape {tuple(shape)}.")


def _check_per_row(images_per_row) -> int:
    if (isinstance(images_per_row, bool) or not isinstance(images_per_row, int)
            or images_per_row < 1):
        raise InputError(
            f"images_per_row must be an integer >= 1; got {images_per_row!r}."
        )
    return int(images_per_row)


def grid_shape(num_channels: int, *, images_per_row: int = 16) -> tuple[int, int]:
    """``(rows, cols)`` of tiles :func:`activation_grid` uses for ``num_channels``.

    ``cols = min(images_per_row, num_channels)`` (a layer with fewer channels
    than ``images_per_row`` gets one unpadded row) and
    ``rows = ceil(num_channels / cols)``; the book uses
    ``num_channels // images_per_row`` rows and silently drops the remainder.
    """
    images_per_row = _check_per_row(images_per_row)
    cols = min(images_per_row, int(num_channels))
    return math.ceil(int(num_channels) / cols), cols


def standardize_channels(acts: Float[Array, "h w c"], *, dead_value: float = 0.0
                         ) -> Float[Array, "h w c"]:
    """Per-channel ``clip((x - mean) / std * 64 + 128, 0, 255)``, NaN-free.

    Args:
      acts: one image's activation, ``(h, w, c)`` float (any layer output).
      dead_value: value of every pixel of a channel that is constant over the
        image (``std == 0``); default 0 like the book's figures (its NaN cast
        to uint8). 128 is the other natural choice (the mean's colour).

    Returns:
      ``(h, w, c)`` float32 in [0, 255] (not rounded; the book truncates to
      uint8 before display, which moves values by less than one grey level).
    """
    _check_rank(acts, 3, "acts", "(h, w, c)")
    return _standardize(jnp.asarray(acts, jnp.float32), jnp.float32(dead_value))


@xla.jit
def _standardize(x, dead_value):
    mean = x.mean(axis=(0, 1), keepdims=True)
    std = x.std(axis=(0, 1), keepdims=True)
    # Exactly constant channels are dead. Testing max == min (not std == 0)
    # also catches constants whose float32 mean is off by an ulp, which would
    # otherwise give a tiny std and pure rounding noise scaled to +-64.
    dead = (x.max(axis=(0, 1), keepdims=True) == x.min(axis=(0, 1), keepdims=True)
            ) | (std == 0)
    z = (x - mean) / jnp.where(dead, 1.0, std)
    y = jnp.clip(z * SCALE + OFFSET, 0.0, 255.0)
    return jnp.where(dead, dead_value, y)


@functools.partial(xla.jit, static_argnames=("rows", "cols"))
def _tile(maps, pad_value, *, rows, cols):
    """(h, w, c) -> (rows*h, cols*w); channel k at tile (k // cols, k % cols)."""
    h, w, c = maps.shape
    n = rows * cols
    maps = jnp.moveaxis(maps, -1, 0)[:n]
    if n > maps.shape[0]:
        pad = jnp.full((n - maps.shape[0], h, w), pad_value, maps.dtype)
        maps = jnp.concatenate([maps, pad], axis=0)
    return maps.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(
        rows * h, cols * w)


def tile_channels(maps: Float[Array, "h w c"], *, n_rows: int, n_cols: int,
                  pad_value: float = 0.0) -> Float[Array, "H W"]:
    """Tile the channels of ``maps`` row-major into an ``n_rows x n_cols`` grid.

    Channel ``k`` fills rows ``(k // n_cols) * h`` onward and columns
    ``(k % n_cols) * w`` onward (reading order, as the book's loops place
    ``col * images_per_row + row``). Channels beyond ``n_rows * n_cols`` are
    left out; missing ones are tiles of ``pad_value``.

    Args:
      maps: ``(h, w, c)`` float, any values (no rescaling here).
      n_rows, n_cols: grid size in tiles, >= 1.
      pad_value: fill of tiles with no channel.

    Returns:
      ``(n_rows * h, n_cols * w)`` float32.
    """
    _check_rank(maps, 3, "maps", "(h, w, c)")
    for name, v in (("n_rows", n_rows), ("n_cols", n_cols)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{name} must be an integer >= 1; got {v!r}.")
    return _tile(jnp.asarray(maps, jnp.float32), jnp.float32(pad_value),
                 rows=int(n_rows), cols=int(n_cols))


def activation_grid(acts: Float[Array, "h w c"], *, images_per_row: int = 16,
                    dead_value: float = 0.0, pad_value: float = 0.0
                    ) -> Float[Array, "H W"]:
    """The book's display grid of every channel of one image's activation.

    Each channel is standardised on its own (:func:`standardize_channels`:
    ``(x - mean) / std * 64 + 128`` clipped to [0, 255], dead channels flat at
    ``dead_value``) and the channels are tiled in reading order: channel ``k``
    sits at tile row ``k // cols``, tile column ``k % cols`` with
    ``cols = min(images_per_row, c)`` (the book's ``display_grid[col * size:
    ..., row * size: ...]`` with ``channel = col * images_per_row + row``).
    The last row is padded with ``pad_value`` tiles (the book's grid is
    ``np.zeros`` and it drops a partial last row instead). No gaps between
    tiles, as in the book.

    Args:
      acts: one image's activation, ``(h, w, c)`` float, e.g.
        ``jcv.activations(params, x, layers=[name])[name][0]``.
      images_per_row: tiles per row (book: 16), >= 1.
      dead_value: pixel value of constant (``std == 0``) channels; default 0.
      pad_value: pixel value of the padding tiles of the last row; default 0.

    Returns:
      ``(rows * h, cols * w)`` float32 in [0, 255] (see :func:`grid_shape`).

    Raises:
      ValueError: ``acts`` is not rank 3 or is empty, ``images_per_row < 1``.
    """
    _check_rank(acts, 3, "acts", "(h, w, c)")
    rows, cols = grid_shape(acts.shape[-1], images_per_row=images_per_row)
    x = _standardize(jnp.asarray(acts, jnp.float32), jnp.float32(dead_value))
    return _tile(x, jnp.float32(pad_value), rows=rows, cols=cols)


def activation_grids(acts: Float[Array, "n h w c"], *, images_per_row: int = 16,
                     dead_value: float = 0.0, pad_value: float = 0.0
                     ) -> Float[Array, "n H W"]:
    """:func:`activation_grid` of every image of a batch (``vmap``; each image
    is standardised on its own, so ``out[i] == activation_grid(acts[i])``).

    Args:
      acts: ``(n, h, w, c)`` float, a layer's activation for a batch.

    Returns:
      ``(n, rows * h, cols * w)`` float32 in [0, 255].
    """
    _check_rank(acts, 4, "acts", "(n, h, w, c)")
    rows, cols = grid_shape(acts.shape[-1], images_per_row=images_per_row)
    dv, pv = jnp.float32(dead_value), jnp.float32(pad_value)
    one = functools.partial(_tile, rows=rows, cols=cols)
    return jax.vmap(lambda a: one(_standardize(a, dv), pv))(
        jnp.asarray(acts, jnp.float32))


def feature_map_grid(maps: Float[Array, "h w c"], *, n_rows: int | None = None,
                     n_cols: int = 8, normalize: bool = True,
                     pad_value: float = 0.0) -> Float[Array, "H W"]:
    """The Fashion-MNIST note's grid of one image's feature maps (4x8, 8x8).

    The note draws ``feature_maps[0, :, :, i * 8 + j]`` in subplot ``(i, j)``
    with ``imshow``'s default autoscaling, i.e. each map stretched from its
    own minimum to its own maximum; ``normalize=True`` does the same, mapping
    each map to [0, 1] (a constant map becomes 0, the lowest colour, as
    matplotlib shows it). Tile order is reading order: channel ``k`` at tile
    ``(k // n_cols, k % n_cols)``; channels beyond ``n_rows * n_cols`` are
    left out, missing ones are ``pad_value`` tiles.

    Args:
      maps: one image's activation ``(h, w, c)`` float, e.g. conv1's
        ``(28, 28, 32)``.
      n_rows: tile rows; None = ``ceil(c / n_cols)`` (32 maps -> 4, 64 -> 8).
      n_cols: tile columns (the note: 8).
      normalize: per-map min-max to [0, 1]; False keeps raw values.
      pad_value: fill of tiles with no channel.

    Returns:
      ``(n_rows * h, n_cols * w)`` float32.
    """
    _check_rank(maps, 3, "maps", "(h, w, c)")
    if isinstance(n_cols, bool) or not isinstance(n_cols, int) or n_cols < 1:
        raise InputError(f"n_cols must be an integer >= 1; got {n_cols!r}.")
    if n_rows is None:
        n_rows = math.ceil(maps.shape[-1] / n_cols)
    x = jnp.asarray(maps, jnp.float32)
    if normalize:
        x = _minmax(x)
    return tile_channels(x, n_rows=n_rows, n_cols=n_cols, pad_value=pad_value)


@xla.jit
def _minmax(x):
    lo = x.min(axis=(0, 1), keepdims=True)
    span = x.max(axis=(0, 1), keepdims=True) - lo
    return jnp.where(span > 0, (x - lo) / jnp.where(span > 0, span, 1.0), 0.0)


def default_layers(model: ConvNet, *, n: int = DEFAULT_NUM_LAYERS
                   ) -> tuple[str, ...]:
    """The first ``n`` layers with a spatial output, in order (the book's
    ``model.layers[:8]``; for VGG16 block1_conv1 ... block3_conv2)."""
    return model.spatial_layers[:n]


def layer_activation_grids(params: Params, image_rgb: Float[Array, "h w c"], *,
                           layers: Sequence[str] | None = None,
                           images_per_row: int = 16, dead_value: float = 0.0,
                           model: ConvNet | None = None
                           ) -> dict[str, jax.Array]:
    """Activation grids of several layers for one image, in one forward pass.

    Args:
      params: model weights.
      image_rgb: ONE image, ``(h, w, c)`` RGB float in [0, 255] (grey
        ``(h, w, 1)`` for one-channel models); the model's own preprocessing
        is applied (VGG16: caffe BGR).
      layers: layer names with a spatial output; None = :func:`default_layers`.
      images_per_row: tiles per row (book: 16).
      dead_value: see :func:`activation_grid`.
      model: the network; None infers the VGG16 preset from ``params``.

    Returns:
      ``{layer: (H, W) float32 grid in [0, 255]}`` in the order of ``layers``.

    Raises:
      ValueError: bad image shape, unknown or non-spatial layer (the message
        lists the valid ones), image too small for a layer.

    Warns:
      PixelRangeWarning: ``image_rgb`` looks scaled to [0, 1] or [-1, 1].
    """
    model = resolve_model(params, model=model)
    _check_per_row(images_per_row)
    _check_rank(image_rgb, 3, "image_rgb", "(h, w, c)")
    check_pixel_range(image_rgb, name="image_rgb")
    layers = check_layers(model, default_layers(model) if layers is None else layers,
                          model.spatial_layers)
    acts = _activations(params, jnp.asarray(image_rgb)[None], layers=layers,
                        model=model)
    return {name: activation_grid(acts[name][0], images_per_row=images_per_row,
                                  dead_value=dead_value) for name in layers}


__all__ = [
    "activation_grid",
    "activation_grids",
    "standardize_channels",
    "tile_channels",
    "feature_map_grid",
    "grid_shape",
    "default_layers",
    "layer_activation_grids",
]
