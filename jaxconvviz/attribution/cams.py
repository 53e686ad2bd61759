"""The CAM family: class-activation maps at a spatial layer, batched and jitted.

Every method weights the activation ``A`` (``(h, w, c)`` per image) of a
spatial layer; most use ``G = d y_k / d A``, the gradient of the
**pre-softmax** logit ``y_k`` of class ``k``. Both come from **one** forward
pass, :meth:`ConvNet.forward_with` with ``capture=(layer,)`` and a zero
``perturb`` at the layer: ``jax.grad`` with respect to that zero is ``G``.
No split into two models, so the same code serves chains and graph models.

Definitions follow pytorch-grad-cam (jacobgil/pytorch-grad-cam, read at
``084273b3f3``), per image, sums over ``(i, j)`` = over ``(h, w)``::

    gradcam              w_c = mean_ij G_ijc;           cam = sum_c w_c A_c
    gradcam++            a_ijc = G^2 / (2 G^2 + sum_ij(A_c) G^3 + 1e-6)
                         (0 where G = 0); w_c = sum_ij relu(G) a_ijc
    xgradcam             w_c = sum_ij G_ijc A_ijc / (sum_ij A_ijc + 1e-7)
    hirescam             cam = sum_c G_c * A_c
    gradcam_elementwise  cam = sum_c relu(G_c * A_c)
    layercam             cam = sum_c relu(G_c) * A_c
    eigencam             cam = first principal component of A (hw x c,
                         centred over locations) projected on A
    eigengradcam         the same for G * A
    scorecam             w = softmax_c(y_k(x * up(A_c)))   (up: bilinear to
                         the input size, align-corners, min-max normalised;
                         x in the model's input domain)
    ablationcam          w_c = (y_k - y_k(A with channel c zeroed)) / y_k

then ``cam = relu(cam) / max(cam)`` per image (an all-zero map stays zero).
Differences from pytorch-grad-cam, on purpose: the final scaling divides by
the maximum only (pytorch-grad-cam subtracts the minimum first, so its maps
always touch 0); the eigen-methods fix the SVD's arbitrary sign so that the
projection's largest-magnitude entry is positive (pytorch-grad-cam leaves it
to LAPACK; with the channel-sum rule instead, Eigen-CAM found the object on
69% of the trained test net's images, with this one on 100%); Ablation-CAM
zeroes the channel as the paper does (pytorch-grad-cam uses ``min - 1e7``
when the layer can be negative).

Score-CAM and Ablation-CAM run one forward pass per (image, channel): they
go through the ``n * c`` pairs in chunks of equal size inside one compiled
program (``lax.map``), the chunk sized so its activations fit
``memory_budget`` bytes. Ablation-CAM runs only the layers after the target
layer when it is a cut node of the network (every chain, and e.g. the last
block of ResNet50): for VGG16's ``block5_conv3`` that is ~0.1 GFLOP per
channel instead of a whole 15.5 GFLOP forward pass (pytorch-grad-cam runs the
whole model per ablated channel).

Score-CAM's forward passes are whole-network passes, hundreds per image, so
unless told otherwise (``conv3x3_impl=``) it computes the big 3x3
convolutions by Winograd's algorithm where it pays (``Backend.conv3x3="by_shape"``): the
extra ~4 s of compilation is repaid within one call (VGG16, one 224 px
image on 2 CPU cores: 68 s instead of 102 s, ``docs/benchmarks.md`` run 9).
The other methods make one forward pass and keep the model's own setting.

Imports jax, numpy and the package's compute modules only.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxconvviz._types import ClassIndex, Heatmaps, ImagesRGB, Params
from jaxconvviz.backend import bind, xla
from jaxconvviz.errors import InputError
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.models.predict import (
    check_batch_size,
    check_classifier_images,
    check_images,
    map_in_chunks,
)
from jaxconvviz.models.vgg import resolve_model

#: Method names accepted by :func:`cam`, in display order.
CAM_METHODS = (
    "gradcam",
    "gradcam++",
    "xgradcam",
    "hirescam",
    "layercam",
    "gradcam_elementwise",
    "eigencam",
    "eigengradcam",
    "scorecam",
    "ablationcam",
)

#: Display names (figures, CLI output).
CAM_LABELS = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "xgradcam": "XGrad-CAM",
    "hirescam": "HiRes-CAM",
    "layercam": "LayerCAM",
    "gradcam_elementwise": "Grad-CAM elementwise",
    "eigencam": "Eigen-CAM",
    "eigengradcam": "Eigen-Grad-CAM",
    "scorecam": "Score-CAM",
    "ablationcam": "Ablation-CAM",
}

#: Methods that run one forward pass per channel (chunked by memory_budget).
PERTURBATION_METHODS = ("scorecam", "ablationcam")

#: Methods that never read the gradient: one forward pass, no backward.
GRADIENT_FREE_METHODS = ("eigencam", *PERTURBATION_METHODS)

#: Methods whose map depends on no class: :func:`cam` runs them without the
#: classifier head (Eigen-CAM on VGG16 skips fc1's 411 MB of weights).
HEADLESS_METHODS = ("eigencam",)

#: Default bytes of activations one chunk of Score-/Ablation-CAM may hold.
DEFAULT_MEMORY_BUDGET = 1 << 30

#: Smallest positive normal float32: the normaliser's floor. ``cam <= max``
#: always, so ``cam / maximum(max, TINY)`` lies in [0, 1], an all-zero map
#: stays 0 and a non-zero map reaches exactly 1.
_TINY = float(np.finfo(np.float32).tiny)

NO_TOP_MSG = (
    "{fn} needs a classifier top (the class logits are what it "
    "differentiates); got {what}. Fetch the ImageNet weights with the top: "
    "`jaxconvviz weights fetch imagenet --top`, then "
    "jcv.load_vgg16('imagenet', include_top=True) -- or pass model= for a "
    "Keras classifier (jcv.load_keras_model)."
)


@dataclasses.dataclass(frozen=True)
class CamResult:
    """Heatmaps and what the same forward pass computed.

    Attributes:
      cams: ``(n, h, w)`` float32 in [0, 1].
      logits: ``(n, classes)`` float32 pre-softmax logits of the images.
      classes: ``(n,)`` int32, the class explained for each image.

    Unpacks as ``cams, logits, classes = result``.
    """

    cams: jax.Array
    logits: jax.Array
    classes: jax.Array

    def __iter__(self):
        return iter((self.cams, self.logits, self.classes))


# ------------------------------------------------------------------ checks
def check_method(method, allowed=CAM_METHODS, *, name: str = "method") -> str:
    if not isinstance(method, str) or method not in allowed:
        raise InputError(
            f"{name} must be one of {', '.join(allowed)}; got {method!r}.")
    return method


def check_class_index(class_index, n: int, num_classes: int):
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


def check_classifier(params: Params, model: ConvNet | None, *, fn: str
                     ) -> ConvNet:
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


def prepare(params, images_rgb, layer, class_index, model, batch_size, *,
            fn: str = "cam", headless: bool = False):
    """Validate everything before compute -> (model, layer, x, classes, top1).

    ``headless`` (Eigen-CAM through :func:`cam`): a model without a
    classifier top is accepted too, with ``class_index=None`` and images of
    any size the layer allows."""
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
    if layer is None:
        layer = model.default_layer
    model.check_layer(layer, model.spatial_layers, name="layer")
    shape = model.output_shape(layer, tuple(x.shape[1:3]))
    if min(shape[:2]) < 1:
        raise InputError(
            f"images_rgb of {x.shape[1]}x{x.shape[2]} px are too small for layer "
            f"{layer!r}; it needs at least {model.min_input_size(layer)} px."
        )
    check_batch_size(batch_size)
    ci, use_top1 = check_class_index(class_index, x.shape[0], model.num_outputs)
    return model, layer, x, ci, use_top1


# ------------------------------------------------------------------ core
def select(logits, class_index, use_top1: bool):
    """(n,) logits of the chosen classes and the class indices used."""
    if use_top1:
        class_index = jnp.argmax(jax.lax.stop_gradient(logits), axis=-1).astype(
            jnp.int32)
    picked = jnp.take_along_axis(logits, class_index[:, None], axis=-1)[:, 0]
    return picked, class_index


def layer_and_gradient(params, x_model, class_index, use_top1, *, model: ConvNet,
                       layer: str):
    """One forward pass -> (A, G, logits, classes), all float32.

    ``A``: ``(n, h, w, c)`` activation of ``layer``; ``G``: the gradient of
    each image's class logit with respect to its own ``A`` (the sum over the
    batch separates: no layer mixes images at inference).
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
        picked, used = select(logits, class_index, use_top1)
        return picked.sum(), (logits, used, acts)

    grads, (logits, used, acts) = jax.grad(score, has_aux=True)(zeros)
    return acts.astype(jnp.float32), grads.astype(jnp.float32), logits, used


def head_after(params, model: ConvNet, layer: str, act_shape):
    """``a -> class logits`` from ``layer``'s activation when ``layer`` is a
    cut node (every path to the output passes through it: any chain, and
    e.g. ResNet's last block); None otherwise."""
    try:
        jax.eval_shape(lambda a: model.logits(params, a, start=layer),
                       jax.ShapeDtypeStruct(act_shape, model.dtype))
    except InputError:
        return None
    return functools.partial(model.logits, params, start=layer)


def layer_and_logits(params, x_model, class_index, use_top1, *, model: ConvNet,
                     layer: str):
    """The forward half of :func:`layer_and_gradient` -> (A, logits, classes),
    for the methods that do not need ``G`` (no backward pass)."""
    out, cap = model.forward_with(params, x_model, capture=(layer,), logits=True)
    a = cap[layer]
    logits = out.astype(jnp.float32)
    _, used = select(logits, class_index, use_top1)
    return a.astype(jnp.float32), logits, used


def _top_eigenvector(sym, squarings: int = 12):
    """Unit top eigenvector of each symmetric PSD ``(n, k, k)`` matrix: the
    largest column of ``sym^(2^squarings)`` (normalised at every step)."""
    hi = jax.lax.Precision.HIGHEST

    def square(b, _):
        b = jnp.einsum("nij,njk->nik", b, b, precision=hi)
        return b / jnp.maximum(jnp.abs(b).max(axis=(1, 2), keepdims=True), _TINY), None

    b = sym / jnp.maximum(jnp.abs(sym).max(axis=(1, 2), keepdims=True), _TINY)
    b, _ = jax.lax.scan(square, b, None, length=squarings)
    norms = jnp.sqrt((b * b).sum(axis=1))  # (n, k) column norms
    col = jnp.take_along_axis(b, norms.argmax(axis=1)[:, None, None], axis=2)[..., 0]
    return col / jnp.maximum(jnp.sqrt((col * col).sum(axis=1, keepdims=True)), _TINY)


def principal_projection(m):
    """``(n, h, w, c)`` -> ``(n, h, w)``: each image's locations (rows of the
    ``hw x c`` matrix, centred over locations) projected on its first right
    singular vector. The SVD's sign is arbitrary (pytorch-grad-cam's
    get_2d_projection leaves it to LAPACK); here the projection's entry of
    largest magnitude is made positive (scikit-learn's ``svd_flip`` rule), so
    the most extreme location is the one highlighted."""
    n, h, w, c = m.shape
    flat = m.reshape(n, h * w, c)
    centred = flat - flat.mean(axis=1, keepdims=True)
    hi = jax.lax.Precision.HIGHEST
    # The first right singular vector v through the smaller symmetric matrix
    # S (M M^T u = s^2 u gives M v = s u; M^T M v = s^2 v gives M v), its top
    # eigenvector by repeated squaring: S^(2^12) is u u^T up to scale for any
    # eigengap above ~1e-3 (XLA:CPU's SVD and eigh took seconds per VGG16
    # 196 x 512 map; twelve 196^3 products take milliseconds).
    gram_route = h * w <= c
    if gram_route:
        sym = jnp.einsum("npc,nqc->npq", centred, centred, precision=hi)
    else:
        sym = jnp.einsum("npc,npd->ncd", centred, centred, precision=hi)
    top = _top_eigenvector(sym)
    if gram_route:
        lam = jnp.einsum("np,npq,nq->n", top, sym, top, precision=hi)
        proj = top * jnp.sqrt(jnp.maximum(lam, 0.0))[:, None]
    else:
        proj = jnp.einsum("npc,nc->np", centred, top, precision=hi)
    extreme = jnp.take_along_axis(proj, jnp.abs(proj).argmax(axis=1)[:, None],
                                  axis=1)
    proj = proj * jnp.where(extreme < 0, -1.0, 1.0)
    return proj.reshape(n, h, w)


def raw_cam(method: str, a, g):
    """The un-normalised map (before ReLU) of a gradient method."""
    if method == "gradcam":
        return jnp.einsum("nhwc,nc->nhw", a, g.mean(axis=(1, 2)))
    if method == "gradcam++":
        g2 = g * g
        g3 = g2 * g
        sum_a = a.sum(axis=(1, 2), keepdims=True)
        aij = g2 / (2.0 * g2 + sum_a * g3 + 1e-6)
        aij = jnp.where(g != 0, aij, 0.0)
        weights = (jax.nn.relu(g) * aij).sum(axis=(1, 2))
        return jnp.einsum("nhwc,nc->nhw", a, weights)
    if method == "xgradcam":
        sum_a = a.sum(axis=(1, 2), keepdims=True)
        weights = (g * a / (sum_a + 1e-7)).sum(axis=(1, 2))
        return jnp.einsum("nhwc,nc->nhw", a, weights)
    if method == "hirescam":
        return (g * a).sum(axis=-1)
    if method == "gradcam_elementwise":
        return jax.nn.relu(g * a).sum(axis=-1)
    if method == "layercam":
        return (jax.nn.relu(g) * a).sum(axis=-1)
    if method == "eigencam":
        return principal_projection(a)
    if method == "eigengradcam":
        return principal_projection(g * a)
    raise InputError(f"method {method!r} is not a gradient CAM")  # unreachable


def normalise(cam):
    """``relu(cam) / max`` per image, float32, zero-safe; the peak is
    exactly 1 (XLA:CPU may divide as a multiply by the reciprocal, which can
    leave it one ulp below)."""
    cam = jax.nn.relu(cam.astype(jnp.float32))
    peak = cam.max(axis=(1, 2), keepdims=True)
    return jnp.where((cam == peak) & (peak > 0), 1.0, cam / jnp.maximum(peak, _TINY))


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


def per_image_bytes(params, model: ConvNet, hw: tuple[int, int]) -> int:
    """Bytes of every layer's output for one image (the forward pass's
    working set; XLA keeps at most this much alive without gradients)."""
    x = jax.ShapeDtypeStruct((1, *hw, model.input_shape[2]), jnp.float32)
    _, cap = jax.eval_shape(lambda p, x: model.forward_with(
        p, x, capture=model.layer_names), params, x)
    item = jnp.dtype(model.dtype).itemsize
    return int(sum(np.prod(s.shape) * item for s in cap.values()))


def chunk_for(params, model, hw, memory_budget: int, total: int) -> int:
    per = max(1, per_image_bytes(params, model, hw))
    return int(max(1, min(total, memory_budget // per)))


def live_first(acts):
    """Score-CAM's pairs ``i * c + k`` (image ``i``, channel ``k``) with the
    live ones first, and how many are live: ``(order (n*c,), n_live)``.

    A channel whose map is exactly zero everywhere (a ReLU that never fired)
    gives Score-CAM an all-zero mask, ``(0 - 0) / (0 - 0 + 1e-8)``, so its
    masked input is the zero image for every such pair: one forward pass of
    a zero image scores them all, exactly. On the benchmark's random images
    59-85 of VGG16's 512 block5_conv3 channels are dead (12-17 on the
    bundled photos), as many fewer forward passes."""
    n, h, w, c = acts.shape
    dead = jnp.all(acts.reshape(n, h * w, c) == 0, axis=1).reshape(-1)
    order = jnp.argsort(dead, stable=True)
    return order, (n * c - dead.sum()).astype(jnp.int32)


def _channel_scores(params, x_model, acts, classes, *, model, layer, method,
                    chunk):
    """(n, c) class logits of the ``n * c`` perturbed forward passes."""
    n, h, w, c = acts.shape
    total = n * c
    steps = -(-total // chunk)
    hh, ww = x_model.shape[1:3]
    head = None
    if method == "ablationcam":
        # At a cut node only the layers after it run per channel; otherwise
        # the whole network runs with the channel zeroed through ``perturb``.
        head = head_after(params, model, layer, acts[:1].shape)
    if method == "scorecam":
        rh = jnp.asarray(resize_matrix(h, hh, align_corners=True))
        rw = jnp.asarray(resize_matrix(w, ww, align_corners=True))

    def one_chunk(ids):
        i, k = ids // c, ids % c
        if method == "scorecam":
            up = jnp.einsum("Hh,bhw,Ww->bHW", rh, acts[i, :, :, k], rw)
            lo = up.min(axis=(1, 2), keepdims=True)
            hi = up.max(axis=(1, 2), keepdims=True)
            up = (up - lo) / (hi - lo + 1e-8)
            out, _ = model.forward_with(params, x_model[i] * up[..., None],
                                        logits=True)
        else:
            onehot = jax.nn.one_hot(k, c, dtype=jnp.float32)
            delta = -acts[i] * onehot[:, None, None, :]
            if head is not None:
                out = head(acts[i] + delta)
            else:
                out, _ = model.forward_with(params, x_model[i],
                                            perturb={layer: delta}, logits=True)
        out = out.astype(jnp.float32)
        return jnp.take_along_axis(out, classes[i][:, None], axis=-1)[:, 0]

    if method != "scorecam":
        idx = jnp.minimum(jnp.arange(steps * chunk), total - 1).reshape(steps, chunk)
        scores = jax.lax.map(one_chunk, idx).reshape(-1)[:total]
        return scores.reshape(n, c)
    # Score-CAM: the live pairs in chunks (a while loop stops after the last
    # live one), the dead ones from one forward pass of the zero image.
    order, n_live = live_first(acts)
    padded = jnp.concatenate([order, jnp.full((steps * chunk - total,),
                                              order[-1])])

    def body(state):
        s, buf = state
        ids = jax.lax.dynamic_slice(padded, (s * chunk,), (chunk,))
        return s + 1, jax.lax.dynamic_update_slice(buf, one_chunk(ids), (s * chunk,))

    _, buf = jax.lax.while_loop(lambda st: st[0] * chunk < n_live, body,
                                (jnp.int32(0), jnp.zeros(steps * chunk, jnp.float32)))
    zero, _ = model.forward_with(params, jnp.zeros_like(x_model[:1]), logits=True)
    dead_score = zero[0].astype(jnp.float32)[classes]  # (n,)
    pos = jnp.arange(total)
    scores = jnp.zeros(total, jnp.float32).at[order].set(
        jnp.where(pos < n_live, buf[:total], dead_score[order // c]))
    return scores.reshape(n, c)


@functools.partial(xla.jit, static_argnames=("model", "layer", "method", "use_top1",
                                             "size", "chunk", "scores"))
def cam_batch(params, images, class_index, *, model: ConvNet, layer: str,
              method: str, use_top1: bool, size=None, chunk: int = 1,
              scores: bool = True):
    """One compiled program per (method, model, layer, shapes):
    images RGB [0, 255] -> (cams, logits, classes).

    ``scores=False`` (Eigen-CAM only, whose map needs no class): the network
    runs only up to ``layer``; logits come back ``(n, 0)`` and classes as
    given."""
    x = model.preprocess(images)
    if not scores and method in HEADLESS_METHODS:
        a = model.forward(params, x, stop=layer).astype(jnp.float32)
        logits, used, g = jnp.zeros((x.shape[0], 0), jnp.float32), class_index, None
    elif method in GRADIENT_FREE_METHODS:
        a, logits, used = layer_and_logits(params, x, class_index, use_top1,
                                           model=model, layer=layer)
        g = None
    else:
        a, g, logits, used = layer_and_gradient(params, x, class_index, use_top1,
                                                model=model, layer=layer)
    if method in PERTURBATION_METHODS:
        scores = _channel_scores(params, x, a, used, model=model, layer=layer,
                                 method=method, chunk=chunk)
        if method == "scorecam":
            weights = jax.nn.softmax(scores, axis=-1)
        else:
            base = jnp.take_along_axis(logits, used[:, None], axis=-1)
            weights = (base - scores) / base
        raw = jnp.einsum("nhwc,nc->nhw", a, weights)
    else:
        raw = raw_cam(method, a, g)
    cam = normalise(raw)
    if size is not None:
        cam = jnp.clip(resize_maps(cam, size), 0.0, 1.0)
    return cam, logits, used


#: Methods whose many whole-network forward passes repay Winograd's compile
#: time in one call: they prefer ``Backend.conv3x3="by_shape"`` for ``"auto"``.
WINOGRAD_METHODS = ("scorecam",)

#: ``conv3x3_impl=`` values: a ``Backend.conv3x3`` value, or 0.x's ``"auto"``
#: (Winograd where it pays: ``"by_shape"``).
CONV3X3_IMPLS = ("conv", "winograd", "by_shape", "auto")


def _check_conv3x3(conv3x3_impl) -> None:
    if conv3x3_impl is not None and conv3x3_impl not in CONV3X3_IMPLS:
        raise InputError("conv3x3_impl must be None or one of "
                         f"{', '.join(CONV3X3_IMPLS)}; "
                         f"got {conv3x3_impl!r}.")


def _cam_model(method: str, model: ConvNet, conv3x3_impl: str | None) -> ConvNet:
    """``model`` bound for :func:`cam`'s gradient programs (custom input
    gradients on CPU), ``conv3x3_impl`` set on it when given, Score-CAM
    preferring Winograd where it pays (:func:`jaxconvviz.backend.bind`)."""
    _check_conv3x3(conv3x3_impl)
    if conv3x3_impl is not None:
        model = model.with_backend(
            conv3x3="by_shape" if conv3x3_impl == "auto" else conv3x3_impl)
    return bind(model, library_gradients=True,
                prefer_conv3x3="by_shape" if method in WINOGRAD_METHODS else None)


def effective_conv3x3_impl(method: str, model: ConvNet,
                           conv3x3_impl: str | None = None) -> str:
    """The ``Backend.conv3x3`` that :func:`cam` uses for ``method`` on
    ``model`` (resolved: ``"conv"``, ``"winograd"`` or ``"by_shape"``)."""
    return _cam_model(method, model, conv3x3_impl).backend.conv3x3


def cam_with_scores(params: Params, images_rgb: ImagesRGB, *,
                    method: str = "gradcam", layer: str | None = None,
                    class_index: int | ClassIndex | None = None,
                    model: ConvNet | None = None,
                    size: int | tuple[int, int] | None = None,
                    batch_size: int | None = None,
                    memory_budget: int = DEFAULT_MEMORY_BUDGET,
                    conv3x3_impl: str | None = None) -> CamResult:
    """:func:`cam` plus the logits and classes of the same forward pass.

    Args: as :func:`cam`.

    Returns:
      A :class:`CamResult` (``cams, logits, classes``; unpacks as a tuple).
    """
    return _cams(params, images_rgb, method=method, layer=layer,
                 class_index=class_index, model=model, size=size,
                 batch_size=batch_size, memory_budget=memory_budget,
                 conv3x3_impl=conv3x3_impl, scores=True)


def _cams(params, images_rgb, *, method, layer, class_index, model, size,
          batch_size, memory_budget, conv3x3_impl, scores: bool) -> CamResult:
    check_method(method)
    size = check_size(size)
    if (isinstance(memory_budget, bool)
            or not isinstance(memory_budget, (int, np.integer))
            or memory_budget < 1):
        raise InputError(
            f"memory_budget must be a positive int (bytes); got {memory_budget!r}.")
    _check_conv3x3(conv3x3_impl)
    model, layer, x, ci, use_top1 = prepare(
        params, images_rgb, layer, class_index, model, batch_size,
        fn=f"cam(method={method!r})",
        headless=not scores and method in HEADLESS_METHODS)
    model = _cam_model(method, model, conv3x3_impl)  # backend fixed: see bind
    n = x.shape[0]
    bs = n if batch_size is None else min(int(batch_size), n)
    chunk = 1
    if method in PERTURBATION_METHODS:
        c = model.output_shape(layer, tuple(x.shape[1:3]))[-1]
        chunk = chunk_for(params, model, tuple(x.shape[1:3]), int(memory_budget),
                          bs * c)
    cams, logits, used = map_in_chunks(
        lambda xb, cb: cam_batch(params, xb, cb, model=model, layer=layer,
                                 method=method, use_top1=use_top1, size=size,
                                 chunk=chunk, scores=scores),
        (x, jnp.asarray(ci, jnp.int32)), batch_size)
    return CamResult(cams, logits, used)


def cam(params: Params, images_rgb: ImagesRGB, *, method: str = "gradcam",
        layer: str | None = None, class_index: int | ClassIndex | None = None,
        model: ConvNet | None = None, size: int | tuple[int, int] | None = None,
        batch_size: int | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        conv3x3_impl: str | None = None) -> Heatmaps:
    """Class-activation maps of one CAM method, one per image.

    Args:
      params: weights **with** a classifier top; Eigen-CAM
        (:data:`HEADLESS_METHODS`) also takes weights without one (then
        ``class_index=None`` and any image size the layer allows).
      images_rgb: RGB float in [0, 255] (or uint8), ``(n, h, w, 3)``;
        ``model.preprocess`` maps them to the model's input domain (VGG16:
        caffe BGR). Score-CAM multiplies the preprocessed input by each mask.
      method: one of :data:`CAM_METHODS` (see the module docstring).
      layer: a spatial layer (``model.spatial_layers``); None:
        ``model.default_layer``, the last spatial non-pooling layer
        (``block5_conv3`` for VGG16).
      class_index: None (each image's top-1 class), an int, or an ``(n,)``
        int array.
      model: the network (VGG16 or an imported Keras CNN); None infers the
        VGG16 preset from ``params``.
      size: None (maps at the layer's resolution), ``(H, W)`` or an int
        (a square side): bilinear (half-pixel) resize inside the compiled
        program.
      batch_size: images per compiled call (None: all at once).
      memory_budget: bytes of activations one chunk of Score-/Ablation-CAM
        forward passes may hold (default 1 GiB).
      conv3x3_impl: how this call computes the model's stride-1 3x3
        convolutions, a ``Backend.conv3x3`` value (``"conv"``,
        ``"winograd"``, ``"by_shape"``; ``"auto"`` is ``"by_shape"``); None:
        the model's backend and the process default, else ``"conv"``, except
        that Score-CAM (:data:`WINOGRAD_METHODS`) prefers ``"by_shape"``
        (Winograd where it pays, on XLA:CPU): its hundreds of forward passes
        per image repay the extra compilation.

    Returns:
      ``(n, h, w)`` float32 in [0, 1]; each map's maximum is 1 or the map is
      all zeros. Eigen-CAM (:data:`HEADLESS_METHODS`) runs the network only
      up to ``layer`` here (VGG16, one image: 0.18-0.19 s against 0.20-0.23 s
      with the head); :func:`cam_with_scores` also runs the head.

    Raises:
      ValueError: an unknown method (lists them), params without a top, a
        non-spatial layer, bad images, class indices out of range, a bad
        ``size``/``batch_size``/``memory_budget``; all before any compute.
    """
    return _cams(params, images_rgb, method=method, layer=layer,
                 class_index=class_index, model=model, size=size,
                 batch_size=batch_size, memory_budget=memory_budget,
                 conv3x3_impl=conv3x3_impl,
                 scores=method not in HEADLESS_METHODS).cams


__all__ = [
    "CAM_METHODS",
    "CAM_LABELS",
    "CamResult",
    "WINOGRAD_METHODS",
    "cam",
    "cam_with_scores",
    "effective_conv3x3_impl",
]
