"""The feature-visualization engine: one spec (what), one runner (how).

**What** is optimised is a :class:`RenderSpec`, a frozen, hashable
dataclass: the target ``layer``, the ``style`` (:class:`Book` or
:class:`Lucid`: parameterization, transforms, optimizer and their
hyperparameters), the number of ``steps``, the ``objective`` (None: the
mean of each filter's channel) and ``pre_activation``. **How** it runs
(chunks, devices, sharding, dtype, loop form, progress) is
:mod:`jaxconvviz.featureviz.execution`, shared by :func:`render`,
:func:`~jaxconvviz.filter_patterns` and :func:`~jaxconvviz.filter_atlas`
through :func:`run_spec`.

Styles:

* :class:`Book` -- DLwP listing 5.38: pixels of the network input (or RGB
  through the model's preprocessing), start ``uniform * 20 + 128``, steps
  ``x += step_size * g / (rms(g) + 1e-5)``, no transforms.
* :class:`Lucid` -- lucid/lucent's ``render_vis``: a decorrelated Fourier
  image (:class:`~jaxconvviz.featureviz.param.FourierParam`) through a
  sigmoid to RGB [0, 1], times 255, through ``model.preprocess``; the
  standard random transforms at every step
  (:data:`~jaxconvviz.featureviz.transforms.STANDARD_TRANSFORMS`), drawn
  independently per image; Adam (optax), learning rate 0.05.

Keys: image ``i`` for filter ``k`` (its ``j``-th occurrence in the request)
uses ``fold_in(fold_in(key, k), j)`` (lucid; the book uses
``fold_in(key, k)`` for its start image), and its step ``t`` draws from
``fold_in(that, t)``: a filter's image does not depend on the other filters
of the batch, so batched equals alone up to float summation order.

Imports jax, numpy and optax only.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxconvviz._types import Params, PRNGKey
from jaxconvviz.errors import InputError
from jaxconvviz.featureviz import execution as ex
from jaxconvviz.featureviz.objectives import Context, Objective
from jaxconvviz.featureviz.param import FourierParam
from jaxconvviz.featureviz.transforms import (
    STANDARD_TRANSFORMS,
    apply_transforms,
    check_transforms,
    margin,
)
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.models.preprocess import caffe_to_rgb
from jaxconvviz.models.vgg import resolve_model

#: Styles accepted by :func:`render` and ``filter_atlas(style=...)``.
STYLES = ("lucid", "book")

#: Book constants (DLwP listings 5.34 and 5.36): gradient RMS epsilon, start
#: image ``uniform(0, 1) * 20 + 128``, display contrast.
GRAD_EPS = 1e-5
START_SCALE = 20.0
START_OFFSET = 128.0
BOOK_CONTRAST = 0.1


@dataclass(frozen=True)
class Book:
    """The book's ascent (DLwP 5.38).

    Attributes:
      step_size: step along the RMS-normalised gradient (book: 1.0).
      preprocess: False (the book): optimise the network input (VGG16:
        caffe BGR). True: optimise RGB [0, 255] fed through
        ``model.preprocess``.
      image_dtype: how the images are stored between steps: ``"float32"``
        (the book) or ``"bfloat16"`` (half the bytes of a memory-bound front
        layer's state; each step's update is computed in float32 from the
        stored image and rounded once, issue 19 part 3).
    """

    step_size: float = 1.0
    preprocess: bool = False
    image_dtype: str = "float32"

    name = "book"


@dataclass(frozen=True)
class Lucid:
    """Lucid's rendering (``render_vis`` with its defaults).

    Attributes:
      learning_rate: Adam's learning rate (lucid: 0.05).
      param: the image parameterization (lucid: decorrelated Fourier).
      transforms: random transforms at every step, per image.
    """

    learning_rate: float = 0.05
    param: FourierParam = field(default_factory=FourierParam)
    transforms: tuple = STANDARD_TRANSFORMS

    name = "lucid"


@dataclass(frozen=True)
class RenderSpec:
    """What to optimise (hashable: a static argument of the compiled step).

    Attributes:
      layer: the layer whose filters index the images.
      style: :class:`Book` or :class:`Lucid`.
      steps: optimisation steps.
      objective: an :class:`~jaxconvviz.featureviz.objectives.Objective`, or
        None: the mean of each image's filter channel of ``layer``.
      pre_activation: read the objective's last layer before its own
        activation (ReLU), so filters silent on the start image still move.
      thresholds: steps after which a snapshot is kept (empty: the end only).
    """

    layer: str
    style: Book | Lucid
    steps: int
    objective: Objective | None = None
    pre_activation: bool = False
    thresholds: tuple = ()

    @property
    def stop(self) -> str | None:
        """The last layer the objective reads (None: the logits)."""
        return self.layer if self.objective is None else None

    def model_for(self, model: ConvNet) -> ConvNet:
        """``model`` as the objective reads it (``pre_activation`` applied)."""
        last = self.last_layer(model)
        if self.pre_activation and last is not None:
            return model.without_activation(last)
        return model

    def last_layer(self, model: ConvNet) -> str | None:
        if self.objective is None:
            return self.layer
        if self.objective.needs_logits:
            return None
        layers = self.objective.layers
        if not layers:
            return None
        return max(layers, key=model.layer_index)

    def margin(self) -> int:
        return margin(self.style.transforms) if isinstance(self.style, Lucid) else 0


# --------------------------------------------------------------------- compute
def objective_values(params, inp, fidx, images, *, spec: RenderSpec, model: ConvNet,
                     channel_only: bool = False):
    """float32 ``(n,)``: the objective of each image of the batch ``inp``.

    ``objective=None``: the mean over positions of channel ``fidx[i]`` of
    ``spec.layer`` for image ``i``; ``channel_only`` computes only that
    channel (:meth:`~jaxconvviz.ConvNet.channel_forward`), otherwise the
    whole layer runs and the channel is picked with a one-hot mask (an
    elementwise backward pass, faster than a gather on XLA:CPU).
    """
    if spec.objective is None:
        if channel_only:
            a = model.channel_forward(params, inp, spec.layer, fidx)
        else:
            act = model.forward(params, inp, stop=spec.layer)
            k = jnp.arange(act.shape[-1], dtype=jnp.int32)[None, None, None, :]
            a = jnp.where(k == fidx[:, None, None, None], act,
                          jnp.zeros((), act.dtype)).sum(axis=-1)
        return a.astype(jnp.float32).mean(axis=(1, 2))
    obj = spec.objective
    layers = tuple(sorted(obj.layers, key=model.layer_index))
    logits = None
    acts = {}
    if obj.needs_logits:
        out, acts = model.forward_with(params, inp, capture=layers, logits=True)
        logits = out.astype(jnp.float32)
    elif layers:
        _, acts = model.forward_with(params, inp, capture=layers, stop=layers[-1])
    acts = {k: v.astype(jnp.float32) for k, v in acts.items()}
    ctx = Context(acts=acts, logits=logits, images=images, filters=fidx)
    return jnp.asarray(obj(ctx), jnp.float32)


def book_normalise(g):
    """The book's trick: divide by ``sqrt(mean(g**2)) + 1e-5``, per image."""
    rms = jnp.sqrt(jnp.mean(jnp.square(g), axis=(1, 2, 3), keepdims=True))
    return g / (rms + GRAD_EPS)


def book_values_and_grads(params, x, fidx, *, spec, model, channel_only=False):
    """Per-image objective and its input gradient, ``(f,)`` and ``(f, h, w, c)``.

    One batched forward; the gradient of the *sum* of the per-image
    objectives is each image's own gradient, since no layer mixes images
    (unless the objective couples them, e.g. diversity).
    """
    def total(x):
        inp = model.preprocess(x) if spec.style.preprocess else x
        v = objective_values(params, inp, fidx, x, spec=spec, model=model,
                             channel_only=channel_only)
        return v.sum(), v

    g, v = jax.grad(total, has_aux=True)(x)
    return v, g


#: Image storage dtypes of the book style (:attr:`Book.image_dtype`).
IMAGE_DTYPES = ("float32", "bfloat16")


def check_image_dtype(image_dtype) -> str:
    try:
        name = jnp.dtype(image_dtype).name
    except TypeError:
        name = None
    if name not in IMAGE_DTYPES:
        raise InputError(f"image_dtype must be one of {', '.join(IMAGE_DTYPES)}; "
                         f"got {image_dtype!r}.")
    return name


def _book_step(params, x, ids, step_size, t, *, spec, model, channel_only):
    del t
    x32 = x.astype(jnp.float32)
    _, g = book_values_and_grads(params, x32, ids, spec=spec, model=model,
                                 channel_only=channel_only)
    return (x32 + step_size * book_normalise(g.astype(jnp.float32))).astype(x.dtype)


def in_storage(x, style) -> jax.Array:
    """``x`` as the book style stores it (rounded to ``style.image_dtype``),
    back in float32: the start images a run with that storage begins from."""
    dt = getattr(style, "image_dtype", "float32")
    return jnp.asarray(x, jnp.float32).astype(dt).astype(jnp.float32)


def book_start_images(key, fidx, *, size, channels):
    """The book's grey start ``uniform(0, 1) * 20 + 128``, one stream per filter
    (``fold_in(key, k)``)."""
    def one(i):
        u = jax.random.uniform(jax.random.fold_in(key, i), (size, size, channels),
                               jnp.float32)
        return u * START_SCALE + START_OFFSET

    return jax.vmap(one)(fidx)


#: :func:`book_start_images`, jitted as the engine runs it (the same floats:
#: jit may fuse the scale and offset into one FMA).
book_start_images_jit = jax.jit(book_start_images,
                                static_argnames=("size", "channels"))


#: What the dead-filter warning suggests (post-ReLU objective).
DEAD_HINT = ("they are silent on the start image under the post-ReLU objective; "
             "pre_activation=True (the default) revives them.")
#: ... and with the pre-activation objective, where that hint would not help.
DEAD_HINT_PRE = ("even their pre-activation response has no gradient from the "
                 "start image: the layers below give them nothing to climb (units "
                 "upstream all zero or saturated, as in untrained networks); "
                 "try other start images (init=), another size or other "
                 "weights.")


def dead_hint(pre_activation: bool) -> str:
    """The dead-filter warning's advice for the objective that was used."""
    return DEAD_HINT_PRE if pre_activation else DEAD_HINT


def warn_unmoved(layer: str, fidx, out, *, key, style, size: int, channels: int,
                 hint: str, start=None) -> list[int]:
    """Book style: warn (:class:`~jaxconvviz.DeadFilterWarning`) naming the
    filters whose images ``out`` (``(n, size, size, channels)``) are still
    their start images (``start``, or the book's start from ``key``), i.e.
    whose gradient was exactly zero at every step. Returns their indices."""
    if start is None:
        start = book_start_images_jit(key, jnp.asarray(fidx), size=size,
                                      channels=channels)
    moved = np.any(np.asarray(out) != np.asarray(in_storage(start, style)),
                   axis=(1, 2, 3))
    return ex.warn_dead(layer, fidx, moved, hint=hint, stacklevel=4)


def _row_keys(key, ids, n_channels: int):
    """Key of each image: ``fold_in(fold_in(key, k), j)`` for ``ids = k + C j``."""
    def one(i):
        return jax.random.fold_in(jax.random.fold_in(key, i % n_channels),
                                  i // n_channels)

    return jax.vmap(one)(ids)


def _lucid_init(key, ids, *, spec, size, channels, n_channels):
    style = spec.style
    keys = _row_keys(key, ids, n_channels)
    z = jax.vmap(lambda k: style.param.init(jax.random.fold_in(k, 0), size,
                                            channels))(keys)
    opt = jax.vmap(optax.adam(style.learning_rate).init)(z)
    return {"z": z, "opt": opt, "keys": jax.random.key_data(keys)}


def lucid_images01(z, *, spec, size):
    """``(n, size, size, c)`` in [0, 1] from the parameters ``z``."""
    return jax.vmap(lambda zi: spec.style.param.to_image(zi, size))(z)


def lucid_network_input(images01, keys, *, spec, model):
    """Each image through its own transform draw, times 255, then
    ``model.preprocess``: the network input ``(n, s + margin, ...)``."""
    tf = spec.style.transforms
    timg = jax.vmap(lambda k, im: apply_transforms(tf, k, im))(keys, images01)
    return model.preprocess(timg * 255.0)


def _lucid_step(params, state, ids, lr, t, *, spec, model, channel_only, size,
                n_channels, key_impl):
    fidx = ids % n_channels
    base = jax.random.wrap_key_data(state["keys"], impl=key_impl)
    keys = jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, 1), t))(base)

    def loss(z):
        img = lucid_images01(z, spec=spec, size=size)
        inp = lucid_network_input(img, keys, spec=spec, model=model)
        v = objective_values(params, inp, fidx, img, spec=spec, model=model,
                             channel_only=channel_only)
        return -v.sum(), v

    g, _ = jax.grad(loss, has_aux=True)(state["z"])
    upd, opt = jax.vmap(optax.adam(lr).update)(g, state["opt"])
    return {"z": optax.apply_updates(state["z"], upd), "opt": opt,
            "keys": state["keys"]}


def book_display(x, model: ConvNet, preprocess: bool):
    """The book's patterns as display RGB in [0, 255] (float32): to RGB
    (``caffe_to_rgb`` for a caffe model's input domain), then per image
    ``clip((x - mean) / (std + 1e-5) * 0.1 + 0.5, 0, 1) * 255``."""
    x = jnp.asarray(x, jnp.float32)
    if not preprocess:
        if model.preprocessing == "caffe":
            x = caffe_to_rgb(x)
        elif model.preprocessing == "scale01":
            x = x * 255.0
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    s = x.std(axis=(1, 2, 3), keepdims=True)
    return jnp.clip((x - m) / (s + GRAD_EPS) * BOOK_CONTRAST + 0.5, 0, 1) * 255.0


# -------------------------------------------------------------------- programs
def _jit_init(init, mesh):
    """``init(key_data, ids)`` jitted, its rows sharded over ``mesh`` when
    there is one (the key data replicated)."""
    if mesh is None:
        return jax.jit(init)
    rows, repl = ex.filter_shardings(mesh)
    return jax.jit(init, in_shardings=(repl, rows), out_shardings=rows)


@functools.lru_cache(maxsize=64)
def _book_init_program(size: int, channels: int, image_dtype: str,
                       key_impl: str | None, mesh):
    """The book style's ``init(key_data, ids)``, compiled once per size,
    channels, storage dtype, key type and device set, whatever the layer:
    every layer of a report or an atlas starts from the same program (its
    compilation was 0.46 s per layer, 6 s of a 53 s 13-layer report)."""
    def init(kd, ids):
        return book_start_images(ex.key_of(kd, key_impl), ids, size=size,
                                 channels=channels).astype(image_dtype)

    return _jit_init(init, mesh)


class Program:
    """The compiled pieces of one spec on one model, size and device set:
    ``init(key, ids)``, ``step(params, state, ids, hyper, t)``,
    ``ascend(params, state, ids, hyper, t0, n)`` (``n`` steps in a
    ``fori_loop``), ``raw(state)`` and ``rgb(state)`` (RGB [0, 255])."""

    def __init__(self, spec: RenderSpec, model: ConvNet, size: int, channels: int,
                 channel_only: bool, mesh, key_impl: str | None):
        self.spec, self.model, self.size, self.mesh = spec, model, size, mesh
        n_channels = model.channels(spec.layer)
        lucid = isinstance(spec.style, Lucid)
        impl = key_impl or "threefry2x32"
        if lucid:
            step = functools.partial(
                _lucid_step, spec=spec, model=model, channel_only=channel_only,
                size=size, n_channels=n_channels, key_impl=impl)
        else:
            step = functools.partial(_book_step, spec=spec, model=model,
                                     channel_only=channel_only)

        def lucid_init(kd, ids):
            # typed keys: their data is kept per row in the state
            key = jax.random.wrap_key_data(kd, impl=impl)
            return _lucid_init(key, ids, spec=spec, size=size, channels=channels,
                               n_channels=n_channels)

        def ascend(params, state, ids, hyper, t0, *, n):
            def body(i, s):
                return step(params, s, ids, hyper, t0 + i)

            return jax.lax.fori_loop(0, n, body, state)

        self.init = (_jit_init(lucid_init, mesh) if lucid else _book_init_program(
            size, channels, jnp.dtype(spec.style.image_dtype).name, key_impl, mesh))
        if mesh is None:
            self.step = jax.jit(step)
            self.ascend = jax.jit(ascend, static_argnames=("n",))
        else:
            self.step = jax.jit(ex.per_device(step, mesh, n_rows=2, n_repl_after=2))
            self.ascend = jax.jit(
                lambda p, s, i, h, t0, n: ex.per_device(
                    functools.partial(ascend, n=n), mesh, n_rows=2,
                    n_repl_after=2)(p, s, i, h, t0), static_argnames=("n",))
        if lucid:
            self.raw = jax.jit(lambda s: lucid_images01(s["z"], spec=spec,
                                                        size=size) * 255.0)
            self.rgb = self.raw
        else:
            # the state is the image (float32 storage: returned as is)
            self.raw = None if spec.style.image_dtype == "float32" else jax.jit(
                lambda s: s.astype(jnp.float32))
            pre = spec.style.preprocess
            self.rgb = jax.jit(lambda s: book_display(s.astype(jnp.float32), model,
                                                      pre))

    def hyper(self) -> float:
        s = self.spec.style
        return s.learning_rate if isinstance(s, Lucid) else s.step_size


@functools.lru_cache(maxsize=64)
def program(spec: RenderSpec, model: ConvNet, size: int, channels: int,
            channel_only: bool, mesh, key_impl: str | None) -> Program:
    """The cached :class:`Program` (compiled once per argument set)."""
    return Program(spec, model, size, channels, channel_only, mesh, key_impl)


# ---------------------------------------------------------------------- runner
def row_ids(fidx: np.ndarray, n_channels: int, *, occurrences: bool) -> np.ndarray:
    """``k + n_channels * j`` for the ``j``-th occurrence of filter ``k``
    (``occurrences=False``: ``k``)."""
    if not occurrences:
        return fidx.astype(np.int32)
    seen: dict[int, int] = {}
    out = np.empty_like(fidx, dtype=np.int32)
    for i, k in enumerate(fidx.tolist()):
        j = seen.get(k, 0)
        seen[k] = j + 1
        out[i] = k + n_channels * j
    return out


def run_spec(params: Params, spec: RenderSpec, model: ConvNet, plan: ex.LayerPlan,
             fidx: np.ndarray, *, key, devs: tuple, size: int, output: str = "raw",
             loop: str = "python", init=None, progress=None, counter=None,
             finish=None, stop_dead: bool = False) -> list:
    """Run ``spec`` for the filters ``fidx`` of ``plan.layer``, chunk by chunk.

    ``model`` is the compute model (dtype and conv_impl applied; the spec's
    ``pre_activation`` is applied here). ``devs``: the devices; the filter
    axis of each chunk is split over the first ``plan.n_devices`` of them
    (one device: plain jit; several: ``shard_map``; several processes: each
    computes its shards). ``output``: ``"raw"`` (the optimised tensors; the
    book's in its optimised domain) or ``"rgb"`` (display RGB [0, 255]).
    ``init``: book start images ``(f, s, s, c)`` instead of the key's.
    ``finish``: applied to each chunk's result once the next chunk is
    dispatched (default: keep it on device). Returns one entry per chunk:
    an array, or with ``spec.thresholds`` a tuple of snapshots.
    ``stop_dead``: see :func:`run_spec_stop_dead` (applies where
    :func:`stop_dead_applies`; ignored elsewhere).
    """
    if stop_dead and stop_dead_applies(spec, output, devs[:plan.n_devices]):
        return run_spec_stop_dead(params, spec, model, plan, fidx, key=key,
                                  devs=devs, size=size, loop=loop, init=init,
                                  progress=progress, counter=counter,
                                  finish=finish)
    channels = int(model.input_shape[2])
    m = spec.model_for(model)
    devs = tuple(devs[:plan.n_devices])
    one = len(devs) == 1 and ex.all_addressable(devs)
    mesh = None if one else ex.filter_mesh(devs)
    kd, key_impl = (None, None) if key is None else ex.key_parts(key)
    prog = program(spec, m, size, channels, plan.channel_only, mesh, key_impl)
    lucid = isinstance(spec.style, Lucid)
    ids_all = row_ids(fidx, m.channels(spec.layer), occurrences=lucid)
    hyper = np.float32(prog.hyper())
    if one:
        ctx = jax.default_device(devs[0])
        params_d = jax.device_put(params, devs[0])
        hyper_d = jax.device_put(hyper, devs[0])
        kd_d = None if kd is None else jax.device_put(kd, devs[0])
        rows = repl = None
    else:
        rows, repl = ex.filter_shardings(mesh)
        params_d = jax.tree.map(lambda a: ex.to_global(np.asarray(a), repl)
                                if not ex.all_addressable(devs)
                                else jax.device_put(a, repl), params)
        hyper_d = ex.to_global(hyper, repl)
        kd_d = None if kd is None else ex.to_global(kd, repl)
    stops = sorted(set(spec.thresholds) | {spec.steps})
    out_fn = prog.rgb if output == "rgb" else prog.raw
    pos = [0]

    def put_t(t):
        a = np.int32(t)
        return jax.device_put(a, devs[0]) if one else ex.to_global(a, repl)

    def chunk(ids):
        c0 = pos[0]
        pos[0] += ids.shape[0]
        ids_d = jax.device_put(jnp.asarray(ids), devs[0]) if one else ex.to_global(
            ids, rows)
        if init is not None:
            x = init[c0:c0 + ids.shape[0]]
            if x.shape[0] < ids.shape[0]:
                x = jnp.concatenate([x, jnp.repeat(x[-1:], ids.shape[0] - x.shape[0],
                                                   axis=0)])
            if not lucid:
                x = jnp.asarray(x, jnp.float32).astype(spec.style.image_dtype)
            state = jax.device_put(x, devs[0]) if one else jax.device_put(x, rows)
        else:
            state = prog.init(kd_d, ids_d)
        snaps, t = [], 0
        for stop in stops:
            if loop == "fori":
                state = prog.ascend(params_d, state, ids_d, hyper_d, put_t(t),
                                    n=stop - t)
            else:
                for s in range(t, stop):
                    state = prog.step(params_d, state, ids_d, hyper_d, put_t(s))
            t = stop
            if spec.thresholds and stop in spec.thresholds:
                snaps.append(state if out_fn is None else out_fn(state))
        if spec.thresholds:
            return tuple(snaps)
        return state if out_fn is None else out_fn(state)

    def run(ids):
        if one:
            with ctx:
                return chunk(ids)
        return chunk(ids)

    fin = finish if finish is not None else (lambda x: x)
    return ex.run_layer(run, fin, plan, ids_all, progress=progress, counter=counter)


def stop_dead_applies(spec: RenderSpec, output: str, devs) -> bool:
    """Whether :func:`run_spec_stop_dead` can run ``spec``: the book style
    (deterministic steps on the image itself), raw output, no snapshots, at
    least two steps, and every device of this process (a multi-process run
    cannot gather rows across processes)."""
    return (isinstance(spec.style, Book) and output == "raw" and not spec.thresholds
            and spec.steps > 1 and ex.all_addressable(tuple(devs)))


def run_spec_stop_dead(params: Params, spec: RenderSpec, model: ConvNet,
                       plan: ex.LayerPlan, fidx: np.ndarray, *, key, devs: tuple,
                       size: int, loop: str, init=None, progress=None,
                       counter=None, finish=None) -> list:
    """:func:`run_spec` for the book style, with dead filters stopped after
    their first step (issue 19 part 4).

    A book step is ``x + step_size * g / (rms(g) + 1e-5)`` with no
    randomness, so a filter whose gradient is exactly zero on its start image
    (the post-ReLU objective of a unit silent everywhere on it) never moves:
    every later step sees the same image and the same zero gradient. One step
    of every filter finds them exactly (image unchanged); the remaining
    ``steps - 1`` steps run only for the others, re-packed into chunks of
    ``plan.chunk`` rows (the compiled shapes stay the same). The result equals
    :func:`run_spec`'s up to the float summation order of differently batched
    filters; dead rows are their start images, bit for bit. Costs one host
    sync of ``(f,)`` booleans. Returns ``plan.n_chunks`` chunks, like
    :func:`run_spec`.
    """
    n = int(fidx.shape[0])
    first = run_spec(params, replace(spec, steps=1), model, plan, fidx, key=key,
                     devs=devs, size=size, output="raw", loop=loop, init=init)
    x1 = concat_chunks(first, n, ())
    if init is not None:
        x0 = jnp.asarray(init, jnp.float32)
    else:
        x0 = book_start_images_jit(key, jnp.asarray(fidx), size=size,
                                   channels=int(model.input_shape[2]))
    x0 = in_storage(x0, spec.style)
    moved = np.asarray(jnp.any(x1 != jax.device_put(x0, x1.sharding),
                               axis=(1, 2, 3)))
    alive = np.flatnonzero(moved)
    counter = ex.Counter(plan.n_filters) if counter is None else counter
    counter.done += n - int(alive.size)
    out = x1
    if alive.size:
        plan2 = replace(plan, n_filters=int(alive.size),
                        n_chunks=-(-int(alive.size) // plan.chunk))
        rest = run_spec(params, replace(spec, steps=spec.steps - 1), model, plan2,
                        fidx[alive], key=None, devs=devs, size=size, output="raw",
                        loop=loop, init=x1[alive], progress=progress,
                        counter=counter)
        out = x1.at[alive].set(concat_chunks(rest, int(alive.size), ()))
    fin = finish if finish is not None else (lambda x: x)
    pad = plan.chunk * plan.n_chunks - n
    if pad:
        out = jnp.concatenate([out, jnp.repeat(out[-1:], pad, axis=0)])
    return [fin(out[c * plan.chunk:(c + 1) * plan.chunk])
            for c in range(plan.n_chunks)]


def concat_chunks(outs: list, n: int, thresholds: tuple):
    """Chunk results of :func:`run_spec` as one array ``(n, ...)`` (or
    ``(len(thresholds), n, ...)``), padding dropped."""
    if thresholds:
        return jnp.stack([concat_chunks([o[i] for o in outs], n, ())
                          for i in range(len(thresholds))])
    if isinstance(outs[0], np.ndarray):
        return np.concatenate(outs, axis=0)[:n]
    out = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=0)
    return out[:n]


# ------------------------------------------------------------------ public API
def check_style(style) -> str:
    if style not in STYLES:
        raise InputError(f"style must be one of {', '.join(map(repr, STYLES))}; "
                         f"got {style!r}.")
    return style


def check_thresholds(thresholds, steps: int) -> tuple:
    if thresholds is None:
        return ()
    try:
        t = tuple(int(v) for v in thresholds)
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                 for v in thresholds)
    except (TypeError, ValueError):
        t, ok = (), False
    if not ok or not t or any(v < 1 or v > steps for v in t) or list(t) != sorted(
            set(t)):
        raise InputError(
            f"thresholds must be increasing step numbers in 1..steps={steps}; "
            f"got {thresholds!r:.80}.")
    return t


def check_objective(objective, model: ConvNet, layer: str):
    if objective is None:
        return None
    if not isinstance(objective, Objective):
        raise InputError(
            f"objective must be None (the channel mean of each filter) or a "
            f"jaxconvviz objective (jcv.objectives.Channel, Neuron, ...); got "
            f"{objective!r:.80}.")
    for name in objective.layers:
        model.check_layer(name, model.spatial_layers, name="objective layer")
    if objective.needs_logits and not model.has_top:
        raise InputError(
            f"objective {objective!r:.60} reads the class logits; the model has no "
            f"top (load it with include_top=True).")
    return objective


def make_style(style: str, *, learning_rate=None, step_size=None,
               transforms=None, decay_power=None, preprocess=None,
               image_dtype="float32"):
    """The style object of a style name and its keyword options."""
    if style == "book":
        if learning_rate is not None or transforms is not None or (
                decay_power is not None):
            raise InputError("learning_rate, transforms and decay_power apply to "
                             "style='lucid' only; the book style takes step_size.")
        return Book(step_size=ex.check_step_size(1.0 if step_size is None
                                                 else step_size),
                    preprocess=ex.check_bool(bool(preprocess) if preprocess is None
                                             else preprocess, "preprocess"),
                    image_dtype=check_image_dtype(image_dtype))
    if step_size is not None or preprocess is not None or (
            check_image_dtype(image_dtype) != "float32"):
        raise InputError("step_size, preprocess and image_dtype apply to "
                         "style='book' only; the lucid style takes learning_rate.")
    lr = ex.check_step_size(0.05 if learning_rate is None else learning_rate,
                            "learning_rate")
    if lr <= 0:
        raise InputError(f"learning_rate must be > 0; got {learning_rate!r}.")
    dp = ex.check_step_size(1.0 if decay_power is None else decay_power,
                            "decay_power")
    tf = STANDARD_TRANSFORMS if transforms is None else check_transforms(transforms)
    return Lucid(learning_rate=lr, param=FourierParam(decay_power=dp), transforms=tf)


def render(
    params: Params,
    layer: str,
    filter_indices,
    *,
    key: PRNGKey,
    style: str = "lucid",
    size: int = 128,
    steps: int = 512,
    objective: Objective | None = None,
    model: ConvNet | None = None,
    thresholds: Sequence[int] | None = None,
    pre_activation: bool = True,
    learning_rate: float | None = None,
    step_size: float | None = None,
    transforms=None,
    decay_power: float | None = None,
    batch_size: int | None = None,
    dtype=jnp.float32,
    loop: str = "auto",
    devices=None,
    conv_impl: str = "auto",
    channel_only: bool | None = None,
    memory_budget=None,
    progress=None,
) -> jax.Array:
    """Feature visualizations of filters of ``layer``: lucid's style or the book's.

    Every filter of the request is optimised in one compiled program
    (chunked and sharded as :func:`~jaxconvviz.filter_atlas`).

    Args:
      params: ``{layer_name: {"kernel", "bias"}}`` weights.
      layer: a spatial layer (``model.spatial_layers``); required.
      filter_indices: 1-D ints, channels of ``layer``; a repeated index gives
        several images of that filter (with different keys).
      key: PRNG key (required). See the module docs for the per-filter keys.
      style: ``"lucid"`` (decorrelated Fourier image, random transforms per
        image and step, Adam 0.05) or ``"book"`` (pixel ascent, DLwP 5.38).
      size: side of the square images in pixels (lucid: the model sees
        ``size + 24`` after padding).
      steps: optimisation steps (lucid: 512; the book used 40).
      objective: None: the mean of each filter's channel of ``layer``;
        otherwise an objective from :mod:`jaxconvviz.featureviz.objectives`
        (``channel=None`` there means each image's filter).
      model: the network; None infers the VGG16 preset from ``params``.
      thresholds: steps after which to keep a snapshot; the result then has
        a leading axis ``len(thresholds)``.
      pre_activation: read the objective's last layer before its ReLU
        (default True: filters silent on the start image still move).
      learning_rate, transforms, decay_power: lucid options (Adam learning
        rate 0.05, :data:`~jaxconvviz.featureviz.transforms.STANDARD_TRANSFORMS`,
        spectrum decay power 1).
      step_size: book option (1.0).
      batch_size, dtype, loop, devices, conv_impl, channel_only,
        memory_budget, progress: how to run, as
        :func:`~jaxconvviz.filter_atlas` (``progress=True``: a bar on a
        TTY, a plain line per chunk otherwise).

    Returns:
      float32 RGB in [0, 255], ``(n_filters, size, size, 3)`` (``c``
      channels for a grey model), on the first device; the book style is
      mapped to display pixels with the book's contrast (``deprocess_image``
      as float). With ``thresholds``: ``(len(thresholds), n_filters, ...)``.

    Raises:
      ValueError: bad layer (``None`` included), filters, size, steps, key,
        style, objective, thresholds or execution option, or a size whose
        memory estimate exceeds the budget. All before any compute.
    """
    style = check_style(style)
    model = resolve_model(params, model=model)
    if layer is None:
        raise InputError(f"layer is required for render; one of "
                         f"{', '.join(model.spatial_layers)}.")
    layer = ex.check_layer(model, layer)
    fidx = ex.check_filters(model, layer, filter_indices)
    steps = ex.check_positive_int(steps, "steps")
    st = make_style(style, learning_rate=learning_rate, step_size=step_size,
                    transforms=transforms, decay_power=decay_power)
    spec = RenderSpec(layer=layer, style=st, steps=steps,
                      objective=check_objective(objective, model, layer),
                      pre_activation=ex.check_bool(pre_activation, "pre_activation"),
                      thresholds=check_thresholds(thresholds, steps))
    size = ex.check_size(model, layer, size, margin=spec.margin())
    ex.check_key(key)
    outs, n = run_request(params, spec, model, fidx, key=key, size=size,
                          batch_size=batch_size, dtype=dtype, loop=loop,
                          devices=devices, conv_impl=conv_impl,
                          channel_only=channel_only, memory_budget=memory_budget,
                          progress=progress, output="rgb", desc=f"render {layer}")
    return concat_chunks(outs, n, spec.thresholds)


def run_request(params, spec: RenderSpec, model: ConvNet, fidx, *, key, size,
                batch_size, dtype, loop, devices, conv_impl, channel_only,
                memory_budget, progress, output, desc, init=None,
                stop_dead: bool = False):
    """Validate the execution options, plan the chunks (memory checked first)
    and run one layer on this process's devices. Returns ``(chunks, n)``."""
    layer = spec.layer
    channel_only = ex.resolve_channel_only(channel_only, model, layer)
    if spec.objective is not None:
        channel_only = False
    if batch_size is not None:
        batch_size = ex.check_positive_int(batch_size, "batch_size")
    devs = ex.check_local_devices(devices)
    net = size + spec.margin()
    if devices is None:
        devs = ex.auto_devices(devs, model, layer, net, channel_only=channel_only)
    f = int(fidx.shape[0])
    n_dev = min(len(devs), f)
    if spec.objective is not None and spec.objective.couples_images:
        n_dev = 1
    dt = ex.check_dtype(dtype)
    loop = ex.resolve_loop(loop)
    budget = ex.parse_memory_budget(memory_budget)
    if budget is None:
        budget = ex.device_memory_budget(devs[0])
    fixed = int(ex.PARAM_FACTOR * ex.param_bytes(params))
    per = ex.check_fits(model, layer, net, budget_bytes=budget, fixed_bytes=fixed,
                        n_filters=f)
    bs = ex.chunk_size(f, n_dev, batch_size, model, layer, net)
    per_dev_max = max(1, (budget - fixed) // per)
    if bs // n_dev > per_dev_max:
        bs = per_dev_max * n_dev
    n_chunks = -(-f // bs)
    plan = ex.LayerPlan(layer, f, bs, n_chunks, n_dev, per, budget, channel_only)
    prog = ex.as_progress(progress, desc)
    if isinstance(prog, ex.Progress):
        prog.start(f, ex.estimate_seconds(model, [plan], net, spec.steps)
                   if jax.default_backend() == "cpu" else None)
    cmodel = ex.with_compute(model, dt, conv_impl)
    try:
        outs = run_spec(params, spec, cmodel, plan, fidx, key=key, devs=devs,
                        size=size, output=output, loop=loop, init=init,
                        progress=prog, stop_dead=stop_dead)
    finally:
        if isinstance(prog, ex.Progress):
            prog.close()
    if n_dev > 1 or devices is not None:
        outs = [jax.device_put(o, devs[0]) for o in outs]
    return outs, f


__all__ = ["render", "RenderSpec", "Book", "Lucid", "STYLES", "Program", "program",
           "run_spec", "run_request", "concat_chunks", "objective_values",
           "book_values_and_grads", "book_normalise", "book_start_images",
           "warn_unmoved",
           "book_start_images_jit", "IMAGE_DTYPES", "check_image_dtype", "in_storage",
           "stop_dead_applies", "run_spec_stop_dead",
           "book_display", "lucid_images01", "lucid_network_input", "make_style",
           "check_style", "check_thresholds", "check_objective", "row_ids",
           "GRAD_EPS", "START_SCALE", "START_OFFSET", "BOOK_CONTRAST"]
