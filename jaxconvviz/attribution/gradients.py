"""Input-space gradient attributions: saliency, guided backprop, guided
Grad-CAM, Integrated Gradients and SmoothGrad, batched and jitted.

All of them differentiate the **pre-softmax** logit ``y_k`` of each image's
class with respect to its RGB pixels in [0, 255] (through the model's own
preprocessing), and return ``(n, H, W, 3)`` float32 -- signed, raw values
(take ``abs().max(-1)`` or similar to display them):

* ``saliency`` (Simonyan et al. 2014): ``d y_k / d x``.
* ``guided_backprop`` (Springenberg et al. 2015): the same backward pass with
  every ReLU's rule replaced by ``g * (x > 0) * (g > 0)`` -- a
  ``jax.custom_vjp`` ReLU (:func:`guided_relu`) substituted for the model's
  ReLUs by a jaxpr rewrite of this one function (:func:`guided`); nothing
  global is switched, so other computations are untouched. Only ReLU is
  guided (ReLU6, swish... keep their gradients, as in Captum, which hooks
  ``nn.ReLU`` only): on a model without ReLU, such as MobileNetV2 (ReLU6),
  it equals saliency, and :func:`attribution` warns.
* ``guided_gradcam`` (Selvaraju et al.): guided backprop times the Grad-CAM
  map, bilinearly upsampled to the input (option ``layer=``).
* ``integrated_gradients`` (Sundararajan et al. 2017): ``(x - b) *
  mean_alpha d y_k / d x (b + alpha (x - b))`` over ``steps + 1`` points,
  trapezoidal rule; options ``steps=`` (default 64) and ``baseline=`` (None:
  black, 0; a number; or an RGB array broadcastable to the images).
  Completeness: the attributions sum to ``y_k(x) - y_k(b)`` up to the
  quadrature error.
* ``smoothgrad`` (Smilkov et al. 2017): the mean of ``base`` (option, any
  other method; default saliency) over ``samples=`` (25) noisy copies
  ``x + sigma * eps``, ``sigma = noise_level * (max(x) - min(x))`` per image
  (``noise_level=`` 0.15). ``eps`` comes from the explicit ``key`` and is the
  same for every image of a batch, so a batch equals its images one at a
  time.

The class of an image is chosen once, on the clean image (``class_index=None``:
its top-1), and kept along the IG path and for every SmoothGrad sample.

Imports jax, numpy and the package's compute modules only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

from jaxconvviz._types import ClassIndex, ImagesRGB, Params, PRNGKey
from jaxconvviz.attribution._cam_common import (
    ATTRIBUTION_METHODS,
    check_cam_layer,
    check_class_index,
    check_classifier,
    check_method,
    check_run,
    check_target,
    compute_model,
    is_target,
    layer_and_gradient,
    normalise,
    resize_maps,
    select,
    target_values,
)
from jaxconvviz.backend import xla
from jaxconvviz.errors import InputError
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.models.predict import check_classifier_images, map_in_chunks
from jaxconvviz.pixels import check_pixel_range
from jaxconvviz.run import Run

#: Method names accepted by :func:`attribution`.

ATTRIBUTION_LABELS = {
    "saliency": "Saliency",
    "guided_backprop": "Guided backprop",
    "guided_gradcam": "Guided Grad-CAM",
    "integrated_gradients": "Integrated Gradients",
    "smoothgrad": "SmoothGrad",
}

#: Options each method accepts (beyond the common arguments).
OPTIONS = {
    "saliency": (),
    "guided_backprop": (),
    "guided_gradcam": ("layer",),
    "integrated_gradients": ("steps", "baseline"),
    "smoothgrad": ("base", "samples", "noise_level", "steps", "baseline", "layer"),
}


# ------------------------------------------------------------ guided ReLU
@jax.custom_vjp
def guided_relu(x):
    """ReLU whose backward pass lets only positive gradients through where
    the input was positive: ``g * (x > 0) * (g > 0)``."""
    return jnp.maximum(x, jnp.zeros((), x.dtype))


def _guided_fwd(x):
    return guided_relu(x), x


def _guided_bwd(x, g):
    return (jnp.where((x > 0) & (g > 0), g, jnp.zeros((), g.dtype)),)


guided_relu.defvjp(_guided_fwd, _guided_bwd)


def _is_relu(eqn) -> bool:
    """``jax.nn.relu`` appears as a custom_jvp_call around ``jit[name=relu]``."""
    if eqn.primitive.name != "custom_jvp_call":
        return False
    inner = eqn.params["call_jaxpr"].jaxpr
    return (len(inner.eqns) == 1 and inner.eqns[0].params.get("name") == "relu")


def _eval_guided(jaxpr, consts, *args):
    env = {}

    def read(v):
        return v.val if isinstance(v, jex_core.Literal) else env[v]

    for v, c in zip(jaxpr.constvars, consts, strict=True):
        env[v] = c
    for v, a in zip(jaxpr.invars, args, strict=True):
        env[v] = a
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if _is_relu(eqn):
            outs = [guided_relu(invals[0])]
        elif name in ("pjit", "jit", "closed_call", "core_call"):
            sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
            if isinstance(sub, jex_core.ClosedJaxpr):
                outs = _eval_guided(sub.jaxpr, sub.consts, *invals)
            else:
                outs = _eval_guided(sub, (), *invals)
        else:
            params = eqn.primitive.get_bind_params(eqn.params)
            with eqn.ctx.manager:
                outs = eqn.primitive.bind(*invals, **params)
            if not eqn.primitive.multiple_results:
                outs = [outs]
        for v, o in zip(eqn.outvars, outs, strict=True):
            if not isinstance(v, jex_core.DropVar):
                env[v] = o
    return [read(v) for v in jaxpr.outvars]


def _warn_if_unguided(model: ConvNet) -> None:
    """Guided backprop changes only ReLUs (``jax.nn.relu``); on a model with
    none it is saliency, and the user should know rather than compare two
    equal maps."""
    acts = {s.opt("activation") for s in model.layers} - {None}
    if "relu" not in acts:
        import warnings

        warnings.warn(
            f"model {model.name_!r} has no ReLU (its activations: "
            f"{', '.join(sorted(acts)) or 'none'}), so guided backprop equals "
            "saliency on it: the guided rule applies to ReLU only, as in "
            "Springenberg et al. and Captum (which hooks nn.ReLU, not ReLU6).",
            UserWarning, stacklevel=3)


def guided(fn):
    """``fn`` with every ``jax.nn.relu`` in it replaced by :func:`guided_relu`.

    Same forward values; under ``jax.grad`` the backward pass is guided
    backpropagation's. A rewrite of ``fn``'s jaxpr (traced once per input
    shape), so it works on any network built from ``jax.nn.relu`` (every
    ``"relu"`` activation of :class:`ConvNet`, chains and graphs).
    """
    def wrapped(*args):
        flat, tree = jax.tree.flatten(args)
        shapes = [jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a))
                  for a in flat]
        closed, out_shape = jax.make_jaxpr(
            lambda *f: fn(*jax.tree.unflatten(tree, f)), return_shape=True)(*shapes)
        outs = _eval_guided(closed.jaxpr, closed.consts, *flat)
        return jax.tree.unflatten(jax.tree.structure(out_shape), outs)

    return wrapped


# ------------------------------------------------------------ core
def _logits(params, x_rgb, model: ConvNet):
    out, _ = model.forward_with(params, model.preprocess(x_rgb), logits=True)
    return out.astype(jnp.float32)


def _class_grad(params, x_rgb, classes, *, model, guided_relus: bool, target=None):
    def f(p, xx):
        return _logits(p, xx, model)

    def score(x):
        logits = (guided(f) if guided_relus else f)(params, x)
        if target is not None:
            return target_values(target, logits).sum()
        return jnp.take_along_axis(logits, classes[:, None], axis=-1).sum()

    return jax.grad(score)(x_rgb)


def _base_attr(method, params, x, classes, baseline, *, model, steps, layer,
               target=None):
    """One gradient method on one batch (classes or target fixed)."""
    kw = dict(model=model, target=target)
    if method == "saliency":
        return _class_grad(params, x, classes, guided_relus=False, **kw)
    if method == "guided_backprop":
        return _class_grad(params, x, classes, guided_relus=True, **kw)
    if method == "guided_gradcam":
        from jaxconvviz.attribution.cam_gradient import gradcam_map

        gb = _class_grad(params, x, classes, guided_relus=True, **kw)
        a, g, _, _ = layer_and_gradient(params, model.preprocess(x), classes, False,
                                        layer=layer, **kw)
        cam = resize_maps(normalise(gradcam_map(a, g)), x.shape[1:3])
        return gb * cam[..., None]
    if method == "integrated_gradients":
        alphas = jnp.linspace(0.0, 1.0, steps + 1)
        wts = jnp.full((steps + 1,), 1.0 / steps).at[0].set(0.5 / steps).at[
            -1].set(0.5 / steps)
        diff = x - baseline

        def step(acc, aw):
            alpha, w = aw
            g = _class_grad(params, baseline + alpha * diff, classes,
                            guided_relus=False, **kw)
            return acc + w * g, None

        total, _ = jax.lax.scan(step, jnp.zeros_like(x), (alphas, wts))
        return diff * total
    raise InputError(f"unknown base method {method!r}")  # unreachable: checked


@functools.partial(xla.jit, static_argnames=("model", "method", "base", "use_top1",
                                             "steps", "samples", "layer", "target"))
def attribution_batch(params, images, class_index, baseline, key, noise_level, *,
                      model: ConvNet, method: str, base: str, use_top1: bool,
                      steps: int, samples: int, layer: str | None, target=None):
    """One compiled program per (method, options, shapes) -> (attr, classes)."""
    logits = _logits(params, images, model)
    _, classes = select(logits, class_index, use_top1, target)
    kw = dict(model=model, steps=steps, layer=layer, target=target)
    if method != "smoothgrad":
        out = _base_attr(method, params, images, classes, baseline, **kw)
        return out.astype(jnp.float32), classes
    eps = jax.random.normal(key, (samples, *images.shape[1:]), jnp.float32)
    span = images.max(axis=(1, 2, 3)) - images.min(axis=(1, 2, 3))
    sigma = (noise_level * span)[:, None, None, None]

    def one(acc, e):
        return acc + _base_attr(base, params, images + sigma * e[None], classes,
                                baseline, **kw), None

    total, _ = jax.lax.scan(one, jnp.zeros_like(images), eps)
    return (total / samples).astype(jnp.float32), classes


def _check_int(value, name: str, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
            value < lo):
        raise InputError(f"{name} must be an int >= {lo}; got {value!r}.")
    return int(value)


def attribution(params: Params, images_rgb: ImagesRGB, *, method: str = "saliency",
                class_index: int | ClassIndex | None = None,
                model: ConvNet | None = None, key: PRNGKey | None = None,
                run: Run | None = None, **options) -> jax.Array:
    """Input-space attributions of each image's class, one map per image.

    Args:
      params: weights with a classifier top.
      images_rgb: RGB float in [0, 255] (or uint8), ``(n, H, W, 3)``; the
        gradients are with respect to these pixels (through
        ``model.preprocess``).
      method: one of :data:`ATTRIBUTION_METHODS` (see the module docstring).
      class_index: None (each image's top-1), an int, ``(n,)`` ints, or a
        target callable of the logits (as :func:`~jaxconvviz.cam`).
      model: the network; None infers the VGG16 preset from ``params``.
      key: PRNG key; required by ``smoothgrad`` (its noise), unused by the
        others.
      run: execution options, :class:`~jaxconvviz.Run`: ``batch_size``
        (images per compiled call; None: all at once); its other fields are
        not used here.
      **options: ``layer`` (guided_gradcam; None = ``model.default_layer``),
        ``steps`` (integrated_gradients: int >= 1, default 64), ``baseline``
        (integrated_gradients: None = black, a number or an RGB array
        broadcastable to ``(n, H, W, 3)``), ``base`` (smoothgrad: another
        method, default ``"saliency"``), ``samples`` (smoothgrad, default 25)
        and ``noise_level`` (smoothgrad, default 0.15 of each image's range).

    Returns:
      ``(n, H, W, 3)`` float32, signed.

    Raises:
      ValueError: an unknown method or option (lists the valid ones),
        smoothgrad without a key, bad images, classes, steps, samples,
        noise_level or baseline; all before any compute.
    """
    check_method(method, ATTRIBUTION_METHODS)
    base = options.pop("base", "saliency")
    if method == "smoothgrad":
        check_method(base, tuple(m for m in ATTRIBUTION_METHODS if m != "smoothgrad"),
                     name="base")
        allowed = OPTIONS["smoothgrad"]
    else:
        allowed = OPTIONS[method]
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise InputError(
            f"method {method!r} takes the options {', '.join(allowed) or 'none'}"
            f"; got {', '.join(bad)}.")
    steps = _check_int(options.get("steps", 64), "steps")
    samples = _check_int(options.get("samples", 25), "samples")
    noise_level = options.get("noise_level", 0.15)
    if isinstance(noise_level, bool) or not isinstance(
            noise_level, (int, float, np.floating, np.integer)) or not (
            0.0 <= float(noise_level) < np.inf):
        raise InputError(
            f"noise_level must be a number >= 0; got {noise_level!r}.")
    if method == "smoothgrad":
        if key is None:
            raise InputError(
                "smoothgrad needs key= (a jax.random.key) for its noise; got None.")
    else:
        key = jax.random.key(0)  # unused; a concrete value for the jit signature
    if not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype,
                                                          jax.dtypes.prng_key)):
        raise InputError(f"key must be a jax.random.key; got {key!r:.60}.")
    model = check_classifier(params, model, fn=f"attribution(method={method!r})")
    x = check_classifier_images(model, images_rgb)
    check_pixel_range(x, name="images_rgb")
    layer = options.get("layer")
    uses = (method, base) if method == "smoothgrad" else (method,)
    if {"guided_backprop", "guided_gradcam"} & set(uses):
        _warn_if_unguided(model)
    if "guided_gradcam" in uses:
        layer = model.default_layer if layer is None else layer
        check_cam_layer(model, layer)
    else:
        layer = None
    baseline = options.get("baseline")
    baseline = np.zeros((), np.float32) if baseline is None else np.asarray(
        baseline, np.float32)
    try:
        baseline = np.broadcast_to(baseline, x.shape).copy()
    except ValueError:
        raise InputError(
            f"baseline must be None, a number or an RGB array broadcastable to "
            f"{tuple(x.shape)}; got shape {baseline.shape}.") from None
    if not np.isfinite(baseline).all():
        raise InputError("baseline contains NaN or inf values.")
    run = check_run(run)
    target = class_index if is_target(class_index) else None
    if target is not None:
        ci, use_top1 = check_target(target, x.shape[0], model.num_outputs)
    else:
        ci, use_top1 = check_class_index(class_index, x.shape[0], model.num_outputs)
    model = compute_model(model)
    out, _ = map_in_chunks(
        lambda xb, cb, bb: attribution_batch(
            params, xb, cb, bb, key, float(noise_level), model=model, method=method,
            base=base, use_top1=use_top1, steps=steps, samples=samples, layer=layer,
            target=target),
        (x, jnp.asarray(ci, jnp.int32), jnp.asarray(baseline)), run.batch_size)
    return out


__all__ = [
    "ATTRIBUTION_METHODS",
    "ATTRIBUTION_LABELS",
    "attribution",
    "guided",
    "guided_relu",
]
