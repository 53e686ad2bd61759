"""Grad-CAM class-activation heatmaps (Selvaraju et al., arXiv:1610.02391).

For each image and class ``k``, with ``A`` the activation of a spatial layer
``(h, w, c)`` and ``y_k`` the **pre-softmax** class logit::

    alpha_c = mean_{i,j} d y_k / d A_ijc        # pooled per image over (h, w)
    cam     = relu(sum_c alpha_c * A[..., c])    # (h, w)
    cam     = cam / max(cam)                     # per image, zero-safe

The forward pass is split at the layer, as in DLwP listing 5.42's two
models, but as pure functions: ``acts = model.forward(params, x, stop=layer)``
then ``jax.grad`` of the logits from ``model.logits(params, acts,
start=layer)`` with respect to ``acts`` -- only the head is differentiated,
never the layers below nor the weights.

Fixes to the book's code (DLwP 5.4.3): the gradient is pooled over
``(h, w)`` of *each* image (the book's ``K.mean(grads, axis=(0, 1, 2))``
also averages over the batch, mixing images), the normalisation cannot
divide by zero (an all-zero map stays all zeros, never NaN), and the score
is the logit rather than the softmax probability (as in the paper; the
softmax couples all classes and saturates).

Imports jax, numpy and the package's compute modules only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxconvviz._types import ClassIndex, Heatmaps, ImagesRGB, Params
from jaxconvviz.errors import InputError
from jaxconvviz.models.convnet import ConvNet, resolve_model
from jaxconvviz.models.predict import (
    check_batch_size,
    check_classifier_images,
    map_in_chunks,
)

#: Smallest positive normal float32: the normaliser's floor. ``cam <= max``
#: always, so ``cam / maximum(max, TINY)`` lies in [0, 1], an all-zero map
#: stays 0 and a non-zero map reaches exactly 1 (an additive epsilon such as
#: 1e-7 would instead shrink maps of small-scale models noticeably).
_TINY = float(np.finfo(np.float32).tiny)

NO_TOP_MSG = (
    "grad_cam needs a classifier top (the class logits are what it "
    "differentiates); got {what}. Fetch the ImageNet weights with the top: "
    "`jaxconvviz weights fetch imagenet --top`, then "
    "jcv.load_vgg16('imagenet', include_top=True) -- or pass model= for a "
    "Keras classifier (jcv.load_keras_model)."
)


def _select(logits, class_index, use_top1: bool):
    """(n,) logits of the chosen classes and the class indices used."""
    if use_top1:
        class_index = jnp.argmax(jax.lax.stop_gradient(logits), axis=-1)
    picked = jnp.take_along_axis(logits, class_index[:, None], axis=-1)[:, 0]
    return picked, class_index


@functools.partial(jax.jit, static_argnames=("model", "layer", "use_top1"))
def _grad_cam_batch(params, images, class_index, *, model: ConvNet, layer: str,
                    use_top1: bool):
    acts = model.forward(params, model.preprocess(images), stop=layer)

    def score(a):
        logits = model.logits(params, a, start=layer).astype(jnp.float32)
        picked, used = _select(logits, class_index, use_top1)
        # Summing over the batch gives every image its own gradient: the
        # head has no cross-batch operation (dropout is the identity and
        # batchnorm uses moving statistics at inference), so
        # d(sum_m y_m)/dA_n = dy_n/dA_n.
        return picked.sum(), (logits, used)

    grads, (logits, used) = jax.grad(score, has_aux=True)(acts)
    acts = acts.astype(jnp.float32)
    weights = grads.astype(jnp.float32).mean(axis=(1, 2))  # (n, c): per image
    cam = jax.nn.relu(jnp.einsum("nhwc,nc->nhw", acts, weights))
    peak = cam.max(axis=(1, 2), keepdims=True)
    cam = cam / jnp.maximum(peak, _TINY)
    return cam, logits, used


def _check_class_index(class_index, n: int, num_classes: int):
    """-> (int32 (n,) array, use_top1) or ValueError naming the valid range."""
    if class_index is None:
        return np.zeros((n,), np.int32), True
    binary = num_classes == 1
    valid = "0 (the single logit of the binary head)" if binary else (
        f"0..{num_classes - 1}")
    if isinstance(class_index, (bool, np.bool_)):
        raise InputError(
            f"class_index must be None, an int or an (n,) int array in {valid}; "
            f"got {class_index!r}."
        )
    arr = np.asarray(class_index)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(
            f"class_index must be None, an int or an (n,) int array in {valid}; "
            f"got dtype {arr.dtype} ({class_index!r:.60})."
        )
    if arr.ndim == 0:
        arr = np.full((n,), int(arr))
    elif arr.shape != (n,):
        raise InputError(
            f"class_index must be an int or have shape ({n},) (one class per "
            f"image); got shape {arr.shape}."
        )
    bad = arr[(arr < 0) | (arr >= num_classes)]
    if bad.size:
        raise InputError(
            f"class_index must be in {valid} (the model has {num_classes} "
            f"output{'s' if num_classes != 1 else ''}); got {int(bad[0])}."
        )
    return arr.astype(np.int32), False


def _prepare(params, images_rgb, layer, class_index, model, batch_size):
    model = resolve_model(params, model)
    if not model.has_top:
        raise InputError(NO_TOP_MSG.format(
            what="params without 'predictions' (include_top=False or HED "
            "weights)" if "predictions" not in params else
            "a model whose last layer is not Dense"))
    model.check_layer(layer, model.spatial_layers, name="layer")
    idx = model.layer_index(layer)
    for spec in model.layers[idx + 1:]:
        if spec.has_params and spec.name not in params:
            raise InputError(NO_TOP_MSG.format(
                what=f"params without layer {spec.name!r}"))
    x = check_classifier_images(model, images_rgb)
    shape = model.output_shape(layer, tuple(x.shape[1:3]))
    if min(shape[:2]) < 1:
        raise InputError(
            f"images_rgb of {x.shape[1]}x{x.shape[2]} px are too small for layer "
            f"{layer!r}; it needs at least {model.min_input_size(layer)} px."
        )
    check_batch_size(batch_size)
    ci, use_top1 = _check_class_index(class_index, x.shape[0], model.num_outputs)
    return model, x, ci, use_top1


def _run(params, images_rgb, layer, class_index, model, batch_size):
    model, x, ci, use_top1 = _prepare(params, images_rgb, layer, class_index,
                                      model, batch_size)
    return map_in_chunks(
        lambda xb, cb: _grad_cam_batch(params, xb, cb, model=model, layer=layer,
                                       use_top1=use_top1),
        (x, jnp.asarray(ci, jnp.int32)), batch_size)


def grad_cam(params: Params, images_rgb: ImagesRGB, *, layer: str = "block5_conv3",
             class_index: int | ClassIndex | None = None,
             model: ConvNet | None = None, batch_size: int | None = None
             ) -> Heatmaps:
    """Grad-CAM heatmaps of a class at a spatial layer, one per image.

    Defaults follow DLwP listing 5.42 (VGG16, ``block5_conv3``). The score is
    the pre-softmax logit of the class (for a 1-unit sigmoid head, its single
    logit); channel weights are the gradient averaged over ``(h, w)`` of each
    image separately, so a batch gives exactly the per-image results.

    Args:
      params: weights **with** a classifier top (VGG16:
        ``jcv.load_vgg16("imagenet", include_top=True)``).
      images_rgb: RGB float in [0, 255] (or uint8), ``(n, h, w, 3)``; VGG16
        with its top needs 224x224. ``model.preprocess`` maps them to the
        model's input domain (VGG16: caffe BGR).
      layer: a spatial layer (``model.spatial_layers``); the book's
        ``block5_conv3``, the last conv of VGG16.
      class_index: None (each image's top-1 class from its logits), an int
        for all images, or an ``(n,)`` int array, in ``0..classes-1``.
      model: the network; None infers the VGG16 preset from ``params``.
      batch_size: images per compiled call (None: all at once). The last
        chunk is padded, so every chunk reuses one compilation.

    Returns:
      ``(n, h', w')`` float32 in [0, 1], ``h', w'`` the layer's spatial size
      (14x14 for ``block5_conv3`` at 224 px); each map's maximum is 1, or
      the map is all zeros when no location supports the class. Resize and
      colour it with :func:`jaxconvviz.overlay`.

    Raises:
      ValueError: params without a classifier top (says how to fetch the
        ImageNet weights), a layer that is not spatial (lists the valid
        ones), images of the wrong shape, class indices out of range.
    """
    return _run(params, images_rgb, layer, class_index, model, batch_size)[0]


def grad_cam_with_scores(params: Params, images_rgb: ImagesRGB, *,
                         layer: str = "block5_conv3",
                         class_index: int | ClassIndex | None = None,
                         model: ConvNet | None = None,
                         batch_size: int | None = None
                         ) -> tuple[Heatmaps, jax.Array, jax.Array]:
    """:func:`grad_cam` plus what the same forward pass computed.

    Args: as :func:`grad_cam`.

    Returns:
      ``(cams, logits, classes)``: the heatmaps ``(n, h', w')`` float32 in
      [0, 1]; the pre-softmax logits ``(n, classes)`` float32 (apply the
      model's softmax/sigmoid for probabilities); the class index used for
      each image ``(n,)`` int32 (the top-1 when ``class_index`` is None).
    """
    return _run(params, images_rgb, layer, class_index, model, batch_size)


__all__ = ["grad_cam", "grad_cam_with_scores"]
