"""The objective of the book's filter patterns, evaluated:
:func:`filter_activation` (the patterns themselves are
:func:`~jaxconvviz.filter_patterns`, :mod:`jaxconvviz.featureviz.render`).

Imports jax and numpy only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxconvviz._types import Params
from jaxconvviz.backend import bind
from jaxconvviz.errors import InputError
from jaxconvviz.featureviz import _plan as pl
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.models.vgg import resolve_model


@functools.partial(jax.jit, static_argnames=("model", "layer", "preprocess"))
def _activation_jit(params, images, fidx, *, model, layer, preprocess):
    def one(x, i):
        inp = x[None]
        if preprocess:
            inp = model.preprocess(inp)
        act = model.forward(params, inp, stop=layer)[0]
        a = jax.lax.dynamic_index_in_dim(act, i, axis=-1, keepdims=False)
        return a.astype(jnp.float32).mean()

    return jax.vmap(one)(images, fidx)



def filter_activation(
    params: Params,
    images,
    layer: str,
    filter_indices,
    *,
    preprocess: bool = False,
    model: ConvNet | None = None,
) -> jax.Array:
    """Mean activation of filter ``filter_indices[i]`` on its own image ``i``.

    The objective :func:`filter_patterns` maximises, evaluated in float32.

    Args:
      params: model weights.
      images: float ``(f, h, w, c)`` in the model's input domain
        (``preprocess=False``) or RGB [0, 255] (``preprocess=True``).
      layer: a spatial layer of the model.
      filter_indices: ``f`` channel indices of ``layer``.
      preprocess: pass ``images`` through ``model.preprocess`` first.
      model: the network; None infers the VGG16 preset from ``params``.

    Returns:
      float32 ``(f,)``: ``mean_{h,w} act[layer][i, :, :, filter_indices[i]]``.
    """
    from jaxconvviz.models.predict import check_images

    model = resolve_model(params, model=model)
    layer = pl.check_layer(model, layer)
    fidx = pl.check_filters(model, layer, filter_indices)
    x = check_images(images, name="images", channels=int(model.input_shape[2]))
    if x.shape[0] != fidx.shape[0]:
        raise InputError(
            f"images and filter_indices must have the same length; got "
            f"{x.shape[0]} images and {fidx.shape[0]} filters."
        )
    pl.check_size(model, layer, min(x.shape[1], x.shape[2]))
    model = bind(model, library_gradients=False)
    return _activation_jit(params, x, jnp.asarray(fidx), model=model, layer=layer,
                           preprocess=bool(preprocess))


__all__ = ["filter_activation"]
