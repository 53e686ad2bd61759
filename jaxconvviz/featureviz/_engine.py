"""The one request path of feature visualization (private).

:func:`~jaxconvviz.render`, :func:`~jaxconvviz.filter_patterns` and
:func:`~jaxconvviz.filter_atlas` all go through :func:`prepare` (every
argument checked and every layer planned before any compute: chunks from a
memory budget, devices, the compute model) and :func:`execute` (each
layer's chunks run in paced segments, :mod:`~jaxconvviz.featureviz._pace`,
then landed in order with progress, dead filters reported). The model is
bound to its backend once, in :func:`prepare`
(:func:`jaxconvviz.backend.bind`).

Imports jax and numpy only.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxconvviz.backend import bind
from jaxconvviz.backend.config import Backend, default_backend
from jaxconvviz.backend.resolve import resolve_stop_dead
from jaxconvviz.errors import InputError
from jaxconvviz.featureviz import _pace
from jaxconvviz.featureviz import _plan as pl
from jaxconvviz.featureviz import _programs as pg
from jaxconvviz.featureviz.objectives import Objective
from jaxconvviz.featureviz.progress import (
    DeadFilterWarning,
    Progress,
    RunInterrupted,
    SlowOnCPUWarning,
    as_progress,
    dead_filter_hint,
    format_seconds,
)
from jaxconvviz.featureviz.styles import Book, check_style
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.models.vgg import resolve_model
from jaxconvviz.run import Run


# ---------------------------------------------------------------- backend
def backend_of(model: ConvNet) -> Backend:
    """The backend choices of ``model`` over the process default."""
    return model.backend.over(default_backend())


def compute_model(model: ConvNet, backend: Backend, dtype) -> ConvNet:
    """``model`` computing in ``dtype`` with ``backend`` (its choices over
    the process default, :func:`backend_of`), bound for the library's
    gradient programs (:func:`jaxconvviz.backend.bind`: every algorithm
    field resolved for the platform before tracing)."""
    if dtype != jnp.float32:
        model = model.with_dtype(dtype)
    return bind(model.with_backend(backend), library_gradients=True)


# ---------------------------------------------------------------- checks
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


def check_objective(objective, model: ConvNet):
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


def select_one(model: ConvNet, layer, filter_indices) -> dict[str, np.ndarray]:
    """``{layer: filters}`` of a one-layer request."""
    if layer is None:
        raise InputError(f"layer is required; one of "
                         f"{', '.join(model.spatial_layers)}.")
    layer = pl.check_layer(model, layer)
    return {layer: pl.check_filters(model, layer, filter_indices)}


def select_many(model: ConvNet, layers, filters_per_layer) -> dict[str, np.ndarray]:
    """``{layer: filters}`` of an atlas request (``layers`` None: every conv
    layer; ``filters_per_layer`` None, an int or ``{layer: indices}``)."""
    if layers is None:
        layers = model.conv_layers
    elif isinstance(layers, str):
        layers = (layers,)
    try:
        layers = tuple(dict.fromkeys(layers))
    except TypeError:
        layers = ()
    if not layers:
        raise InputError("layers must be None (every conv layer) or a non-empty "
                         "sequence of layer names.")
    for name in layers:
        model.check_layer(name, model.spatial_layers, name="layers")
    fpl = filters_per_layer
    if fpl is None or isinstance(fpl, (int, np.integer)):
        n = None if fpl is None else pl.check_positive_int(fpl, "filters_per_layer")
        return {layer: np.arange(model.channels(layer) if n is None else
                                 min(n, model.channels(layer)), dtype=np.int32)
                for layer in layers}
    if isinstance(fpl, Mapping):
        extra = set(fpl) - set(layers)
        if extra:
            raise InputError(
                f"filters_per_layer names layers not in layers: {sorted(extra)}; "
                f"requested layers are {list(layers)}.")
        return {layer: (np.arange(model.channels(layer), dtype=np.int32)
                        if fpl.get(layer) is None
                        else pl.check_filters(model, layer, fpl[layer]))
                for layer in layers}
    raise InputError(
        f"filters_per_layer must be None (all filters), an int >= 1 (the first n "
        f"filters of each layer) or a dict {{layer: indices}}; got {fpl!r:.80}.")


# ---------------------------------------------------------------- planning
@dataclass
class Request:
    """A checked and planned request: what :func:`execute` runs."""

    model: ConvNet          # the network as given
    compute: ConvNet        # dtype and backend applied
    style: object
    specs: dict             # {layer: RenderSpec}
    fsel: dict              # {layer: int32 filters}
    plans: list             # [LayerPlan], in layer order
    devs: tuple
    key: object
    size: int
    init: object
    loop: str
    stop_dead: bool
    run: Run
    estimate: float | None
    desc: str


def plan_layers(model: ConvNet, params, fsel: dict, size: int, budget, devs: tuple,
                batch_size, *, auto: bool, channel_only, platform: str,
                one_device: bool = False, dtype=jnp.float32) -> list:
    """One :class:`~jaxconvviz.featureviz._plan.LayerPlan` per layer: equal
    chunks that fit the per-device budget (the smallest of all processes'),
    at most ``batch_size`` filters per call (None: every filter on an
    accelerator, :func:`~jaxconvviz.featureviz._plan.cpu_batch_size` per
    device on XLA:CPU), the filter axis split over ``devs`` (``auto``: light
    CPU layers on the first device only). The per-filter memory estimate
    (:func:`~jaxconvviz.featureviz._plan.filter_memory_bytes`) is the one
    calibrated for the platform of ``devs`` and the compute ``dtype``;
    ``platform`` (the backend's) resolves ``channel_only``. Raises before
    any compute when a filter cannot fit the budget or the results the
    host."""
    if batch_size is not None:
        batch_size = pl.check_positive_int(batch_size, "batch_size")
    if budget is None:
        budget = pl.device_memory_budget(pl.first_local(devs))
        if jax.process_count() > 1 and not pl.all_addressable(devs):
            from jax.experimental import multihost_utils

            # in MiB: int32 survives jax's default 32-bit mode
            mib = multihost_utils.process_allgather(np.asarray([budget >> 20],
                                                               np.int32))
            budget = int(np.min(mib)) << 20
    cpu = devs[0].platform == "cpu"
    mem = dict(platform=devs[0].platform, dtype=jnp.dtype(dtype).name)
    fixed = int(pl.PARAM_FACTOR * pl.param_bytes(params))
    n_all = sum(int(f.shape[0]) for f in fsel.values())
    for layer in fsel:  # before any compute: the estimate and the limit
        pl.check_fits(model, layer, size, budget_bytes=budget, fixed_bytes=fixed,
                      n_filters=n_all, **mem)
    plans = []
    for layer, f in fsel.items():
        n = int(f.shape[0])
        only = pl.resolve_channel_only(channel_only, model, layer, platform)
        if one_device:
            n_dev = 1
        elif auto and pl.all_addressable(devs):
            n_dev = len(pl.auto_devices(devs, model, layer, size, channel_only=only))
        else:
            n_dev = len(devs)
        n_dev = min(n_dev, n) if pl.all_addressable(devs) else n_dev
        per = pl.filter_memory_bytes(model, layer, size, **mem)
        cap = pl.cpu_batch_size(n, model, layer, size) if cpu else None
        chunk, n_chunks = pl.plan_chunks(n, per_filter_bytes=per, budget_bytes=budget,
                                         n_devices=n_dev, fixed_bytes=fixed,
                                         cap_per_device=cap)
        if batch_size is not None:  # explicit: at most batch_size per call
            want = -(-min(batch_size, n) // n_dev) * n_dev
            if want < chunk:
                n_chunks = -(-n // want)
                chunk = -(-n // n_chunks)
                chunk = -(-chunk // n_dev) * n_dev
        plans.append(pl.LayerPlan(layer, n, chunk, n_chunks, n_dev, per, budget, only))
    return plans


def prepare(params, fsel_of, *, key, style, size, steps, objective, model,
            run, thresholds=None, init=None, desc: str) -> Request:
    """Check every argument and plan every layer, before any compute.

    ``fsel_of(model) -> {layer: filters}`` selects the targets
    (:func:`select_one` or :func:`select_many`). ``size``, ``steps`` and
    ``objective`` None: the style's. ``key`` draws the start images (and
    lucid's transforms); None only with ``init`` (book start images of
    shape ``(f, size, size, c)``, one layer).
    """
    style = check_style(style)
    model = resolve_model(params, model=model)
    fsel = fsel_of(model)
    steps = style.steps if steps is None else pl.check_positive_int(steps, "steps")
    size = style.size if size is None else size
    objective = check_objective(style.objective if objective is None else objective,
                                model)
    for layer in fsel:
        size = pl.check_size(model, layer, size, margin=style.margin)
    thresholds = check_thresholds(thresholds, steps)
    channels = int(model.input_shape[2])
    if init is not None:
        if not isinstance(style, Book):
            raise InputError("init (start images) applies to the Book style; the "
                             "Lucid style starts from its key.")
        init = pl.check_init(init, int(next(iter(fsel.values())).shape[0]), size,
                             channels)
    else:
        pl.check_key(key)
    run = Run() if run is None else run
    if not isinstance(run, Run):
        raise InputError(f"run must be None or a jcv.Run(...); got {run!r:.80}.")
    backend = backend_of(model)
    core = style.replace(steps=steps, size=size, objective=None)
    specs = {layer: pg.RenderSpec(layer=layer, style=core, steps=steps,
                                  objective=objective,
                                  pre_activation=style.pre_activation,
                                  thresholds=thresholds) for layer in fsel}
    devs = pl.check_devices(run.devices, jax.devices, "all of jax.devices()")
    net = size + style.margin
    channel_only = False if objective is not None else backend.channel_only
    compute = compute_model(model, backend, jnp.dtype(run.dtype))
    plans = plan_layers(model, params, fsel, net,
                        pl.parse_memory_budget(run.memory_budget), devs,
                        run.batch_size, auto=run.devices is None,
                        channel_only=channel_only, platform=compute.backend.platform,
                        one_device=objective is not None and objective.couples_images,
                        dtype=jnp.dtype(run.dtype))
    est = warn_if_slow(model, plans, net, steps, style=style, what=desc)
    return Request(model, compute, style, specs, fsel, plans, devs, key, size,
                   init, compute.backend.loop,
                   resolve_stop_dead(backend, style.pre_activation),
                   run, est, desc)


def warn_if_slow(model: ConvNet, plans: list, size: int, steps: int, *, style,
                 what: str) -> float | None:
    """On XLA:CPU, warn (:class:`SlowOnCPUWarning`) before computing when the
    estimate exceeds :data:`~jaxconvviz.featureviz._plan.CPU_WARN_SECONDS`.
    Returns the estimate on CPU, None elsewhere."""
    if jax.default_backend() != "cpu":
        return None
    est = pl.estimate_seconds(model, plans, size, steps,
                              step_factor=pl.STEP_FACTOR[style.name])
    if est > pl.CPU_WARN_SECONDS:
        n = sum(p.n_filters for p in plans)
        warnings.warn(
            f"{what} on CPU: {n} filters of {len(plans)} layer(s), {steps} steps "
            f"at {size} px, estimated {format_seconds(est)} (from "
            f"{pl.CPU_MACS_PER_SECOND:.2g} multiply-adds/s per CPU device); "
            f"a GPU runs this in seconds to minutes.",
            SlowOnCPUWarning, stacklevel=_caller_level())
    return est


# ---------------------------------------------------------------- running
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside the jaxconvviz package
    (warnings point at the user's line)."""
    f, level = sys._getframe(1), 1
    while f is not None and os.path.abspath(f.f_code.co_filename).startswith(_PACKAGE):
        f, level = f.f_back, level + 1
    return level


def _copy_to_host_async(x):
    """Start copying a chunk's result to the host; the array stays usable."""
    if x.is_fully_addressable:
        x.copy_to_host_async()
    return x


def warn_dead(req: Request, layer: str, out) -> list[int]:
    """Book style: warn (:class:`DeadFilterWarning`) naming the filters whose
    images are still their start images (exactly zero gradient at every
    step). Returns their indices."""
    fidx = req.fsel[layer]
    start = req.init
    if start is None:
        start = pg.book_start_images_jit(req.key, jnp.asarray(fidx), size=req.size,
                                         channels=int(req.model.input_shape[2]))
    moved = np.any(np.asarray(out) != np.asarray(pg.in_storage(start, req.style)),
                   axis=(1, 2, 3))
    dead = [int(k) for k, m in zip(fidx.tolist(), moved.tolist(), strict=True)
            if not m]
    if dead:
        hint = dead_filter_hint(req.model, layer,
                                pre_activation=req.style.pre_activation)
        warnings.warn(
            f"{len(dead)} of {len(moved)} filters of {layer} had an exactly zero "
            f"gradient at every step, so their images are the start noise: "
            f"{dead[:16]}{' ...' if len(dead) > 16 else ''}; {hint}",
            DeadFilterWarning, stacklevel=_caller_level())
    return dead


def layer_work(req: Request) -> list[_pace.LayerWork]:
    """Each layer's chunk-steps and the planner's seconds per chunk-step
    (:func:`~jaxconvviz.featureviz._plan.estimate_seconds`, the CPU model;
    the pacer corrects it by the measured segment times on any platform)."""
    net = req.size + req.style.margin
    out = []
    for plan in req.plans:
        steps = req.specs[plan.layer].steps
        per = None
        if req.model is not None:
            est = pl.estimate_seconds(req.model, [plan], net, 1,
                                      step_factor=pl.STEP_FACTOR[req.style.name])
            per = est / max(1, plan.n_chunks) if est > 0 else None
        out.append(_pace.LayerWork(plan.layer, plan.n_filters,
                                   plan.n_chunks * steps, per))
    return out


def execute(params, req: Request, *, to_host: bool, pacer=None) -> list:
    """Run a prepared request, layer by layer: each chunk's ascent cut into
    segments of about :data:`~jaxconvviz.featureviz._pace.SEGMENT_SECONDS`
    with at most :data:`~jaxconvviz.featureviz._pace.QUEUE_DEPTH` in flight
    (:class:`~jaxconvviz.featureviz._pace.Pacer`: Ctrl-C is taken within a
    poll and leaves at most about one segment to finish), then the layer's chunks
    landed in order (with ``to_host`` each chunk's copy to the host starts
    at once), reporting progress per chunk and, between chunks, heartbeats
    with the time left corrected by the measured segment times. Returns one
    array per layer (``to_host``: numpy, else on the first device), ``(n,
    size, size, c)`` or with thresholds ``(len(thresholds), n, ...)``; the
    book style's dead filters are warned about. A KeyboardInterrupt becomes
    :class:`~jaxconvviz.featureviz.progress.RunInterrupted` carrying the
    layers that finished."""
    prog = as_progress(req.run.progress, req.desc)
    total = sum(p.n_filters for p in req.plans)
    if isinstance(prog, Progress):
        prog.start(total, req.estimate)

    def beat(done, left, layer, heartbeat):
        if isinstance(prog, Progress):
            prog.update(done, total, layer=layer, left=left, heartbeat=heartbeat)

    if pacer is None:
        pacer = _pace.Pacer(layer_work(req), on_progress=beat,
                            adaptive=pl.all_addressable(req.devs))
    results, finished = [], {}
    try:
        with pacer.interrupt:  # Ctrl-C taken at the pacer's polls only
            _run_layers(params, req, pacer, prog, to_host, total, results, finished)
            pacer.check()  # pressed after the last poll: still a stop
    except KeyboardInterrupt as e:
        pacer.settle()  # never exit with segments in flight
        if isinstance(e, RunInterrupted):
            raise
        raise RunInterrupted(finished, [p.layer for p in req.plans]) from None
    finally:
        if isinstance(prog, Progress):
            prog.close()
    return results


def _run_layers(params, req: Request, pacer, prog, to_host: bool, total: int,
                results: list, finished: dict) -> None:
    """:func:`execute`'s loop: each layer dispatched (paced), landed,
    appended to ``results`` and ``finished`` (``{layer: out}``)."""
    done = 0
    for i, plan in enumerate(req.plans):
        pacer.begin(i)
        chunks = pg.run_spec(
            params, req.specs[plan.layer], req.compute, plan,
            req.fsel[plan.layer], key=req.key, devs=req.devs, size=req.size,
            loop=req.loop, init=req.init,
            finish=_copy_to_host_async if to_host else None,
            stop_dead=req.stop_dead, pace=pacer)
        landed = []
        for c, x in enumerate(chunks):
            pacer.wait(x)  # polling: a chunk is reported when it is done
            if to_host:
                x = jax.tree.map(pl.fetch, x)
            landed.append(x)
            done += min(plan.chunk, plan.n_filters - c * plan.chunk)
            if isinstance(prog, Progress):
                prog.update(done, total, layer=plan.layer, chunk=c + 1,
                            n_chunks=plan.n_chunks, left=pacer.seconds_left())
            elif prog is not None:
                prog(done, total)
        pacer.end()
        thresholds = req.specs[plan.layer].thresholds
        out = pg.concat_chunks(landed, plan.n_filters, thresholds)
        if not to_host:
            out = _on_first_device(out, req.devs, plan.n_devices)
        if isinstance(req.style, Book) and not thresholds:
            warn_dead(req, plan.layer, out)
        results.append(out)
        finished[plan.layer] = out


def _on_first_device(x, devs: tuple, n_dev: int):
    if not x.is_fully_addressable:
        return jax.device_put(pl.fetch(x), pl.first_local(devs))
    if n_dev > 1:
        return jax.device_put(x, devs[0])
    return x
