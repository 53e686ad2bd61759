"""The CAM family: class-activation maps at a spatial layer, batched and jitted.

Every method weights the activation ``A`` (``(h, w, c)`` per image) of a
spatial layer; most use ``G = d y / d A``, the gradient of the explained
score ``y``: the **pre-softmax** logit of class ``k`` (``class_index``), or
any function of the model output (a target callable: a logit, a
probability, ``jcv.objectives.ClassLogit(k)``...). Both come from **one**
forward pass, :meth:`ConvNet.forward_with` with ``capture=(layer,)`` and a
zero ``perturb`` at the layer: ``jax.grad`` with respect to that zero is
``G``. No split into two models, so the same code serves chains and graph
models.

The methods are records in a registry
(:mod:`jaxconvviz.attribution.cam_registry`), grouped by family:
:mod:`~jaxconvviz.attribution.cam_gradient` (Grad-CAM, Grad-CAM++,
XGrad-CAM, HiRes-CAM, LayerCAM, Grad-CAM elementwise),
:mod:`~jaxconvviz.attribution.cam_eigen` (Eigen-CAM, Eigen-Grad-CAM) and
:mod:`~jaxconvviz.attribution.cam_perturbation` (Score-CAM, Ablation-CAM).
Each method's function gives the un-normalised map; then ``cam =
relu(cam) / max(cam)`` per image (an all-zero map stays zero). Unlike
pytorch-grad-cam, the final scaling divides by the maximum only
(pytorch-grad-cam subtracts the minimum first, so its maps always touch 0).

Imports jax, numpy and the package's compute modules only.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from jaxconvviz._types import ClassIndex, Heatmaps, ImagesRGB, Params

# The families register their methods on import, in display order.
from jaxconvviz.attribution import cam_eigen, cam_gradient, cam_perturbation  # noqa: F401
from jaxconvviz.attribution._cam_common import (
    cam_layers,
    check_cam_layer,
    check_size,
    compute_model,
    is_target,
    layer_and_gradient,
    layer_and_logits,
    memory_budget_bytes,
    normalise,
    prepare,
    resize_maps,
    run_batch_size,
)
from jaxconvviz.attribution.cam_registry import CamInputs, CamMethod, cam_method
from jaxconvviz.backend import xla
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.models.predict import map_in_chunks
from jaxconvviz.run import Run


@dataclasses.dataclass(frozen=True)
class CamResult:
    """Heatmaps and what the same forward pass computed.

    Attributes:
      cams: ``(n, h, w)`` float32 in [0, 1].
      logits: ``(n, classes)`` float32 pre-softmax logits of the images.
      classes: ``(n,)`` int32, the class explained for each image (-1 for
        a target callable).

    Unpacks as ``cams, logits, classes = result``.
    """

    cams: jax.Array
    logits: jax.Array
    classes: jax.Array

    def __iter__(self):
        return iter((self.cams, self.logits, self.classes))


@functools.partial(xla.jit, static_argnames=("model", "layer", "method", "use_top1",
                                             "size", "chunk", "scores", "target"))
def cam_batch(params, images, class_index, *, model: ConvNet, layer: str,
              method: CamMethod | str, use_top1: bool, size=None, chunk: int = 1,
              scores: bool = True, target=None):
    """One compiled program per (method, model, layer, shapes):
    images RGB [0, 255] -> (cams, logits, classes).

    ``method``: a record (:func:`cam` passes it, so a replaced record
    compiles anew) or a registered name. ``scores=False`` (headless methods
    only, whose map needs no class): the network runs only up to ``layer``;
    logits come back ``(n, 0)`` and classes as given."""
    if isinstance(method, str):
        method = cam_method(method)
    x = model.preprocess(images)
    kw = dict(model=model, layer=layer, target=target)
    if not scores and method.headless:
        a = model.forward(params, x, stop=layer).astype(jnp.float32)
        logits, used, g = jnp.zeros((x.shape[0], 0), jnp.float32), class_index, None
    elif not method.needs_gradient:
        a, logits, used = layer_and_logits(params, x, class_index, use_top1, **kw)
        g = None
    else:
        a, g, logits, used = layer_and_gradient(params, x, class_index, use_top1,
                                                **kw)
    raw = method.fn(CamInputs(acts=a, grads=g, logits=logits, classes=used, x=x,
                              params=params, model=model, layer=layer, chunk=chunk,
                              target=target))
    cam = normalise(raw)
    if size is not None:
        cam = jnp.clip(resize_maps(cam, size), 0.0, 1.0)
    return cam, logits, used


def _cams(params, images_rgb, *, method, layer, class_index, model, size, run,
          scores: bool | None) -> CamResult:
    record = cam_method(method)
    size = check_size(size)
    if scores is None:
        scores = not record.headless
    budget = memory_budget_bytes(run)
    batch_size = run_batch_size(run)
    model, layer, x, ci, use_top1 = prepare(
        params, images_rgb, layer, class_index, model, run,
        fn=f"cam(method={method!r})", headless=not scores and record.headless)
    if run is not None and run.dtype != "float32":
        model = model.with_dtype(jnp.dtype(run.dtype))
    model = compute_model(model, conv3x3=record.conv3x3)
    n = x.shape[0]
    bs = n if batch_size is None else min(int(batch_size), n)
    chunk = 1
    if record.perturbation:
        c = model.output_shape(layer, tuple(x.shape[1:3]))[-1]
        chunk = cam_perturbation.chunk_for(params, model, tuple(x.shape[1:3]),
                                           budget, bs * c)
    target = class_index if is_target(class_index) else None
    cams, logits, used = map_in_chunks(
        lambda xb, cb: cam_batch(params, xb, cb, model=model, layer=layer,
                                 method=record, use_top1=use_top1, size=size,
                                 chunk=chunk, scores=scores, target=target),
        (x, jnp.asarray(ci, jnp.int32)), batch_size)
    return CamResult(cams, logits, used)


def cam_with_scores(params: Params, images_rgb: ImagesRGB, *,
                    method: str = "gradcam", layer: str | None = None,
                    class_index: int | ClassIndex | None = None,
                    model: ConvNet | None = None,
                    size: int | tuple[int, int] | None = None,
                    run: Run | None = None) -> CamResult:
    """:func:`cam` plus the logits and classes of the same forward pass
    (a headless method runs the classifier head here too).

    Args: as :func:`cam`.

    Returns:
      A :class:`CamResult` (``cams, logits, classes``; unpacks as a tuple).
    """
    return _cams(params, images_rgb, method=method, layer=layer,
                 class_index=class_index, model=model, size=size, run=run,
                 scores=True)


def cam(params: Params, images_rgb: ImagesRGB, *, method: str = "gradcam",
        layer: str | None = None, class_index: int | ClassIndex | None = None,
        model: ConvNet | None = None, size: int | tuple[int, int] | None = None,
        run: Run | None = None) -> Heatmaps:
    """Class-activation maps of one CAM method, one per image.

    Args:
      params: weights **with** a classifier top; a headless method
        (Eigen-CAM) also takes weights without one (then ``class_index=None``
        and any image size the layer allows).
      images_rgb: RGB float in [0, 255] (or uint8), ``(n, h, w, 3)``;
        ``model.preprocess`` maps them to the model's input domain (VGG16:
        caffe BGR). Score-CAM multiplies the preprocessed input by each mask.
      method: a registered method name, :func:`cam_methods` (see
        :mod:`jaxconvviz.attribution.cam_registry` to add one).
      layer: a spatial layer that computes features (not a pooling, global
        pooling or dense layer); None: ``model.default_layer``, the last
        spatial non-pooling layer (``block5_conv3`` for VGG16).
      class_index: what is explained: None (each image's top-1 class), an
        int or an ``(n,)`` int array (the pre-softmax logit of that class),
        or a target callable of the model output: ``f(logits (n, classes))
        -> (n,)`` applied row by row (each image's value depends on its own
        row only; hashable: a function or a frozen dataclass), or a
        feature-visualization objective that reads the logits only
        (``jcv.objectives.ClassLogit(k)``, ``ClassProbability(k)``, sums
        and multiples of them).
      model: the network (VGG16 or an imported Keras CNN); None infers the
        VGG16 preset from ``params``.
      size: None (maps at the layer's resolution), ``(H, W)`` or an int
        (a square side): bilinear (half-pixel) resize inside the compiled
        program.
      run: execution options, :class:`~jaxconvviz.Run`: ``batch_size``
        (images per compiled call; None: all at once), ``memory_budget``
        (bytes of activations one chunk of a perturbation method's forward
        passes may hold; None: 1 GiB) and ``dtype`` (compute dtype); its
        ``devices`` and ``progress`` are not used here. How 3x3
        convolutions are computed comes from the model's backend, then the
        process default (``with jcv.backend(conv3x3=...)``), then the
        method's record (Score-CAM prefers ``"by_shape"``).

    Returns:
      ``(n, h, w)`` float32 in [0, 1]; each map's maximum is 1 or the map is
      all zeros. A headless method runs the network only up to ``layer``
      here; :func:`cam_with_scores` also runs the head.

    Raises:
      ValueError: an unknown method (lists them), params without a top, a
        non-spatial or pooling layer, bad images, class indices out of range,
        a target callable of the wrong shape, a bad ``size`` or ``run``; all
        before any compute.
    """
    return _cams(params, images_rgb, method=method, layer=layer,
                 class_index=class_index, model=model, size=size, run=run,
                 scores=None).cams


__all__ = ["CamResult", "cam", "cam_layers", "cam_with_scores", "check_cam_layer"]
