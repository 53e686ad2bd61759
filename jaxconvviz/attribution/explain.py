"""One dispatch over every explanation method: the registered CAMs and the
input-space gradient attributions, as ``(n, h, w)`` heatmaps, and their
faithfulness metrics on a batch (what ``jaxconvviz explain``, ``gradcam
--method``, the demo and the sanity checks share).

Imports jax, numpy and the package's compute modules only.
"""

from __future__ import annotations

import numpy as np

from jaxconvviz.attribution.cam_registry import cam_method, cam_methods
from jaxconvviz.attribution.cams import cam, cam_with_scores
from jaxconvviz.attribution.gradients import (
    ATTRIBUTION_LABELS,
    ATTRIBUTION_METHODS,
    attribution,
)
from jaxconvviz.run import Run


def explain_methods() -> tuple[str, ...]:
    """Every method name :func:`heatmaps` accepts: the registered CAMs
    (display order), then the gradient attributions."""
    return cam_methods() + ATTRIBUTION_METHODS


def method_label(method: str) -> str:
    """Display name of a CAM or attribution method (the name itself if
    unknown)."""
    if method in cam_methods():
        return cam_method(method).label
    return ATTRIBUTION_LABELS.get(method, method)


def is_cam(method: str) -> bool:
    """Whether ``method`` is a registered CAM (a map at a layer)."""
    return method in cam_methods()


def heatmaps(params, x, method, classes, *, model, layer=None, key=None,
             run: Run | None = None, normalised: bool = True) -> np.ndarray:
    """``(n, h, w)`` heatmaps of any method for fixed classes: CAMs as they
    are (in [0, 1]), input-space attributions as ``sum |a|`` over colour,
    divided by each image's maximum (``normalised=False``: not divided).

    ``layer`` is the CAM layer (and guided Grad-CAM's); ``key`` is
    SmoothGrad's noise (None: ``jax.random.key(0)``)."""
    import jax
    import jax.numpy as jnp

    if is_cam(method):
        return np.asarray(cam(params, x, method=method, layer=layer,
                              class_index=classes, model=model, run=run))
    key = jax.random.key(0) if key is None else key
    opts = {"layer": layer} if method == "guided_gradcam" else {}
    a = jnp.abs(attribution(params, x, method=method, class_index=classes,
                            model=model, key=key, run=run, **opts)).sum(-1)
    if not normalised:
        return np.asarray(a)
    peak = a.max(axis=(1, 2), keepdims=True)
    return np.asarray(a / jnp.maximum(peak, np.finfo(np.float32).tiny))


def evaluate(params, x, methods, *, model, layer=None, class_index=None,
             steps: int = 16, key=None, run: Run | None = None):
    """Maps and faithfulness metrics of every method on a batch.

    The classes are chosen once (``class_index``, None: each image's top-1)
    and explained by every method.

    Returns ``(classes (n,), probabilities (n,), {method: {"maps": (n, h, w),
    "deletion AUC": (n,), "insertion AUC": (n,), "drop": (n,),
    "increased": (n,)}})``.
    """
    import jax

    from jaxconvviz.attribution.metrics import confidence_change, deletion, insertion

    key = jax.random.key(0) if key is None else key
    res = cam_with_scores(params, x, layer=layer, class_index=class_index,
                          model=model, run=run)
    classes = np.asarray(res.classes)
    out, _ = model.forward_with(params, model.preprocess(x))
    probs = np.asarray(out)[np.arange(len(classes)), classes]
    table = {}
    for m in methods:
        maps = heatmaps(params, x, m, classes, model=model, layer=layer, key=key,
                        run=run)
        kw = dict(class_index=classes, model=model, run=run)
        conf = confidence_change(params, x, maps, **kw)
        table[m] = {
            "maps": maps,
            "deletion AUC": deletion(params, x, maps, steps=steps, **kw).auc,
            "insertion AUC": insertion(params, x, maps, steps=steps, **kw).auc,
            "drop": conf.drop,
            "increased": conf.increased,
        }
    return classes, probs, table


__all__ = ["evaluate", "explain_methods", "heatmaps", "is_cam", "method_label"]
