"""Classification and intermediate activations, batched and jitted.

Inputs are RGB images in [0, 255]; each model maps them to its own input
domain (VGG16: caffe BGR) via :meth:`ConvNet.preprocess`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxconvviz._types import ImagesRGB, Params
from jaxconvviz.backend import bind, xla
from jaxconvviz.errors import InputError
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.models.vgg import resolve_model
from jaxconvviz.pixels import check_pixel_range
from jaxconvviz.run import Run


def check_images(images, *, name: str = "images_rgb", channels: int | None = 3):
    """Validate an ``(n, h, w, c)`` batch; return it as float32 jax array."""
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) != 4 or (channels and shape[-1] != channels):
        want = f"(n, h, w, {channels})" if channels else "(n, h, w, c)"
        raise InputError(
            f"{name} must be a batch of shape {want}; got "
            f"{tuple(shape) if shape is not None else type(images).__name__}"
            + (" (add a batch axis: x[None])" if shape is not None and len(shape)
               == 3 else "") + "."
        )
    x = jnp.asarray(images, jnp.float32)
    if not bool(jnp.isfinite(x).all()):
        raise InputError(f"{name} contains NaN or inf values.")
    return x


def check_batch_size(batch_size) -> None:
    """``batch_size`` must be None or a positive int."""
    if batch_size is not None and (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, (int, np.integer)) or batch_size < 1):
        raise InputError(
            f"batch_size must be a positive int or None; got {batch_size!r}."
        )


def map_in_chunks(fn, arrays: tuple, batch_size: int | None):
    """``fn(*chunk)`` over equal chunks of the arrays' leading axis.

    The last chunk is zero-padded to the same size, so a jitted ``fn``
    compiles once; the padding is dropped from the outputs (any pytree of
    arrays with the batch axis first), which are concatenated.
    """
    n = arrays[0].shape[0]
    bs = n if batch_size is None else min(int(batch_size), n)
    outs = []
    for s in range(0, n, bs):
        part = [a[s:s + bs] for a in arrays]
        m = part[0].shape[0]
        if m < bs:
            part = [jnp.concatenate([p, jnp.zeros((bs - m, *p.shape[1:]), p.dtype)])
                    for p in part]
        outs.append(jax.tree.map(lambda o, m=m: o[:m], fn(*part)))
    if len(outs) == 1:
        return outs[0]
    return jax.tree.map(lambda *parts: jnp.concatenate(parts), *outs)


def check_classifier_images(model: ConvNet, images_rgb):
    """Validate images for a model's classifier head (fixed input size, n >= 1)."""
    x = check_images(images_rgb, channels=model.input_shape[2])
    want = model.input_shape[:2]
    if None not in want and tuple(x.shape[1:3]) != tuple(want):
        raise InputError(
            f"images_rgb must be {want[0]}x{want[1]} for this model's classifier "
            f"top; got {x.shape[1]}x{x.shape[2]} (use load_img(path, "
            f"target_size={tuple(want)}))."
        )
    if x.shape[0] == 0:
        raise InputError("images_rgb must hold at least one image; got n=0.")
    return x


def check_layers(model: ConvNet, layers, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """A layer name or a sequence of them -> a non-empty tuple of valid names."""
    if isinstance(layers, str):
        layers = (layers,)
    layers = tuple(layers)
    if not layers:
        raise InputError("layers must name at least one layer; got none.")
    for name in layers:
        model.check_layer(name, allowed, name="layers")
    return layers


@functools.partial(xla.jit, static_argnames=("model",))
def _predict(params, images, model):
    # The last layer's own activation (softmax for VGG16, sigmoid for a 1-unit
    # binary head) turns logits into probabilities, as Keras' predict does.
    return model.forward(params, model.preprocess(images)).astype(jnp.float32)


def predict(params: Params, images_rgb: ImagesRGB, *, model: ConvNet | None = None
            ) -> jax.Array:
    """Class probabilities, ``(n, classes)`` float32 (the last layer's output:
    softmax for VGG16, sigmoid for a 1-unit binary head).

    Args:
      params: weights with a classifier top (``load_vgg16(..., include_top=True)``).
      images_rgb: RGB float in [0, 255], ``(n, 224, 224, 3)`` for VGG16.
      model: the network; None infers the VGG16 preset from ``params``.
    """
    model = resolve_model(params, model=model)
    if not model.has_top:
        raise InputError(
            "predict needs weights with a classifier top; got params without "
            "'predictions'. Use jcv.load_vgg16('imagenet', include_top=True) "
            "(CLI: jaxconvviz weights fetch imagenet --top)."
        )
    x = check_classifier_images(model, images_rgb)
    check_pixel_range(x, name="images_rgb")
    return _predict(params, x, bind(model, library_gradients=False))


@functools.partial(xla.jit, static_argnames=("model", "layers"))
def _activations(params, images, model, layers):
    order = sorted(layers, key=model.layer_index)
    out, x, prev = {}, model.preprocess(images), None
    for name in order:
        x = model.forward(params, x, start=prev, stop=name)
        out[name] = x.astype(jnp.float32)
        prev = name
    return out


def activations(params: Params, images_rgb: ImagesRGB, *, layers,
                model: ConvNet | None = None, run: Run | None = None
                ) -> dict[str, jax.Array]:
    """Activations of several layers in one forward pass.

    Args:
      params: model weights.
      images_rgb: RGB float in [0, 255], ``(n, h, w, c)``.
      layers: layer names (any order; a single name is accepted too).
      model: the network; None infers the VGG16 preset from ``params``.
      run: execution options (:class:`~jaxconvviz.Run`): ``batch_size``
        (images per compiled call; None: all at once) bounds memory for large
        batches, every chunk reusing one compilation; ``dtype`` the compute
        dtype (float32 results); ``devices``/``progress`` are not used.

    Returns:
      ``{layer: (n, h', w', c') float32}`` (``(n, units)`` for dense layers),
      ReLU already applied where the layer has it, as Keras reports them.
    """
    model = resolve_model(params, model=model)
    layers = check_layers(model, layers, model.layer_names)
    x = check_images(images_rgb, channels=model.input_shape[2])
    check_pixel_range(x, name="images_rgb")
    for name in layers:
        shape = model.output_shape(name, tuple(x.shape[1:3]))
        if len(shape) == 3 and min(shape[:2]) < 1:
            raise InputError(
                f"images_rgb of {x.shape[1]}x{x.shape[2]} px are too small for "
                f"layer {name!r}; it needs at least {model.min_input_size(name)} px."
            )
    if run is None:
        run = Run()
    elif not isinstance(run, Run):
        raise InputError(f"run must be None or a jcv.Run(...); got {run!r:.80}.")
    batch_size = run.batch_size
    if run.dtype != "float32":
        model = model.with_dtype(jnp.dtype(run.dtype))
    wanted = tuple(dict.fromkeys(layers))
    model = bind(model, library_gradients=False)  # backend fixed before tracing
    return dict(map_in_chunks(
        lambda xb: _activations(params, xb, model, wanted), (x,), batch_size))


__all__ = ["predict", "activations", "check_images", "check_classifier_images",
           "check_layers", "check_batch_size", "map_in_chunks"]
