"""Grad-CAM class-activation heatmaps (Selvaraju et al., arXiv:1610.02391).

For each image and class ``k``, with ``A`` the activation of a spatial layer
``(h, w, c)`` and ``y_k`` the **pre-softmax** class logit::

    alpha_c = mean_{i,j} d y_k / d A_ijc        # pooled per image over (h, w)
    cam     = relu(sum_c alpha_c * A[..., c])    # (h, w)
    cam     = cam / max(cam)                     # per image, zero-safe

One forward pass, :meth:`ConvNet.forward_with` with ``capture=(layer,)`` and
a zero ``perturb`` at the layer, gives both the activation and, through
``jax.grad`` with respect to that zero, its gradient -- no split into two
models, so chains and graph models alike (see :mod:`jaxconvviz.attribution.cams`,
which holds the whole CAM family; this module is the Grad-CAM shortcut).

Fixes to the book's code (DLwP 5.4.3): the gradient is pooled over
``(h, w)`` of *each* image (the book's ``K.mean(grads, axis=(0, 1, 2))``
also averages over the batch, mixing images), the normalisation cannot
divide by zero (an all-zero map stays all zeros, never NaN), and the score
is the logit rather than the softmax probability (as in the paper; the
softmax couples all classes and saturates).

Imports jax, numpy and the package's compute modules only.
"""

from __future__ import annotations

from jaxconvviz._types import ClassIndex, Heatmaps, ImagesRGB, Params
from jaxconvviz.attribution.cams import CamResult, cam_with_scores
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.run import Run


def grad_cam(params: Params, images_rgb: ImagesRGB, *, layer: str | None = None,
             class_index: int | ClassIndex | None = None,
             model: ConvNet | None = None, run: Run | None = None) -> Heatmaps:
    """Grad-CAM heatmaps of a class at a spatial layer, one per image.

    ``jcv.cam(..., method="gradcam")``. Defaults follow DLwP listing 5.42
    (VGG16, ``block5_conv3``). The score is the pre-softmax logit of the
    class (for a 1-unit sigmoid head, its single logit); channel weights are
    the gradient averaged over ``(h, w)`` of each image separately, so a
    batch gives exactly the per-image results.

    Args:
      params: weights **with** a classifier top (VGG16:
        ``jcv.load_vgg16("imagenet", include_top=True)``).
      images_rgb: RGB float in [0, 255] (or uint8), ``(n, h, w, 3)``; VGG16
        with its top needs 224x224. ``model.preprocess`` maps them to the
        model's input domain (VGG16: caffe BGR).
      layer: a CAM layer (:func:`~jaxconvviz.cam_layers`: spatial, not
        pooling, global pooling or dense); None (default):
        ``model.default_layer``, the last spatial non-pooling layer
        (``block5_conv3`` for VGG16, the book's choice).
      class_index: None (each image's top-1 class from its logits), an int
        for all images, or an ``(n,)`` int array, in ``0..classes-1``; or a
        target callable of the logits (as :func:`~jaxconvviz.cam`).
      model: the network; None infers the VGG16 preset from ``params``.
      run: execution options, :class:`~jaxconvviz.Run`; ``batch_size``:
        images per compiled call (None: all at once). The last chunk is
        padded, so every chunk reuses one compilation.

    Returns:
      ``(n, h', w')`` float32 in [0, 1], ``h', w'`` the layer's spatial size
      (14x14 for ``block5_conv3`` at 224 px); each map's maximum is 1, or
      the map is all zeros when no location supports the class. Resize and
      colour it with :func:`jaxconvviz.overlay`.

    Raises:
      ValueError: params without a classifier top (says how to fetch the
        ImageNet weights), a layer that is not a CAM layer (lists the valid
        ones), images of the wrong shape, class indices out of range.
    """
    return grad_cam_with_scores(params, images_rgb, layer=layer,
                                class_index=class_index, model=model,
                                run=run).cams


def grad_cam_with_scores(params: Params, images_rgb: ImagesRGB, *,
                         layer: str | None = None,
                         class_index: int | ClassIndex | None = None,
                         model: ConvNet | None = None,
                         run: Run | None = None) -> CamResult:
    """:func:`grad_cam` plus what the same forward pass computed.

    Args: as :func:`grad_cam`.

    Returns:
      A :class:`~jaxconvviz.attribution.cams.CamResult` -- ``cams`` ``(n, h',
      w')`` float32 in [0, 1]; ``logits`` ``(n, classes)`` float32
      pre-softmax (apply the model's softmax/sigmoid for probabilities);
      ``classes`` ``(n,)`` int32, the class used per image (the top-1 when
      ``class_index`` is None). Unpacks as ``cams, logits, classes``.
    """
    return cam_with_scores(params, images_rgb, method="gradcam", layer=layer,
                           class_index=class_index, model=model, run=run)


__all__ = ["grad_cam", "grad_cam_with_scores"]
