"""The compiled feature-visualization programs (private).

A :class:`RenderSpec` (hashable) says what is optimised: target layer,
style (:class:`~jaxconvviz.featureviz.styles.Book` or
:class:`~jaxconvviz.featureviz.styles.Lucid`), steps, objective,
pre-activation and snapshots. :func:`program` compiles it once per model,
size, device set and key type; :func:`run_spec` dispatches the chunks of one
layer (the one landing and progress loop is
:func:`jaxconvviz.featureviz._engine.execute`).

Keys: image ``i`` for filter ``k`` (its ``j``-th occurrence in the request)
uses ``fold_in(fold_in(key, k), j)`` (lucid; the book uses ``fold_in(key,
k)`` for its start image), and its step ``t`` draws from ``fold_in(that,
t)``: a filter's image does not depend on the other filters of the batch.

Imports jax, numpy and optax only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxconvviz._types import Params
from jaxconvviz.featureviz import _plan as pl
from jaxconvviz.featureviz.objectives import Context, Objective
from jaxconvviz.featureviz.styles import (
    GRAD_EPS,
    START_OFFSET,
    START_SCALE,
    Book,
    Lucid,
)
from jaxconvviz.featureviz.transforms import apply_transforms
from jaxconvviz.models.convnet import ConvNet


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
        return self.style.margin



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



# -------------------------------------------------------------------- programs
def _jit_init(init, mesh):
    """``init(key_data, ids)`` jitted, its rows sharded over ``mesh`` when
    there is one (the key data replicated)."""
    if mesh is None:
        return jax.jit(init)
    rows, repl = pl.filter_shardings(mesh)
    return jax.jit(init, in_shardings=(repl, rows), out_shardings=rows)


@functools.lru_cache(maxsize=64)
def _book_init_program(size: int, channels: int, image_dtype: str,
                       key_impl: str | None, mesh):
    """The book style's ``init(key_data, ids)``, compiled once per size,
    channels, storage dtype, key type and device set, whatever the layer
    (every layer of a report or an atlas starts from the same program)."""
    def init(kd, ids):
        return book_start_images(pl.key_of(kd, key_impl), ids, size=size,
                                 channels=channels).astype(image_dtype)

    return _jit_init(init, mesh)


class Program:
    """The compiled pieces of one spec on one model, size and device set:
    ``init(key, ids)``, ``step(params, state, ids, hyper, t)``,
    ``ascend(params, state, ids, hyper, t0, n)`` (steps ``t0 .. t0 + n - 1``
    in a ``fori_loop``; ``n`` an int32 scalar *traced*, so segments of any
    length share one compiled program and chain bit for bit) and
    ``raw(state)`` (the images in the style's domain; None: the state
    itself)."""

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

        def ascend(params, state, ids, hyper, t0, n):
            # n traced: one compiled loop for every segment length, so an
            # ascent cut into segments (the engine's pacing) runs the very
            # same loop body as one call of all its steps: bit-identical
            def body(i, s):
                return step(params, s, ids, hyper, t0 + i)

            return jax.lax.fori_loop(jnp.int32(0), n, body, state)

        self.init = (_jit_init(lucid_init, mesh) if lucid else _book_init_program(
            size, channels, jnp.dtype(spec.style.image_dtype).name, key_impl, mesh))
        if mesh is None:
            self.step = jax.jit(step)
            self.ascend = jax.jit(ascend)
        else:
            self.step = jax.jit(pl.per_device(step, mesh, n_rows=2, n_repl_after=2))
            self.ascend = jax.jit(pl.per_device(ascend, mesh, n_rows=2,
                                                n_repl_after=3))
        if lucid:
            self.raw = jax.jit(lambda s: lucid_images01(s["z"], spec=spec,
                                                        size=size) * 255.0)
        else:
            # the state is the image (float32 storage: returned as is)
            self.raw = None if spec.style.image_dtype == "float32" else jax.jit(
                lambda s: s.astype(jnp.float32))

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


def run_spec(params: Params, spec: RenderSpec, model: ConvNet, plan: pl.LayerPlan,
             fidx: np.ndarray, *, key, devs: tuple, size: int,
             loop: str = "python", init=None, finish=None,
             stop_dead: bool = False, pace=None) -> list:
    """Dispatch ``spec`` for the filters ``fidx`` of ``plan.layer``, chunk by
    chunk (asynchronously: nothing waits for a result).

    ``model`` is the compute model (dtype and conv_impl applied; the spec's
    ``pre_activation`` is applied here). ``devs``: the devices; the filter
    axis of each chunk is split over the first ``plan.n_devices`` of them
    (one device: plain jit; several: ``shard_map``; several processes: each
    computes its shards). Results are the images in the style's domain.
    ``init``: book start images ``(f, s, s, c)`` instead of the key's.
    ``finish``: applied to each chunk's result once the next chunk is
    dispatched (default: keep it on device). Returns one entry per chunk:
    an array, or with ``spec.thresholds`` a tuple of snapshots.
    ``stop_dead``: see :func:`run_spec_stop_dead` (applies where
    :func:`stop_dead_applies`; ignored elsewhere).
    ``pace``: None (each chunk's steps in one call), or an object with
    ``length(remaining) -> n`` (the steps of the next segment, at most
    ``remaining``) and ``pace(state, n)``, called after each segment is
    dispatched (it may wait: at most a few segments are queued, so a
    KeyboardInterrupt is taken within about a segment's time;
    :class:`jaxconvviz.featureviz._pace.Pacer`). Segments run the same
    compiled loop body, so the result does not depend on how the steps are
    cut.
    """
    if stop_dead and stop_dead_applies(spec, devs[:plan.n_devices]):
        return run_spec_stop_dead(params, spec, model, plan, fidx, key=key,
                                  devs=devs, size=size, loop=loop, init=init,
                                  finish=finish, pace=pace)
    channels = int(model.input_shape[2])
    m = spec.model_for(model)
    devs = tuple(devs[:plan.n_devices])
    one = len(devs) == 1 and pl.all_addressable(devs)
    mesh = None if one else pl.filter_mesh(devs)
    kd, key_impl = (None, None) if key is None else pl.key_parts(key)
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
        rows, repl = pl.filter_shardings(mesh)
        params_d = jax.tree.map(lambda a: pl.to_global(np.asarray(a), repl)
                                if not pl.all_addressable(devs)
                                else jax.device_put(a, repl), params)
        hyper_d = pl.to_global(hyper, repl)
        kd_d = None if kd is None else pl.to_global(kd, repl)
    stops = sorted(set(spec.thresholds) | {spec.steps})
    out_fn = prog.raw
    pos = [0]

    def put_t(t):
        a = np.int32(t)
        return jax.device_put(a, devs[0]) if one else pl.to_global(a, repl)

    def chunk(ids):
        c0 = pos[0]
        pos[0] += ids.shape[0]
        ids_d = jax.device_put(jnp.asarray(ids), devs[0]) if one else pl.to_global(
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
            while t < stop:  # segments of pace.length() steps (all: no pace)
                n = stop - t if pace is None else pace.length(stop - t)
                if loop == "fori":
                    state = prog.ascend(params_d, state, ids_d, hyper_d, put_t(t),
                                        put_t(n))
                else:
                    for s in range(t, t + n):
                        state = prog.step(params_d, state, ids_d, hyper_d,
                                          put_t(s))
                t += n
                if pace is not None:
                    pace(state, n)
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

    return dispatch(run, finish, plan, ids_all)


def dispatch(run_chunk, finish, plan: pl.LayerPlan, ids: np.ndarray) -> list:
    """``finish(run_chunk(rows))`` for every chunk of ``plan`` (the last one
    padded with its last row), in order; ``finish`` None keeps each result
    as it is."""
    pad = plan.chunk * plan.n_chunks - ids.shape[0]
    ids_p = np.concatenate([ids, np.repeat(ids[-1:], pad)])
    fin = finish if finish is not None else (lambda x: x)
    return [fin(run_chunk(ids_p[c * plan.chunk:(c + 1) * plan.chunk]))
            for c in range(plan.n_chunks)]


def stop_dead_applies(spec: RenderSpec, devs) -> bool:
    """Whether :func:`run_spec_stop_dead` can run ``spec``: the book style
    (deterministic steps on the image itself), no snapshots, at least two
    steps, and every device of this process (a multi-process run cannot
    gather rows across processes)."""
    return (isinstance(spec.style, Book) and not spec.thresholds
            and spec.steps > 1 and pl.all_addressable(tuple(devs)))


def run_spec_stop_dead(params: Params, spec: RenderSpec, model: ConvNet,
                       plan: pl.LayerPlan, fidx: np.ndarray, *, key, devs: tuple,
                       size: int, loop: str, init=None, finish=None,
                       pace=None) -> list:
    """:func:`run_spec` for the book style, with dead filters stopped after
    their first step.

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
                     devs=devs, size=size, loop=loop, init=init, pace=pace)
    if pace is not None:
        pace.drain()  # the host sync below: wait where Ctrl-C is taken
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
    out = x1
    if alive.size:
        plan2 = replace(plan, n_filters=int(alive.size),
                        n_chunks=-(-int(alive.size) // plan.chunk))
        rest = run_spec(params, replace(spec, steps=spec.steps - 1), model, plan2,
                        fidx[alive], key=None, devs=devs, size=size,
                        loop=loop, init=x1[alive], pace=pace)
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


