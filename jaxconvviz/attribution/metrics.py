"""Faithfulness and localization metrics for heatmaps, batched and jitted.

* :func:`deletion` / :func:`insertion` (Petsiuk et al., RISE, 2018): remove
  (or insert) pixels in the heatmap's order, most important first, in
  ``steps`` equal fractions; the class score after each step and the area
  under that curve (lower is better for deletion, higher for insertion).
* :func:`road` (Rong et al., ROAD, ICML 2022): remove a fraction of the
  most (MoRF) or least (LeRF) relevant pixels and fill them by **noisy
  linear imputation** -- each removed pixel is the weighted mean of its 8
  neighbours (1/6 edge, 1/12 corner), a sparse SPD system solved by
  conjugate gradients -- so the removal itself carries no shape cue;
  ``combined`` = mean over fractions of ``(LeRF - MoRF) / 2`` (higher is
  better, as pytorch-grad-cam's ROADCombined).
* :func:`confidence_change` (Chattopadhyay et al., Grad-CAM++, 2018):
  average drop ``mean(max(0, Y - O) / Y)`` and increase in confidence
  ``mean(O > Y)``, in percent, with ``Y`` the class probability of the image
  and ``O`` that of the image multiplied by its heatmap (in the model's
  input domain, as pytorch-grad-cam does).
* :func:`pointing_game` (Zhang et al., 2016) and :func:`mass_in_mask`
  (the "energy" pointing game of Score-CAM): localization against known
  boxes or masks; no model needed.

Heatmaps ``(n, h, w)`` in any resolution are resized bilinearly (half-pixel)
to the image size first. Scores are the model's output after its own
activation (softmax/sigmoid probabilities; the logit for a linear head).
Pixel order ties are broken by pixel index (row-major), so results are
deterministic.

Imports jax, numpy and the package's compute modules only.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxconvviz._types import ClassIndex, ImagesRGB, Params, PRNGKey
from jaxconvviz.attribution._cam_common import (
    check_class_index,
    check_classifier,
    check_run,
    resize_maps,
    select,
)
from jaxconvviz.backend import xla
from jaxconvviz.errors import InputError
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.models.predict import check_classifier_images, map_in_chunks
from jaxconvviz.run import Run

#: RISE's insertion baseline: Gaussian blur, kernel 11, sigma 5 (pixels).
BLUR_KERNEL, BLUR_SIGMA = 11, 5.0


@dataclasses.dataclass(frozen=True)
class PerturbationCurve:
    """A deletion or insertion curve per image.

    Attributes:
      fractions: ``(steps + 1,)`` fraction of pixels removed/inserted.
      scores: ``(n, steps + 1)`` class score after each step.
      auc: ``(n,)`` trapezoidal area under ``scores`` over ``fractions``.
    """

    fractions: np.ndarray
    scores: np.ndarray
    auc: np.ndarray


@dataclasses.dataclass(frozen=True)
class RoadResult:
    """ROAD score changes (score after imputation minus before).

    Attributes:
      fractions: ``(p,)`` fractions of pixels removed.
      morf: ``(n, p)`` most relevant first (a faithful map drops the score).
      lerf: ``(n, p)`` least relevant first (a faithful map keeps it).
      combined: ``(n,)`` mean over fractions of ``(lerf - morf) / 2``.
    """

    fractions: np.ndarray
    morf: np.ndarray
    lerf: np.ndarray
    combined: np.ndarray


@dataclasses.dataclass(frozen=True)
class ConfidenceChange:
    """Average drop and increase in confidence (percent) and per image.

    Attributes:
      average_drop: ``100 * mean(drop)``.
      increase_in_confidence: ``100 * mean(increased)``.
      drop: ``(n,)`` ``max(0, Y - O) / Y``.
      increased: ``(n,)`` bool, ``O > Y``.
    """

    average_drop: float
    increase_in_confidence: float
    drop: np.ndarray
    increased: np.ndarray


# ------------------------------------------------------------------ checks
def _check_maps(heatmaps, n: int) -> jax.Array:
    a = np.asarray(heatmaps, np.float32)
    if a.ndim != 3 or a.shape[0] != n or a.size == 0:
        raise InputError(
            f"heatmaps must have shape (n, h, w) with n = {n} (one per image); "
            f"got {a.shape}.")
    if not np.isfinite(a).all():
        raise InputError("heatmaps contain NaN or inf values.")
    return jnp.asarray(a)


def _setup(params, images_rgb, heatmaps, class_index, model, run, fn):
    """-> (model, x, maps, classes, batch_size), all checked; the classes
    are each image's explained class (the top-1 for None)."""
    model = check_classifier(params, model, fn=fn)
    x = check_classifier_images(model, images_rgb)
    maps = _check_maps(heatmaps, x.shape[0])
    bs = check_run(run).batch_size
    ci, top1 = check_class_index(class_index, x.shape[0], model.num_outputs)
    classes = map_in_chunks(lambda xb, cb: _classes(params, xb, cb, top1, model),
                            (x, jnp.asarray(ci)), bs)
    return model, x, maps, classes, bs


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or (
            steps < 1):
        raise InputError(f"steps must be an int >= 1; got {steps!r}.")
    return int(steps)


# ------------------------------------------------------------------ helpers
def _scores(params, x_model, classes, model):
    out, _ = model.forward_with(params, x_model)
    out = out.astype(jnp.float32)
    return jnp.take_along_axis(out, classes[:, None], axis=-1)[:, 0]


@functools.partial(xla.jit, static_argnames=("top1", "model"))
def _classes(params, x_rgb, class_index, top1, model):
    logits, _ = model.forward_with(params, model.preprocess(x_rgb), logits=True)
    return select(logits.astype(jnp.float32), class_index, top1)[1]


def pixel_rank(maps, hw):
    """``(n, H, W)`` int32 rank of each pixel, 0 = the most important (maps
    upsampled to ``hw``; ties by row-major index)."""
    up = resize_maps(maps, hw).reshape(maps.shape[0], -1)
    order = jnp.argsort(-up, axis=-1, stable=True)
    n, p = up.shape
    rank = jnp.zeros((n, p), jnp.int32).at[jnp.arange(n)[:, None], order].set(
        jnp.arange(p, dtype=jnp.int32)[None])
    return rank.reshape(n, *hw)


def gaussian_blur(images, *, size: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA):
    """Separable Gaussian blur of ``(n, H, W, c)`` images, edges replicated."""
    r = size // 2
    t = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k = jnp.asarray((k / k.sum()).astype(np.float32))
    x = jnp.pad(images, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
    h, w = images.shape[1:3]
    x = sum(k[i] * x[:, i:i + h] for i in range(size))
    return sum(k[i] * x[:, :, i:i + w] for i in range(size))


def _baseline_images(baseline, x, *, name="baseline"):
    if isinstance(baseline, str):
        if baseline == "black":
            return jnp.zeros_like(x)
        if baseline == "blur":
            return gaussian_blur(x)
        if baseline == "mean":
            return jnp.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape)
        raise InputError(
            f"{name} must be 'black', 'blur', 'mean', a number or an RGB array; "
            f"got {baseline!r}.")
    b = np.asarray(baseline, np.float32)
    try:
        return jnp.asarray(np.broadcast_to(b, x.shape))
    except ValueError:
        raise InputError(
            f"{name} must broadcast to the images {tuple(x.shape)}; got shape "
            f"{b.shape}.") from None


@functools.partial(xla.jit, static_argnames=("model", "steps", "insert"))
def _curve(params, x, base, maps, classes, *, model, steps: int, insert: bool):
    hw = x.shape[1:3]
    rank = pixel_rank(maps, hw)
    npix = hw[0] * hw[1]
    counts = jnp.round(jnp.arange(steps + 1) * (npix / steps)).astype(jnp.int32)

    def one(k):
        chosen = (rank < k)[..., None]
        xs = jnp.where(chosen, x, base) if insert else jnp.where(chosen, base, x)
        return _scores(params, model.preprocess(xs), classes, model)

    return jax.lax.map(one, counts).T  # (n, steps + 1)


def _perturbation_curve(params, images_rgb, heatmaps, *, insert, class_index, model,
                        steps, baseline, run, fn):
    steps = _check_steps(steps)
    model, x, maps, classes, bs = _setup(params, images_rgb, heatmaps, class_index,
                                         model, run, fn)
    base = _baseline_images(baseline, x)
    scores = np.asarray(map_in_chunks(
        lambda xb, bb, mb, cb: _curve(params, xb, bb, mb, cb, model=model,
                                      steps=steps, insert=insert),
        (x, base, maps, classes), bs))
    fractions = np.linspace(0.0, 1.0, steps + 1)
    auc = np.trapezoid(scores, fractions, axis=-1)
    return PerturbationCurve(fractions, scores, auc)


def deletion(params: Params, images_rgb: ImagesRGB, heatmaps, *,
             class_index: int | ClassIndex | None = None,
             model: ConvNet | None = None, steps: int = 16,
             baseline="black", run: Run | None = None) -> PerturbationCurve:
    """Deletion curve: replace the most important pixels first by ``baseline``.

    Args:
      params: weights with a classifier top.
      images_rgb: RGB [0, 255] ``(n, H, W, 3)``.
      heatmaps: ``(n, h, w)`` importance maps (any resolution, e.g. from
        :func:`~jaxconvviz.cam`), upsampled bilinearly to ``(H, W)``.
      class_index: None (each image's top-1), an int or ``(n,)`` ints.
      model: the network; None infers the VGG16 preset.
      steps: the curve has ``steps + 1`` points, fractions ``0, 1/steps, ...,
        1`` of the pixels removed.
      baseline: what removed pixels become, in RGB [0, 255]: ``"black"``
        (default, RISE), ``"blur"`` (Gaussian, k=11, sigma=5), ``"mean"``
        (each image's mean colour), a number or an RGB array.
      run: execution options, :class:`~jaxconvviz.Run`; ``batch_size``:
        images per compiled call (None: all at once).

    Returns:
      :class:`PerturbationCurve`; a lower ``auc`` is a more faithful map.
    """
    return _perturbation_curve(params, images_rgb, heatmaps, insert=False,
                               class_index=class_index, model=model, steps=steps,
                               baseline=baseline, run=run, fn="deletion")


def insertion(params: Params, images_rgb: ImagesRGB, heatmaps, *,
              class_index: int | ClassIndex | None = None,
              model: ConvNet | None = None, steps: int = 16,
              baseline="blur", run: Run | None = None) -> PerturbationCurve:
    """Insertion curve: start from ``baseline`` (default the blurred image,
    RISE) and restore the most important pixels first. Arguments as
    :func:`deletion`; a higher ``auc`` is a more faithful map."""
    return _perturbation_curve(params, images_rgb, heatmaps, insert=True,
                               class_index=class_index, model=model, steps=steps,
                               baseline=baseline, run=run, fn="insertion")


# ------------------------------------------------------------------ ROAD
#: ROAD's neighbour weights: 1/6 for the 4 edge neighbours, 1/12 corners.
_STENCIL = np.array([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6],
                     [1 / 12, 1 / 6, 1 / 12]], np.float32)


def _neighbour_sum(z):
    """``sum_j w_ij z_j`` over the in-image 8-neighbourhood, ``(H, W, c)``."""
    zp = jnp.pad(z, ((1, 1), (1, 1), (0, 0)))
    h, w = z.shape[:2]
    out = jnp.zeros_like(z)
    for di in range(3):
        for dj in range(3):
            if _STENCIL[di, dj]:
                out = out + float(_STENCIL[di, dj]) * zp[di:di + h, dj:dj + w]
    return out


def linear_impute(image, removed, *, maxiter: int = 2000):
    """Fill ``removed`` pixels of one ``(H, W, c)`` image: each is the
    weighted mean of its in-image neighbours (ROAD's linear system, solved
    by conjugate gradients). Pixels kept are returned unchanged."""
    u = removed.astype(image.dtype)[..., None]
    known = (1.0 - u) * image
    total = _neighbour_sum(jnp.ones_like(image))  # in-image neighbour weight

    def matvec(z):
        z = u * z
        return u * (total * z - _neighbour_sum(z)) + (1.0 - u) * z

    b = u * _neighbour_sum(known)
    x0 = u * jnp.mean(known, axis=(0, 1), keepdims=True)
    sol, _ = jax.scipy.sparse.linalg.cg(matvec, b, x0=x0, tol=1e-6,
                                        maxiter=maxiter)
    return known + u * sol


@functools.partial(xla.jit, static_argnames=("model",))
def _road(params, x, maps, classes, fractions, noise, key, *, model):
    hw = x.shape[1:3]
    rank = pixel_rank(maps, hw)
    npix = hw[0] * hw[1]
    before = _scores(params, model.preprocess(x), classes, model)
    impute = jax.vmap(linear_impute)

    def one(args):
        frac, k = args
        m = jnp.round(frac * npix).astype(jnp.int32)
        out = []
        for j, removed in enumerate((rank < m, rank >= npix - m)):  # MoRF, LeRF
            filled = impute(x, removed)
            eps = jax.random.normal(jax.random.fold_in(k, j), x.shape)
            filled = filled + noise * eps * removed[..., None]
            out.append(_scores(params, model.preprocess(filled), classes, model)
                       - before)
        return jnp.stack(out)

    keys = jax.random.split(key, fractions.shape[0])
    res = jax.lax.map(one, (fractions, keys))  # (p, 2, n)
    return res[:, 0].T, res[:, 1].T


def road(params: Params, images_rgb: ImagesRGB, heatmaps, *,
         fractions=(0.1, 0.3, 0.5, 0.7, 0.9),
         class_index: int | ClassIndex | None = None,
         model: ConvNet | None = None, noise: float = 0.0,
         key: PRNGKey | None = None, run: Run | None = None) -> RoadResult:
    """ROAD: remove and debias, MoRF and LeRF at each fraction.

    Args:
      params, images_rgb, heatmaps, class_index, model: as :func:`deletion`.
      fractions: fractions of the pixels removed, each in (0, 1). (pytorch-
        grad-cam's ``percentile`` p keeps the lowest p% for MoRF and removes
        the lowest p% for LeRF; here a fraction is what is removed in both.)
      noise: standard deviation, RGB [0, 255] units, of the Gaussian noise
        added to imputed pixels (ROAD's "noisy" imputation); 0 (default):
        none.
      key: PRNG key for that noise; required when ``noise > 0``. Each
        chunk of ``run.batch_size`` images draws its noise from the same
        key, so with noise the values depend on the batch size.
      run: execution options, :class:`~jaxconvviz.Run`; ``batch_size``:
        images per compiled call (None: all at once).

    Returns:
      :class:`RoadResult` of score changes (after minus before).
    """
    fr = np.asarray(fractions, np.float64)
    if fr.ndim != 1 or fr.size == 0 or not ((fr > 0) & (fr < 1)).all():
        raise InputError(
            f"fractions must be a non-empty sequence of numbers in (0, 1); got "
            f"{fractions!r}.")
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.floating,
                                                         np.integer)) or noise < 0:
        raise InputError(f"noise must be a number >= 0; got {noise!r}.")
    if noise > 0 and key is None:
        raise InputError("road with noise > 0 needs key= (a jax.random.key).")
    model, x, maps, classes, bs = _setup(params, images_rgb, heatmaps, class_index,
                                         model, run, "road")
    key = jax.random.key(0) if key is None else key
    morf, lerf = map_in_chunks(
        lambda xb, mb, cb: _road(params, xb, mb, cb, jnp.asarray(fr, jnp.float32),
                                 float(noise), key, model=model),
        (x, maps, classes), bs)
    morf, lerf = np.asarray(morf), np.asarray(lerf)
    return RoadResult(fr, morf, lerf, ((lerf - morf) / 2).mean(axis=-1))


# ------------------------------------------------------------- confidence
@functools.partial(xla.jit, static_argnames=("model",))
def _confidence(params, x, maps, classes, *, model):
    xm = model.preprocess(x)
    up = resize_maps(maps, x.shape[1:3])
    y = _scores(params, xm, classes, model)
    o = _scores(params, xm * up[..., None], classes, model)
    return y, o


def confidence_change(params: Params, images_rgb: ImagesRGB, heatmaps, *,
                      class_index: int | ClassIndex | None = None,
                      model: ConvNet | None = None,
                      run: Run | None = None) -> ConfidenceChange:
    """Average drop and increase in confidence (Grad-CAM++ paper, section 5).

    ``O`` is the score of the preprocessed image multiplied by the heatmap
    (upsampled to the image; heatmaps should be in [0, 1], as
    :func:`~jaxconvviz.cam` returns them). Arguments as :func:`deletion`.
    """
    model, x, maps, classes, bs = _setup(params, images_rgb, heatmaps, class_index,
                                         model, run, "confidence_change")
    y, o = (np.asarray(a, np.float64) for a in map_in_chunks(
        lambda xb, mb, cb: _confidence(params, xb, mb, cb, model=model),
        (x, maps, classes), bs))
    drop = np.maximum(0.0, y - o) / np.maximum(y, np.finfo(np.float32).tiny)
    inc = o > y
    return ConfidenceChange(float(100 * drop.mean()), float(100 * inc.mean()),
                            drop, inc)


# ------------------------------------------------------------- localization
def _targets(masks, boxes, n: int, hw=None) -> np.ndarray:
    if (masks is None) == (boxes is None):
        raise InputError("give exactly one of masks= (n, H, W) bool or boxes= "
                         "(n, 4) as (top, left, bottom, right) pixels.")
    if masks is not None:
        m = np.asarray(masks)
        if m.ndim != 3 or m.shape[0] != n:
            raise InputError(f"masks must have shape ({n}, H, W); got {m.shape}.")
        return m.astype(bool)
    b = np.asarray(boxes)
    if b.shape != (n, 4) or hw is None:
        raise InputError(
            f"boxes must have shape ({n}, 4) (top, left, bottom, right; bottom "
            f"and right exclusive) and size= (H, W) must be given; got "
            f"{b.shape} and size={hw!r}.")
    rows = np.arange(hw[0])[None, :, None]
    cols = np.arange(hw[1])[None, None, :]
    t, l_, bo, r = (b[:, i, None, None] for i in range(4))
    return (rows >= t) & (rows < bo) & (cols >= l_) & (cols < r)


def _upsampled(heatmaps, hw) -> np.ndarray:
    a = np.asarray(heatmaps, np.float32)
    if a.ndim != 3 or not np.isfinite(a).all():
        raise InputError(
            f"heatmaps must be finite with shape (n, h, w); got {a.shape}.")
    return np.asarray(resize_maps(jnp.asarray(a), tuple(hw)))


def pointing_game(heatmaps, masks=None, *, boxes=None, size=None,
                  tolerance: float = 0.0) -> np.ndarray:
    """Pointing game: is each heatmap's maximum on the object?

    Args:
      heatmaps: ``(n, h, w)``; upsampled bilinearly to the masks' ``(H, W)``.
      masks: ``(n, H, W)`` bool object masks; or
      boxes: ``(n, 4)`` ``(top, left, bottom, right)`` in pixels (bottom and
        right exclusive), with ``size=(H, W)``.
      tolerance: a hit may lie this many pixels (Euclidean) from the object
        (Zhang et al. use 15 at 224 px).

    Returns:
      ``(n,)`` bool hits (``mean()`` is the pointing-game accuracy).
    """
    n = np.shape(heatmaps)[0]
    hw = size if masks is None else np.shape(masks)[1:]
    target = _targets(masks, boxes, n, None if hw is None else tuple(hw))
    up = _upsampled(heatmaps, target.shape[1:])
    flat = up.reshape(n, -1).argmax(-1)
    pi, pj = np.divmod(flat, target.shape[2])
    ii, jj = np.indices(target.shape[1:])
    d2 = (ii[None] - pi[:, None, None]) ** 2 + (jj[None] - pj[:, None, None]) ** 2
    return ((d2 <= float(tolerance) ** 2) & target).any(axis=(1, 2))


def mass_in_mask(heatmaps, masks=None, *, boxes=None, size=None) -> np.ndarray:
    """Fraction of each heatmap's mass (sum of its non-negative values, after
    bilinear upsampling) inside the object; arguments as
    :func:`pointing_game`. Returns ``(n,)`` float in [0, 1] (0 for an
    all-zero map)."""
    n = np.shape(heatmaps)[0]
    hw = size if masks is None else np.shape(masks)[1:]
    target = _targets(masks, boxes, n, None if hw is None else tuple(hw))
    up = np.maximum(_upsampled(heatmaps, target.shape[1:]), 0.0).astype(np.float64)
    total = up.sum(axis=(1, 2))
    inside = (up * target).sum(axis=(1, 2))
    return np.where(total > 0, inside / np.where(total > 0, total, 1.0), 0.0)


__all__ = [
    "PerturbationCurve",
    "RoadResult",
    "ConfidenceChange",
    "deletion",
    "insertion",
    "road",
    "confidence_change",
    "pointing_game",
    "mass_in_mask",
    "linear_impute",
    "gaussian_blur",
]
