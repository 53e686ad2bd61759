"""Filter patterns by gradient ascent in input space (DLwP listing 5.38), batched.

The book maximises the mean activation of one filter of one layer by 40
normalised gradient steps from a grey noisy image, one filter at a time in
Python. Here every filter of a request is optimised in one compiled program
by the rendering engine (:mod:`jaxconvviz.featureviz.render`, style
:class:`~jaxconvviz.featureviz.render.Book`): one batched forward pass and
the gradient of the sum of the per-image objectives (each image's own
gradient, as no layer mixes images). How it runs -- chunks of
``batch_size`` filters sharing one compiled shape, the step loop as a
one ``lax.fori_loop`` (or, on request, a Python loop over one jitted step),
the filters of a chunk split over ``devices`` -- is
:mod:`jaxconvviz.featureviz.execution`, shared with
:func:`~jaxconvviz.filter_atlas` and :func:`~jaxconvviz.render`. Filter
indices are traced, so a second call with other filters of the same count
reuses the compiled program.

With ``channel_only`` (the default on XLA:CPU) a target conv layer is
computed for each filter's channel only
(:meth:`~jaxconvviz.ConvNet.channel_forward`): the same values up to float
summation order, at ``1 / c_out`` of the target layer's cost.

Imports jax and numpy only (no Pillow, h5py or matplotlib).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxconvviz._types import Params, PRNGKey
from jaxconvviz.backend import bind
from jaxconvviz.errors import InputError
from jaxconvviz.featureviz import execution as ex
from jaxconvviz.featureviz.execution import (  # noqa: F401 - public re-exports
    CPU_BATCH_SIZE,
    CPU_ROWS,
    CPU_SHARD_MIN_MACS,
    DTYPES,
    LOOPS,
    MESH_AXIS,
    auto_devices,
    chunk_size,
    conv_macs,
    default_batch_size,
    filter_mesh,
    filter_shardings,
    resolve_channel_only,
)
from jaxconvviz.featureviz.render import (  # noqa: F401 - public re-exports
    DEAD_HINT,
    GRAD_EPS,
    START_OFFSET,
    START_SCALE,
    Book,
    RenderSpec,
    book_start_images,
    book_values_and_grads,
    check_image_dtype,
    concat_chunks,
    dead_hint,
    in_storage,
    run_request,
    warn_unmoved,
)
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.models.vgg import resolve_model


def _spec(layer: str, steps: int, step_size: float, preprocess: bool,
          pre_activation: bool = False, image_dtype: str = "float32") -> RenderSpec:
    return RenderSpec(layer=layer, style=Book(step_size=step_size,
                                              preprocess=preprocess,
                                              image_dtype=image_dtype),
                      steps=steps, pre_activation=pre_activation)


# Compatibility entry points of the book's step (the benchmark script and the
# tests drive them directly); the engine itself runs through render.run_spec.
@functools.partial(jax.jit, static_argnames=("size", "channels"))
def _start_images(key, fidx, *, size, channels):
    return book_start_images(key, fidx, size=size, channels=channels)


def _step(params, x, fidx, step_size, *, model, layer, preprocess,
          channel_only=False):
    from jaxconvviz.featureviz.render import book_normalise

    _, g = book_values_and_grads(params, x, fidx, spec=_spec(layer, 1, 1.0,
                                                             preprocess),
                                 model=model, channel_only=channel_only)
    return x + step_size * book_normalise(g.astype(jnp.float32))


@functools.partial(jax.jit, static_argnames=("model", "layer", "preprocess",
                                             "channel_only", "mesh"))
def _step_jit(params, x, fidx, step_size, *, model, layer, preprocess,
              channel_only=False, mesh=None):
    """One book ascent step for a batch ``(f, h, w, c)``, split over ``mesh``."""
    fn = functools.partial(_step, model=model, layer=layer, preprocess=preprocess,
                           channel_only=channel_only)
    return ex.per_device(fn, mesh, n_rows=2, n_repl_after=1)(params, x, fidx,
                                                            step_size)


#: One book ascent step, jitted (``book_step_jit(params, x, fidx, step_size, *,
#: model, layer, preprocess, channel_only=False, mesh=None)``): the program
#: the engine runs per step, for memory analysis and benchmarks.
book_step_jit = _step_jit


@functools.partial(jax.jit, static_argnames=("model", "layer", "preprocess",
                                             "steps", "channel_only", "mesh"))
def _ascend_fori(params, x0, fidx, step_size, *, model, layer, preprocess, steps,
                 channel_only=False, mesh=None):
    """All ``steps`` book ascent steps in one program (``lax.fori_loop``)."""
    def ascend(params, x0, fidx, step_size):
        def body(_, x):
            return _step(params, x, fidx, step_size, model=model, layer=layer,
                         preprocess=preprocess, channel_only=channel_only)

        return jax.lax.fori_loop(0, steps, body, x0)

    return ex.per_device(ascend, mesh, n_rows=2, n_repl_after=1)(params, x0, fidx,
                                                                step_size)


@functools.partial(jax.jit, static_argnames=("model", "layer", "preprocess"))
def _activation_jit(params, images, fidx, *, model, layer, preprocess):
    def one(x, i):
        inp = x[None]
        if preprocess:
            inp = model.preprocess(inp)
        act = model.forward(params, inp, stop=layer)[0]
        a = jax.lax.dynamic_index_in_dim(act, i, axis=-1, keepdims=False)
        return a.astype(jnp.float32).mean()

    return jax.vmap(one)(images, fidx)


# ------------------------------------------------------------------ public API
def filter_patterns(
    params: Params,
    layer: str,
    filter_indices,
    *,
    key: PRNGKey | None = None,
    steps: int = 40,
    step_size: float = 1.0,
    size: int = 150,
    init=None,
    preprocess: bool = False,
    model: ConvNet | None = None,
    batch_size: int | None = None,
    dtype=jnp.float32,
    loop: str = "auto",
    progress: Callable[[int, int], None] | bool | None = None,
    pre_activation: bool = True,
    conv_impl: str = "auto",
    devices: Sequence[jax.Device] | None = None,
    channel_only: bool | None = None,
    stop_dead: bool | None = None,
    image_dtype="float32",
) -> jax.Array:
    """Input patterns that maximise filters of ``layer`` (the book's method).

    For each filter ``k``: start from ``uniform(0, 1) * 20 + 128`` (drawn from
    ``jax.random.fold_in(key, k)``), then ``steps`` times
    ``x += step_size * g / (sqrt(mean(g**2)) + 1e-5)`` where ``g`` is the
    gradient of ``mean_{h,w} response[layer][..., k]`` with respect to ``x``,
    per image. Defaults are DLwP listings 5.32-5.38 (40 steps of size 1,
    150 px, the network input optimised) except the objective: the default
    reads the response *before* the layer's ReLU (``pre_activation=True``);
    the book's setting is ``pre_activation=False`` (after the ReLU, as Keras
    reports the layer), which leaves filters silent on the grey start as
    noise (with the HED weights ~11 of the first 64 of block3_conv1 at
    150 px). For lucid-style images use :func:`~jaxconvviz.render`.

    Every filter runs in one compiled program (vmapped over filters), compiled
    once per (layer, size, steps, chunk shape, dtype): other filters of the
    same count reuse it. A filter's result does not depend on which other
    filters are requested, up to float rounding of batched convolutions.

    Args:
      params: ``{layer_name: {"kernel", "bias"}}`` weights.
      layer: a spatial layer of the model (``model.spatial_layers``), e.g.
        ``"block3_conv1"``.
      filter_indices: 1-D integers, channels of ``layer`` (``range(64)``,
        ``[0, 5]``, an int array).
      key: PRNG key drawing the start images; required unless ``init`` is given.
      steps: number of ascent steps, >= 1.
      step_size: step length along the RMS-normalised gradient (book: 1.0).
      size: side of the square images in pixels, at least
        ``model.min_input_size(layer)``.
      init: optional start images, float ``(f, size, size, c)`` with
        ``f = len(filter_indices)``, in the domain being optimised (see
        ``preprocess``); replaces the key-drawn starts.
      preprocess: False (the book): ``x`` is fed to the network as is, i.e.
        optimised in the model's input domain (VGG16: caffe BGR around 128, as
        the book's Keras model has no preprocessing layer). True: ``x`` is an
        RGB image in [0, 255] passed through ``model.preprocess`` inside the
        objective, so gradients flow through the caffe conversion.
      model: the network; None infers the VGG16 preset from ``params``.
      batch_size: filters per compiled chunk; the last chunk is padded to the
        same shape and the padding dropped. None: all filters on GPU/TPU,
        1 to :data:`CPU_BATCH_SIZE` by layer on CPU
        (:func:`default_batch_size`).
      dtype: network compute dtype: ``jnp.float32`` or ``jnp.bfloat16``
        (``float16`` also accepted). Images, gradients and their
        normalisation stay float32.
      loop: ``"fori"`` (steps inside the compiled program), ``"python"`` (a
        Python loop over one jitted batched step; the same values) or
        ``"auto"`` (fori, the faster on every backend measured).
      progress: None, True (a bar on a TTY, a plain line per chunk otherwise;
        :class:`~jaxconvviz.featureviz.execution.Progress`), or a callback
        ``progress(done, total)`` called after each chunk completes.
      pre_activation: True (default): maximise the mean of the layer's
        response before its ReLU. False (the book): after the ReLU. A filter whose
        response is negative everywhere on the start image has an exactly
        zero post-ReLU gradient and never moves ("dead"); its pre-ReLU
        gradient is not zero, so it still finds a pattern.
      conv_impl: how the convolutions are computed (sets
        ``model.backend.conv``): ``"xla"``, ``"matmul"`` (as matrix products,
        :mod:`jaxconvviz.backend.matmul`) or ``"auto"``: matmul for bfloat16 on
        XLA:CPU, where XLA's dot has bf16 kernels its convolutions lack
        (faster than float32 from the second VGG16 layer on), xla otherwise
        (:func:`~jaxconvviz.backend.resolve`).
      devices: devices of this process to split the filters of each chunk
        over (a 1-D mesh; params replicated, no communication); None: all of
        ``jax.local_devices()``, i.e. one device unless there are several
        GPUs/TPUs or the host was split with :func:`~jaxconvviz.use_cpu_cores`
        (faster per layer than one device on a multi-core CPU; layers
        lighter than :data:`CPU_SHARD_MIN_MACS` stay on the first device). With
        ``d`` devices a chunk holds ``d`` times the per-device
        ``batch_size`` (``batch_size`` given: split over the devices); fewer
        filters than devices use that many devices. Results equal one
        device's up to float rounding of differently batched convolutions.
      channel_only: compute only each filter's own channel of ``layer``
        (its kernel column) instead of the whole layer and then picking the
        channel: the same objective and gradient up to float summation
        order, with the target layer costing ``1 / c_out`` (VGG16 at 64 px:
        17x fewer multiply-adds at block1_conv2, 1.2x at block3_conv1).
        None: on XLA:CPU for conv layers, where it is faster per step; the
        whole layer on GPU/TPU, where it has not been measured yet
        (:func:`resolve_channel_only`). True needs a conv ``layer``.
      stop_dead: stop the filters whose gradient is exactly zero after their
        first step (their image never changes: a book step has no
        randomness) and run the other steps only for the rest; the result is
        the same (up to float summation order), the dead filters are still
        reported (:class:`~jaxconvviz.featureviz.execution.DeadFilterWarning`).
        None (default): on with ``pre_activation=False``, off otherwise.
        Costs one host sync per call; ignored in multi-process runs.
      image_dtype: ``"float32"`` (default) or ``"bfloat16"``: how the images
        are stored between steps (each update is computed in float32 and
        rounded once; half the image bytes, for memory-bound early layers on
        accelerators). The start images are rounded too.

    Returns:
      float32 ``(f, size, size, c)``: the optimised tensors, raw (not
      deprocessed), in the optimised domain, on the first of ``devices``.
      Display them with :func:`~jaxconvviz.atlas_grid` or
      :func:`~jaxconvviz.deprocess_image`.

    Raises:
      ValueError: unknown layer (lists the valid ones), filter index out of
        range, size too small for the layer, ``steps`` < 1, bad ``init``
        (shape or non-finite values), missing or malformed ``key``, bad
        ``batch_size``/``dtype``/``loop``/``step_size``/``conv_impl``/``devices``/
        ``channel_only``. All before any compute.
    """
    model = resolve_model(params, model=model)
    layer = ex.check_layer(model, layer)
    fidx = ex.check_filters(model, layer, filter_indices)
    size = ex.check_size(model, layer, size)
    steps = ex.check_positive_int(steps, "steps")
    step_size = ex.check_step_size(step_size)
    channels = int(model.input_shape[2])
    x_all = None
    if init is not None:
        x_all = ex.check_init(init, int(fidx.shape[0]), size, channels)
        key = None
    else:
        ex.check_key(key)
    spec = _spec(layer, steps, step_size,
                 ex.check_bool(preprocess, "preprocess"),
                 ex.check_bool(pre_activation, "pre_activation"),
                 check_image_dtype(image_dtype))
    outs, n = run_request(params, spec, model, fidx, key=key, size=size,
                          batch_size=batch_size, dtype=dtype, loop=loop,
                          devices=devices, conv_impl=conv_impl,
                          channel_only=channel_only, memory_budget=None,
                          progress=progress, output="raw",
                          desc=f"filter_patterns {layer}", init=x_all,
                          stop_dead=ex.resolve_stop_dead(
                              stop_dead, pre_activation=spec.pre_activation))
    out = concat_chunks(outs, n, ())
    warn_unmoved(layer, fidx, out, key=key, style=spec.style, size=size,
                 channels=channels, hint=dead_hint(spec.pre_activation),
                 start=x_all)
    return out


def filter_activation(
    params: Params,
    images,
    layer: str,
    filter_indices,
    *,
    preprocess: bool = False,
    model: ConvNet | None = None,
) -> jax.Array:
    """Mean activation of filter ``filter_indices[i]`` on its own image ``i``.

    The objective :func:`filter_patterns` maximises, evaluated in float32.

    Args:
      params: model weights.
      images: float ``(f, h, w, c)`` in the model's input domain
        (``preprocess=False``) or RGB [0, 255] (``preprocess=True``).
      layer: a spatial layer of the model.
      filter_indices: ``f`` channel indices of ``layer``.
      preprocess: pass ``images`` through ``model.preprocess`` first.
      model: the network; None infers the VGG16 preset from ``params``.

    Returns:
      float32 ``(f,)``: ``mean_{h,w} act[layer][i, :, :, filter_indices[i]]``.
    """
    from jaxconvviz.models.predict import check_images

    model = resolve_model(params, model=model)
    layer = ex.check_layer(model, layer)
    fidx = ex.check_filters(model, layer, filter_indices)
    x = check_images(images, name="images", channels=int(model.input_shape[2]))
    if x.shape[0] != fidx.shape[0]:
        raise InputError(
            f"images and filter_indices must have the same length; got "
            f"{x.shape[0]} images and {fidx.shape[0]} filters."
        )
    ex.check_size(model, layer, min(x.shape[1], x.shape[2]))
    model = bind(model, library_gradients=False)
    return _activation_jit(params, x, jnp.asarray(fidx), model=model, layer=layer,
                           preprocess=bool(preprocess))


__all__ = ["filter_patterns", "filter_activation", "default_batch_size", "LOOPS",
           "CPU_BATCH_SIZE", "conv_macs", "auto_devices", "resolve_channel_only",
           "chunk_size", "filter_mesh", "filter_shardings", "book_step_jit"]
