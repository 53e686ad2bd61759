"""Sanity checks for saliency methods (Adebayo et al., NeurIPS 2018).

* :func:`cascading_randomization`: re-initialise the model's weights layer
  by layer from the top (logits) down, cumulatively, and measure how similar
  each method's maps stay to the original ones (Spearman rank correlation per
  image). A method that explains the *model* must change: its correlation
  should fall towards 0 as layers are randomised. Adebayo et al. found that
  guided backpropagation (and guided Grad-CAM) stay highly correlated -- they
  reflect the input more than the weights.
* :func:`label_randomization`: the data randomisation test -- the maps of
  a model trained on the true labels against those of the same architecture
  trained on permuted labels (train it yourself); low correlation passes.

Maps are compared as ``(n, h, w)``: CAMs as returned by
:func:`~jaxconvviz.cam`, input-space attributions reduced by ``sum |a|``
over the colour channels. Ranks use average ranks for ties (CAMs are often
0 on large areas).

Imports jax, numpy, scipy.stats and the package's compute modules only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from jaxconvviz._types import ClassIndex, ImagesRGB, Params, PRNGKey
from jaxconvviz.attribution._cam_common import check_classifier, check_run
from jaxconvviz.attribution.cams import cam_with_scores
from jaxconvviz.attribution.explain import explain_methods, heatmaps, is_cam
from jaxconvviz.errors import InputError
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.run import Run


@dataclasses.dataclass(frozen=True)
class SanityResult:
    """Rank correlations of each method's maps with the original model's.

    Attributes:
      steps: names of what was randomised at each step (cascading: the
        layers randomised so far, top first; label randomisation: one step).
      correlations: ``{method: (len(steps), n)}`` Spearman correlations.
    """

    steps: tuple[str, ...]
    correlations: dict[str, np.ndarray]

    def mean(self) -> dict[str, np.ndarray]:
        """``{method: (len(steps),)}`` mean over images."""
        return {m: c.mean(axis=-1) for m, c in self.correlations.items()}


def spearman(a, b) -> np.ndarray:
    """Spearman rank correlation of each pair of maps ``(n, ...)``, average
    ranks for ties; 0 where either map is constant."""
    from scipy.stats import rankdata

    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    ra = rankdata(a, axis=-1)
    rb = rankdata(b, axis=-1)
    ra -= ra.mean(axis=-1, keepdims=True)
    rb -= rb.mean(axis=-1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(-1) * (rb ** 2).sum(-1))
    return np.where(den > 0, (ra * rb).sum(-1) / np.where(den > 0, den, 1), 0.0)


def _check_methods(methods) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = (methods,)
    methods = tuple(methods)
    valid = explain_methods()
    bad = [m for m in methods if m not in valid]
    if not methods or bad:
        raise InputError(
            f"methods must be a non-empty sequence of {', '.join(valid)}; got "
            f"{methods!r}.")
    return methods


def _check_key(key, fn: str):
    if not (isinstance(key, jax.Array) and jax.numpy.issubdtype(
            key.dtype, jax.dtypes.prng_key)):
        raise InputError(f"{fn} needs key= (a jax.random.key: the new weights' "
                         f"randomness); got {key!r:.60}.")
    return key


def maps_for(params, images_rgb, method, classes, model, key, layer=None,
             run=None):
    """``(n, h, w)`` maps of one method for fixed classes: CAMs as they
    are, input-space attributions as ``sum |a|`` over colour (not
    normalised)."""
    if is_cam(method):
        return np.asarray(cam_with_scores(params, images_rgb, method=method,
                                          layer=layer, class_index=classes,
                                          model=model, run=run).cams)
    return heatmaps(params, images_rgb, method, classes, model=model, layer=layer,
                    key=key, run=run, normalised=False)


def randomize_layer(params: Params, layer: str, *, key: PRNGKey) -> Params:
    """``params`` with ``layer``'s kernels and biases redrawn from
    ``N(0, std of the original)`` (moving statistics of normalisation layers
    are kept: they are not learned by gradient descent)."""
    out = dict(params)
    leaves = {}
    for i, (name, v) in enumerate(sorted(params[layer].items())):
        v = np.asarray(v)
        if name.startswith("moving_"):
            leaves[name] = v
            continue
        std = float(v.std())
        noise = np.asarray(jax.random.normal(jax.random.fold_in(key, i), v.shape))
        leaves[name] = (noise * std).astype(v.dtype)
    out[layer] = leaves
    return out


def cascading_randomization(params: Params, images_rgb: ImagesRGB, *,
                            methods: Sequence[str] = ("gradcam",
                                                      "guided_backprop"),
                            key: PRNGKey | None = None,
                            model: ConvNet | None = None,
                            class_index: int | ClassIndex | None = None,
                            layer: str | None = None,
                            layers: Sequence[str] | None = None,
                            run: Run | None = None) -> SanityResult:
    """Cascading model-parameter randomisation test.

    Args:
      params: trained weights with a classifier top.
      images_rgb: RGB [0, 255] ``(n, H, W, 3)``.
      methods: CAM and gradient method names (:func:`explain_methods`).
      key: PRNG key for the new weights (and SmoothGrad's noise); required.
      model: the network; None infers the VGG16 preset.
      class_index: the classes explained, fixed through all steps (None: the
        trained model's top-1 per image).
      layer: the CAM layer (None: ``model.default_layer``).
      layers: the parameterised layers to randomise, in order (None: all of
        them, from the top down).
      run: execution options, :class:`~jaxconvviz.Run` (``batch_size``,
        ``memory_budget``), passed to every map.

    Returns:
      :class:`SanityResult`; ``steps[i]`` names the layer randomised at step
      ``i`` (all layers up to it are random).
    """
    methods = _check_methods(methods)
    key = _check_key(key, "cascading_randomization")
    check_run(run)
    model = check_classifier(params, model, fn="cascading_randomization")
    with_params = [s.name for s in model.layers if s.has_params]
    if layers is None:
        layers = tuple(reversed(with_params))
    else:
        layers = tuple(layers)
        for name in layers:
            model.check_layer(name, tuple(with_params), name="layers")
    res0 = cam_with_scores(params, images_rgb, layer=layer, class_index=class_index,
                           model=model, run=run)
    classes = np.asarray(res0.classes)
    k_maps, k_rand = jax.random.split(key)
    original = {m: maps_for(params, images_rgb, m, classes, model, k_maps, layer,
                            run) for m in methods}
    corr = {m: [] for m in methods}
    current = params
    for i, name in enumerate(layers):
        current = randomize_layer(current, name, key=jax.random.fold_in(k_rand, i))
        for m in methods:
            corr[m].append(spearman(original[m], maps_for(
                current, images_rgb, m, classes, model, k_maps, layer, run)))
    return SanityResult(layers, {m: np.stack(v) for m, v in corr.items()})


def label_randomization(params: Params, params_random_labels: Params,
                        images_rgb: ImagesRGB, *,
                        methods: Sequence[str] = ("gradcam", "guided_backprop"),
                        key: PRNGKey | None = None,
                        model: ConvNet | None = None,
                        class_index: int | ClassIndex | None = None,
                        layer: str | None = None,
                        run: Run | None = None) -> SanityResult:
    """Data randomisation test: maps of ``params`` (trained on the true
    labels) against ``params_random_labels`` (same model, trained on permuted
    labels), for the same classes (None: ``params``' top-1). Arguments as
    :func:`cascading_randomization`; one step, ``"labels"``."""
    methods = _check_methods(methods)
    key = _check_key(key, "label_randomization")
    check_run(run)
    model = check_classifier(params, model, fn="label_randomization")
    classes = np.asarray(cam_with_scores(params, images_rgb, layer=layer,
                                         class_index=class_index,
                                         model=model, run=run).classes)
    corr = {m: spearman(maps_for(params, images_rgb, m, classes, model, key, layer,
                                 run),
                        maps_for(params_random_labels, images_rgb, m, classes, model,
                                 key, layer, run))[None]
            for m in methods}
    return SanityResult(("labels",), corr)


__all__ = [
    "SanityResult",
    "spearman",
    "randomize_layer",
    "cascading_randomization",
    "label_randomization",
]
