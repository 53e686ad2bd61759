"""What every CAM and gradient attribution shares: argument checks, the
explained score (a class index or a target callable), the one forward (and
backward) pass at a layer, the final normalisation and bilinear resizing,
and the one function that reads the backend choices (``# SEAM(backend)``).

Imports jax, numpy and the package's compute modules only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxconvviz.backend import bind
from jaxconvviz.errors import InputError
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.models.predict import check_classifier_images, check_images
from jaxconvviz.models.vgg import resolve_model
from jaxconvviz.pixels import check_pixel_range
from jaxconvviz.run import Run

#: Input-space attribution methods (:func:`jaxconvviz.attribution`), whose
#: names CAM methods may not take.
ATTRIBUTION_METHODS = (
    "saliency",
    "guided_backprop",
    "guided_gradcam",
    "integrated_gradients",
    "smoothgrad",
)


#: Bytes of activations one chunk of a perturbation CAM may hold when
#: ``Run.memory_budget`` is None.
DEFAULT_MEMORY_BUDGET = 1 << 30

#: Smallest positive normal float32: the normaliser's floor. ``cam <= max``
#: always, so ``cam / maximum(max, TINY)`` lies in [0, 1], an all-zero map
#: stays 0 and a non-zero map reaches exactly 1.
TINY = float(np.finfo(np.float32).tiny)

#: Layer kinds that are spatial but summarise rather than compute features:
#: a CAM there is a resampled copy of the layer below (pooling), or of no
#: use (a 1x1 map after global pooling, flatten or dense).
NOT_CAM_KINDS = ("maxpool", "avgpool", "gap", "gmp", "flatten", "reshape", "dense")

NO_TOP_MSG = (
    "{fn} needs a classifier top (the class logits are what it "
    "differentiates); got {what}. Fetch the ImageNet weights with the top: "
    "`jaxconvviz weights fetch imagenet --top`, then "
    "jcv.load_vgg16('imagenet', include_top=True) -- or pass model= for a "
    "Keras classifier (jcv.load_keras_model)."
)


# ------------------------------------------------------------------ checks
def check_method(method, allowed, *, name: str = "method") -> str:
    if not isinstance(method, str) or method not in allowed:
        raise InputError(
            f"{name} must be one of {', '.join(allowed)}; got {method!r}.")
    return method


def check_run(run) -> Run:
    if run is None:
        return Run()
    if not isinstance(run, Run):
        raise InputError(f"run must be None or a jaxconvviz.Run; got {run!r:.60}.")
    return run


def run_batch_size(run: Run | None) -> int | None:
    return check_run(run).batch_size


def memory_budget_bytes(run: Run | None) -> int:
    """``Run.memory_budget`` in bytes (None: :data:`DEFAULT_MEMORY_BUDGET`)."""
    budget = check_run(run).memory_budget
    if budget is None:
        return DEFAULT_MEMORY_BUDGET
    if isinstance(budget, str):
        from jaxconvviz.featureviz.execution import parse_memory_budget

        return parse_memory_budget(budget)
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or (
            budget < 1):
        raise InputError(f"Run.memory_budget must be None, a positive int (bytes) "
                         f"or a string like '1GiB'; got {budget!r}.")
    return int(budget)


def is_target(class_index) -> bool:
    """A target callable (or feature-visualization objective) rather than
    class indices."""
    return callable(class_index) and not isinstance(class_index,
                                                    (np.ndarray, jax.Array))


def _as_objective_target(target):
    """Objectives (``ClassLogit``, ``ClassProbability``, sums of them) read
    only the logits here: anything that reads a layer is refused."""
    layers = getattr(target, "layers", frozenset())
    if layers or not getattr(target, "needs_logits", True):
        raise InputError(
            f"class_index objectives must read the class logits only "
            f"(ClassLogit, ClassProbability, sums and multiples of them); "
            f"got {target!r:.80}, which reads "
            f"{'layers ' + ', '.join(sorted(layers)) if layers else 'no logits'}.")
    return target


def target_values(target, logits):
    """``(m,)`` float32 values of a target on ``(m, classes)`` logits."""
    if hasattr(target, "needs_logits") and hasattr(target, "layers"):
        from jaxconvviz.featureviz.objectives import Context

        m = logits.shape[0]
        out = target(Context(acts={}, logits=logits, images=None,
                             filters=jnp.zeros((m,), jnp.int32)))
    else:
        out = target(logits)
    return jnp.asarray(out).astype(jnp.float32)


def check_target(target, n: int, num_classes: int):
    """A target callable -> ``(classes (n,) all -1, use_top1=False)``, after
    checking that it maps ``(n, classes)`` logits to ``(n,)`` numbers and
    is hashable (the compiled program is cached by it)."""
    if hasattr(target, "needs_logits") and hasattr(target, "layers"):
        _as_objective_target(target)
    try:
        hash(target)
    except TypeError:
        raise InputError(f"class_index callables must be hashable (a function, "
                         f"a frozen dataclass); got {target!r:.60}.") from None
    probe = jax.ShapeDtypeStruct((n, num_classes), jnp.float32)
    try:
        out = jax.eval_shape(lambda z: target_values(target, z), probe)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 -- the user's function failed
        raise InputError(
            f"class_index callable must map the (n, classes) = ({n}, "
            f"{num_classes}) float32 logits to (n,) numbers; calling "
            f"{target!r:.60} failed: {type(e).__name__}: {e}") from None
    if out.shape != (n,):
        raise InputError(
            f"class_index callable must map the ({n}, {num_classes}) logits to "
            f"one number per image, shape ({n},); got shape {out.shape}.")
    return np.full((n,), -1, np.int32), False


def check_class_index(class_index, n: int, num_classes: int):
    """-> (int32 (n,) array, use_top1) or ValueError naming the valid range."""
    if class_index is None:
        return np.zeros((n,), np.int32), True
    binary = num_classes == 1
    valid = "0 (the single logit of the binary head)" if binary else (
        f"0..{num_classes - 1}")
    accepted = (f"None, an int or an (n,) int array in {valid}, or a target "
                f"callable of the logits")
    if isinstance(class_index, (bool, np.bool_)):
        raise InputError(f"class_index must be {accepted}; got {class_index!r}.")
    arr = np.asarray(class_index)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(
            f"class_index must be {accepted}; "
            f"got dtype {arr.dtype} ({class_index!r:.60})."
        )
    arr = np.full((n,), int(arr)) if arr.ndim == 0 else arr
    if arr.shape != (n,):
        raise InputError(f"class_index must be an int or have shape ({n},) (one "
                         f"class per image); got shape {arr.shape}.")
    outside = (arr < 0) | (arr >= num_classes)
    if outside.any():
        plural = "s" if num_classes != 1 else ""
        raise InputError(f"class_index must be in {valid} (the model has "
                         f"{num_classes} output{plural}); got "
                         f"{int(arr[outside][0])}.")
    return arr.astype(np.int32), False


def check_size(size):
    """``None``, or ``size`` as ``(H, W)``: an int is a square side, as
    ``size=`` is everywhere else in the package."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (size, size)
    ok = (isinstance(size, (tuple, list)) and len(size) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                  and v > 0 for v in size))
    if not ok:
        raise InputError(
            f"size must be None, a positive int (a square side) or (H, W) with "
            f"positive ints; got {size!r}.")
    return (int(size[0]), int(size[1]))


def check_classifier(params, model: ConvNet | None, *, fn: str) -> ConvNet:
    """The resolved model, which must end in a Dense classifier whose params
    are all present."""
    model = resolve_model(params, model=model)
    if not model.has_top:
        raise InputError(NO_TOP_MSG.format(
            fn=fn,
            what="params without 'predictions' (include_top=False or HED "
            "weights)" if "predictions" not in params else
            "a model whose last layer is not Dense"))
    for name in model.param_layers:
        if name not in params:
            raise InputError(NO_TOP_MSG.format(
                fn=fn, what=f"params without layer {name!r}"))
    return model


def cam_layers(*, model: ConvNet) -> tuple[str, ...]:
    """The layers a CAM may target: spatial layers that compute features
    (not pooling, global pooling, flatten, reshape or dense)."""
    kinds = {s.name: s.kind for s in model.layers}
    return tuple(n for n in model.spatial_layers if kinds[n] not in NOT_CAM_KINDS)


def check_cam_layer(model: ConvNet, layer, *, name: str = "layer") -> str:
    """``layer`` if a CAM may target it (:func:`cam_layers`); a pooling,
    global pooling, flatten or dense layer is refused naming the nearest
    valid layers before and after it."""
    valid = cam_layers(model=model)
    if isinstance(layer, str) and layer in model.layer_names and layer not in valid:
        i = model.layer_index(layer)
        before = [n for n in valid if model.layer_index(n) < i]
        after = [n for n in valid if model.layer_index(n) > i]
        near = ([repr(before[-1]) + " (before it)"] if before else []) + (
            [repr(after[0]) + " (after it)"] if after else [])
        shown = ", ".join(valid[:60]) + (f", ... ({len(valid)} in all)"
                                         if len(valid) > 60 else "")
        raise InputError(
            f"{name} must be one of {shown}; got {layer!r}, a "
            f"{model.layers[i].kind} layer (a CAM needs a spatial layer that "
            f"computes features); the nearest are {' and '.join(near) or 'none'}.")
    return model.check_layer(layer, valid, name=name)


def prepare(params, images_rgb, layer, class_index, model, run, *,
            fn: str = "cam", headless: bool = False):
    """Validate everything before compute -> (model, layer, x, classes, top1).

    ``headless`` (a class-free CAM through :func:`~jaxconvviz.cam`): a model
    without a classifier top is accepted too, with ``class_index=None`` and
    images of any size the layer allows. A target callable gives classes
    of -1 (no class) and ``top1=False``."""
    if headless and not (model := resolve_model(params, model=model)).has_top:
        if class_index is not None:
            raise InputError(
                f"class_index must be None for {fn} on a model without a "
                f"classifier top (there are no classes); got {class_index!r}.")
        missing = [n for n in model.param_layers if n not in params]
        if missing:  # check_classifier's own check, for a model without a top
            raise InputError(f"params have no weights for layer {missing[0]!r} of "
                             f"this model; pass the params that belong to model=.")
        x = check_images(images_rgb, channels=model.input_shape[2])
        if x.shape[0] == 0:
            raise InputError("images_rgb must hold at least one image; got n=0.")
    else:
        model = check_classifier(params, model, fn=fn)
        x = check_classifier_images(model, images_rgb)
    check_pixel_range(x, name="images_rgb")
    if layer is None:
        layer = model.default_layer
    check_cam_layer(model, layer)
    shape = model.output_shape(layer, tuple(x.shape[1:3]))
    if min(shape[:2]) < 1:
        raise InputError(
            f"images_rgb of {x.shape[1]}x{x.shape[2]} px are too small for layer "
            f"{layer!r}; it needs at least {model.min_input_size(layer)} px."
        )
    check_run(run)
    if is_target(class_index):
        ci, use_top1 = check_target(class_index, x.shape[0], model.num_outputs)
    else:
        ci, use_top1 = check_class_index(class_index, x.shape[0], model.num_outputs)
    return model, layer, x, ci, use_top1


# ------------------------------------------------------------------ backend
def compute_model(model: ConvNet, *, conv3x3: str = "conv") -> ConvNet:
    """``model`` as the library's attribution programs run it, given the
    program's preferred 3x3 form (``"conv"``, or ``"by_shape"``: Winograd
    where it pays, for programs of many whole-network forward passes).

    Precedence: the model's own setting, then the process default
    (``jcv.backend(conv3x3=...)``), then the program's preference; the
    backend is bound before tracing (:func:`jaxconvviz.backend.bind`)."""
    return bind(model, library_gradients=True,
                prefer_conv3x3=None if conv3x3 == "conv" else conv3x3)


# ------------------------------------------------------------------ core
def select(logits, class_index, use_top1: bool, target=None):
    """(n,) scores explained and the class indices used: the logits of the
    chosen classes, or the target's values (classes as given, -1)."""
    if target is not None:
        return target_values(target, logits), class_index
    if use_top1:
        class_index = jnp.argmax(jax.lax.stop_gradient(logits), axis=-1).astype(
            jnp.int32)
    picked = jnp.take_along_axis(logits, class_index[:, None], axis=-1)[:, 0]
    return picked, class_index


def layer_and_gradient(params, x_model, class_index, use_top1, *, model: ConvNet,
                       layer: str, target=None):
    """One forward pass -> (A, G, logits, classes), all float32.

    ``A``: ``(n, h, w, c)`` activation of ``layer``; ``G``: the gradient of
    each image's explained score with respect to its own ``A`` (the sum
    over the batch separates: no layer mixes images at inference).
    """
    def run(delta):
        out, cap = model.forward_with(params, x_model, capture=(layer,),
                                      perturb={layer: delta}, logits=True)
        return out, cap[layer]

    shape = jax.eval_shape(lambda: run(jnp.zeros((), jnp.float32))[1])
    zeros = jnp.zeros(shape.shape, jnp.float32)

    def score(delta):
        out, acts = run(delta)
        logits = out.astype(jnp.float32)
        picked, used = select(logits, class_index, use_top1, target)
        return picked.sum(), (logits, used, acts)

    grads, (logits, used, acts) = jax.grad(score, has_aux=True)(zeros)
    return acts.astype(jnp.float32), grads.astype(jnp.float32), logits, used


def layer_and_logits(params, x_model, class_index, use_top1, *, model: ConvNet,
                     layer: str, target=None):
    """The forward half of :func:`layer_and_gradient` -> (A, logits, classes),
    for the methods that do not need ``G`` (no backward pass)."""
    out, cap = model.forward_with(params, x_model, capture=(layer,), logits=True)
    a = cap[layer]
    logits = out.astype(jnp.float32)
    _, used = select(logits, class_index, use_top1, target)
    return a.astype(jnp.float32), logits, used


def normalise(cam):
    """``relu(cam) / max`` per image, float32, zero-safe; the peak is
    exactly 1 (XLA:CPU may divide as a multiply by the reciprocal, which can
    leave it one ulp below)."""
    cam = jax.nn.relu(cam.astype(jnp.float32))
    peak = cam.max(axis=(1, 2), keepdims=True)
    return jnp.where((cam == peak) & (peak > 0), 1.0, cam / jnp.maximum(peak, TINY))


def resize_matrix(n_in: int, n_out: int, *, align_corners: bool) -> np.ndarray:
    """``(n_out, n_in)`` bilinear interpolation matrix (rows sum to 1).

    ``align_corners=True`` is torch's ``UpsamplingBilinear2d`` (Score-CAM in
    pytorch-grad-cam); False is the half-pixel rule of OpenCV / Pillow /
    ``jax.image.resize`` for upsampling.
    """
    out = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = out * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(1)
    else:
        src = np.clip((out + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    lo = np.clip(np.floor(src).astype(int), 0, n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    t = src - lo
    m = np.zeros((n_out, n_in), np.float64)
    m[np.arange(n_out), lo] += 1.0 - t
    m[np.arange(n_out), hi] += t
    return m.astype(np.float32)


def resize_maps(maps, size, *, align_corners: bool = False):
    """``(n, h, w)`` -> ``(n, H, W)`` bilinear (separable matrices)."""
    rh = jnp.asarray(resize_matrix(maps.shape[1], size[0],
                                   align_corners=align_corners))
    rw = jnp.asarray(resize_matrix(maps.shape[2], size[1],
                                   align_corners=align_corners))
    return jnp.einsum("Hh,nhw,Ww->nHW", rh, maps, rw)
