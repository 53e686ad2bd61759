"""Activation factorization (Olah et al., "The Building Blocks of
Interpretability", Distill 2018): non-negative matrix factorization of one
image's activations into a few groups.

The ``(h' * w', C)`` post-ReLU activations ``A`` of ``layer`` are factored
by scikit-learn's NMF (the optional extra ``jaxconvviz[atlas]``) as
``A ~ W H`` with ``n_groups`` components; each group has a spatial map
(a column of ``W``, ``(h', w')``) and a channel direction (a row of ``H``,
normalised to unit length, its norm moved into the map). Every group's
direction is rendered in one batched lucid call; optionally each group's
attribution to a class logit is ``sum_p W[p, g] * (H[g] . d logit / d a_p)``
(the paper's spatial attribution, at this layer).

Imports jax and numpy (scikit-learn lazily).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxconvviz._types import Params, PRNGKey
from jaxconvviz.backend import bind, xla
from jaxconvviz.directions import _render
from jaxconvviz.directions._sample import activations_and_grad
from jaxconvviz.directions.activation_atlas import require
from jaxconvviz.errors import InputError
from jaxconvviz.featureviz.styles import Lucid
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.models.predict import check_images
from jaxconvviz.models.vgg import resolve_model
from jaxconvviz.pixels import check_pixel_range
from jaxconvviz.run import Run


@dataclasses.dataclass(frozen=True)
class Factorization:
    """One image's activations at ``layer`` as ``n_groups`` groups.

    Attributes:
      layer: the layer.
      image: float32 ``(h, w, 3)`` RGB [0, 255], the image as the model saw it.
      activations: float32 ``(h', w', C)``, the (non-negative) activations.
      maps: float32 ``(G, h', w')``, each group's spatial map (``W``, scaled
        by its direction's norm).
      directions: float32 ``(G, C)``, unit-length channel directions.
      reconstruction_error: ``||A - W H||_F`` (scikit-learn's
        ``reconstruction_err_``).
      images: float32 ``(G, s, s, 3)`` RGB [0, 255], each group's rendering,
        or None.
      attribution: float32 ``(G,)``, each group's attribution to
        ``class_index``'s logit, or None.
      class_index: the class, or None.
    """

    layer: str
    image: np.ndarray
    activations: np.ndarray
    maps: np.ndarray
    directions: np.ndarray
    reconstruction_error: float
    images: np.ndarray | None
    attribution: np.ndarray | None
    class_index: int | None

    @property
    def n_groups(self) -> int:
        return int(self.maps.shape[0])

    def masks(self, frac: float = 0.5) -> np.ndarray:
        """bool ``(G, h', w')``: where each group's map is at least ``frac``
        of its own maximum."""
        peak = self.maps.reshape(self.n_groups, -1).max(1)[:, None, None]
        return (self.maps >= frac * peak) & (peak > 0)

    def reconstruction(self) -> np.ndarray:
        """float32 ``(h', w', C)``: ``W H``."""
        g, h, w = self.maps.shape
        return (self.maps.reshape(g, h * w).T @ self.directions).reshape(h, w, -1)


def nmf(matrix, n_groups: int, *, seed: int = 0, max_iter: int = 1000,
        init: str = "nndsvda"):
    """``(W (N, G), H (G, C), error)``: scikit-learn's NMF of a non-negative
    ``(N, C)`` matrix (``init``, ``max_iter``, ``random_state=seed``; the
    Frobenius loss, coordinate descent)."""
    dec = require("sklearn.decomposition", "factorize_activations")
    a = np.asarray(matrix, np.float64)
    if a.ndim != 2 or (a < 0).any():
        raise InputError(f"NMF needs a non-negative 2-D matrix; got shape {a.shape}"
                         f" with minimum {a.min() if a.size else 'n/a'}.")
    model = dec.NMF(n_components=int(n_groups), init=init, random_state=seed,
                    max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the result stands
        w = model.fit_transform(a)
    return w, model.components_, float(model.reconstruction_err_)


@functools.partial(xla.jit, static_argnames=("model", "layer", "class_index"))
def _acts_and_grad(params, images, *, model, layer, class_index):
    a, g = activations_and_grad(params, images, model=model, layer=layer,
                                class_index=class_index)
    return a, (jnp.zeros_like(a) if g is None else g)


def factorize_activations(
    params: Params,
    image_rgb,
    layer: str,
    *,
    key: PRNGKey,
    n_groups: int = 6,
    model: ConvNet | None = None,
    class_index: int | None = None,
    render: bool = True,
    style: Lucid | None = None,
    render_size: int | None = None,
    steps: int | None = None,
    cossim_pow: float = 1.0,
    max_iter: int = 1000,
    run: Run | None = None,
) -> Factorization:
    """Factor one image's activations at ``layer`` into ``n_groups`` groups.

    Args:
      params: model weights.
      image_rgb: RGB [0, 255], ``(h, w, 3)`` or ``(1, h, w, 3)`` (the model's
        fixed input size when ``class_index`` is given).
      layer: a spatial layer whose output is non-negative (after a ReLU).
      key: PRNG key: the NMF seed (``fold_in(key, 0)``) and the renders
        (``fold_in(key, 1)``).
      n_groups: groups (NMF components), at most the layer's channels.
      model: the network; None infers the VGG16 preset from ``params``.
      class_index: a class of the model's classifier: adds each group's
        attribution to that logit.
      render: render each group's direction (False: ``images`` None).
      style, render_size, steps: the :class:`~jaxconvviz.Lucid` rendering.
      cossim_pow: the cosine power of the objective
        (:class:`~jaxconvviz.objectives.CosineDirection` over all positions;
        ``0`` is lucid's plain ``direction`` objective).
      max_iter: NMF iterations.
      run: execution options for the render.

    Returns:
      A :class:`Factorization`.

    Raises:
      InputError: bad arguments, negative activations at ``layer``, or
        scikit-learn missing (naming the ``jaxconvviz[atlas]`` extra).
    """
    require("sklearn.decomposition", "factorize_activations")
    model = resolve_model(params, model=model)
    model.check_layer(layer, model.spatial_layers)
    x = np.asarray(image_rgb)
    if x.ndim == 3:
        x = x[None]
    x = check_images(x, name="image_rgb", channels=model.input_shape[2])
    if x.shape[0] != 1:
        raise InputError(f"image_rgb must be one image (h, w, 3); got {x.shape[0]}.")
    check_pixel_range(x, name="image_rgb")
    c = model.channels(layer)
    if (isinstance(n_groups, bool) or not isinstance(n_groups, (int, np.integer))
            or not 1 <= n_groups <= c):
        raise InputError(f"n_groups must be an int in [1, {c}] for {layer!r}; got "
                         f"{n_groups!r}.")
    if class_index is not None:
        if not model.has_top:
            raise InputError("class_index needs a model with a classifier top; "
                             "these params have none.")
        if not (0 <= int(class_index) < model.num_outputs):
            raise InputError(f"class_index must be in [0, {model.num_outputs}); got "
                             f"{class_index!r}.")
        class_index = int(class_index)
    a, g = _acts_and_grad(params, x, model=bind(model, library_gradients=False),
                          layer=layer, class_index=class_index)
    a, g = np.asarray(a[0]), np.asarray(g[0])
    if a.min() < 0:
        raise InputError(f"layer {layer!r} has negative activations (min "
                         f"{a.min():.3g}); NMF needs a layer after a ReLU.")
    h, w, _ = a.shape
    seed = int(jax.random.randint(jax.random.fold_in(key, 0), (), 0, 2**31 - 1))
    wm, hm, err = nmf(a.reshape(h * w, c), int(n_groups), seed=seed, max_iter=max_iter)
    norms = np.linalg.norm(hm, axis=1)
    dirs = (hm / np.maximum(norms, 1e-12)[:, None]).astype(np.float32)
    maps = (wm * norms[None, :]).T.reshape(-1, h, w).astype(np.float32)
    attribution = None
    if class_index is not None:
        gd = g.reshape(h * w, c) @ dirs.T                     # (hw, G)
        attribution = (maps.reshape(len(dirs), -1).T * gd).sum(0).astype(np.float32)
    images = None
    if render:
        images = _render.render_directions(
            params, layer, dirs, key=jax.random.fold_in(key, 1), model=model,
            style=style, size=render_size, steps=steps, center=False,
            cossim_pow=cossim_pow, run=run)
    return Factorization(layer, np.asarray(x[0]), a, maps, dirs, err, images,
                         attribution, class_index)


__all__ = ["Factorization", "factorize_activations", "nmf"]
