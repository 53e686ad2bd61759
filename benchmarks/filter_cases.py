"""Feature-visualization cases: filter patterns, the atlas, the notes'
one-at-a-time loops, the step-loop forms and ``channel_only`` on vs off
(the case texts are in :mod:`benchmarks.cases`)."""

from __future__ import annotations

__all__ = ["case_atlas", "case_channel", "case_filters", "case_loops", "case_notes",
           "notes_loop_jax", "time_notes_jax"]

import statistics
import time
from collections.abc import Callable

from benchmarks import flops as fl
from benchmarks import torch_peers as tp
from benchmarks.context import Ctx
from benchmarks.timing import CompileCounter, log, sync, timed, timeit


def _resolved(model, dt: str):
    """``model``'s backend (over the process default) as the ascent resolves
    it at compute dtype ``dt``: the ``Backend`` the engine compiles with
    (its ``conv`` and ``loop`` are recorded)."""
    from jaxconvviz.backend import default_backend, resolve

    return resolve(model.backend.over(default_backend()), dtype=dt,
                   library_gradients=True)


def _plan(ctx: Ctx, model, layers, size: int, fpl, run=None):
    """The chunking the library plans for these layers (``jcv.atlas_plan``,
    the planner ``filter_patterns`` and ``filter_atlas`` share) with the
    book style."""
    return ctx.jcv.atlas_plan(ctx.params, layers=layers, filters_per_layer=fpl,
                              style=ctx.jcv.Book(), size=size, model=model,
                              run=run)

# ------------------------------------------------------- the notes' loop
_NOTES_STEP = None


def _notes_step():
    """The notes' method as a jitted one-image step (filter index traced)."""
    import functools

    import jax
    import jax.numpy as jnp

    global _NOTES_STEP
    if _NOTES_STEP is None:
        @functools.partial(jax.jit, static_argnames=("model", "layer"))
        def step(params, x, k, *, model, layer):
            def loss(x):
                act = model.forward(params, x, stop=layer)
                return jax.lax.dynamic_index_in_dim(act, k, axis=-1).astype(
                    jnp.float32).mean()

            g = jax.grad(loss)(x)
            g = g / (jnp.sqrt(jnp.mean(jnp.square(g))) + 1e-5)
            return x + g

        _NOTES_STEP = step
    return _NOTES_STEP


def notes_loop_jax(params, model, layer, size, steps, filters, key):
    """One filter at a time: ``steps`` calls of a jitted single-image step."""
    import jax
    import jax.numpy as jnp

    step = _notes_step()
    out = []
    c = int(model.input_shape[2])
    for k in filters:
        u = jax.random.uniform(jax.random.fold_in(key, k), (1, size, size, c))
        x = u * 20 + 128
        kk = jnp.int32(k)
        for _ in range(steps):
            x = step(params, x, kk, model=model, layer=layer)
        out.append(x)
    return sync(out)


def time_notes_jax(params, model, layer, size, steps, n_time, key) -> float:
    """Seconds per filter of the notes' loop (compiled first, then timed)."""
    notes_loop_jax(params, model, layer, size, 1, [0], key)  # compile
    t0 = time.perf_counter()
    notes_loop_jax(params, model, layer, size, steps, list(range(n_time)), key)
    return (time.perf_counter() - t0) / n_time


def _xla_ascent(ctx, model, layer, size, chunk, n_chunks, dt, only) -> dict:
    """XLA's FLOPs of the library's ascent: one-step program x steps x chunks."""
    if not ctx.args.xla_flops:
        return {"xla_flops_note": "not counted (--no-xla-flops)"}
    try:
        per_step = fl.ascent_step_xla_flops(ctx.params, model, layer, size,
                                            chunk, dtype=dt, channel_only=only)
    except Exception as e:  # noqa: BLE001 - a missing count is a result too
        return {"xla_flops_error": f"{type(e).__name__}: {e}"}
    if per_step is None:
        return {"xla_flops_error": "the backend's cost analysis has no 'flops'"}
    return {"xla_gflop": per_step * ctx.steps * n_chunks / 1e9,
            "xla_flops_per_step_chunk": per_step}


# ----------------------------------------------------------------- cases
def case_filters(ctx: Ctx, layer: str, size: int, n: int) -> list[dict]:
    """Filter patterns of the first ``n`` filters, batched vs one at a time.

    Every timed variant (the notes' JAX loop, PyTorch's loop with peers, the
    batched path per dtype) runs once per round, interleaved over
    ``--rounds`` rounds; the reported time is the minimum (the least
    disturbed run on a shared machine) and every sample is kept.
    """
    import numpy as np

    jcv = ctx.jcv
    steps = ctx.steps
    model = ctx.ascent_model
    m = ctx.n_time(n)
    log(f"filters {layer} {size}px n={n}: notes' loop on {m} filters, "
        f"{ctx.args.rounds} round(s)")
    timers: dict[str, Callable[[], float]] = {}
    if ctx.args.baseline:
        timers["jax_notes"] = lambda: time_notes_jax(
            ctx.params, ctx.model, layer, size, steps, m, ctx.key)
        if ctx.torch_ok():
            timers["torch_notes"] = lambda: tp.time_notes_loop(
                ctx.params, ctx.model, layer, size, steps, m)
    runs, colds, compiles = {}, {}, {}
    for dt in ctx.dtypes:
        def run(dt=dt):
            return jcv.filter_patterns(ctx.params, layer, range(n), key=ctx.key,
                                       size=size, steps=steps, model=model,
                                       run=jcv.Run(dtype=dt))

        runs[dt] = run
        log(f"  compile batched {dt}")
        colds[dt] = timed(run)
        compiles[dt] = CompileCounter()
        timers[f"batched_{dt}"] = (lambda run=run, cc=compiles[dt]:
                                   _timed_counted(run, cc))
    samples: dict[str, list[float]] = {k: [] for k in timers}
    for r in range(ctx.args.rounds):
        for name, timer in timers.items():
            log(f"  round {r + 1}: {name}")
            samples[name].append(timer())
    base = min(samples["jax_notes"]) if "jax_notes" in samples else None
    torch_s = min(samples["torch_notes"]) if "torch_notes" in samples else None
    (plan,) = _plan(ctx, model, [layer], size, n)
    only, n_dev = plan.channel_only, plan.n_devices
    chunk, n_chunks = plan.chunk, plan.n_chunks
    base_flops = fl.ascent_flops(ctx.model, layer, size, steps, n)
    out, acts = [], {}
    for dt in ctx.dtypes:
        warm = min(samples[f"batched_{dt}"])
        acts[dt] = np.asarray(jcv.filter_activation(
            ctx.params, runs[dt](), layer, range(n), model=model))
        flops = fl.ascent_flops(ctx.model, layer, size, steps, n, only)
        rec = {
            "case": f"filters:{layer}:{size}:{n}", "kind": "filters", "layer": layer,
            "size": size, "steps": steps, "n": n, "dtype": dt,
            "batched_s": warm, "cold_s": colds[dt],
            "compiles_during_timed_runs": compiles[dt].count,
            "batched_ms_per_filter": warm / n * 1e3,
            "gflop": flops / 1e9, "tflops": flops / warm / 1e12,
            "channel_only": only, "devices": n_dev,
            "chunks": {"chunk": chunk, "n_chunks": n_chunks,
                       "chunk_per_device": chunk // n_dev,
                       "padding": chunk * n_chunks - n},
            # the step-loop form and convolution form the backend resolves
            "loop": _resolved(model, dt).loop,
            "conv_impl": _resolved(model, dt).conv,
            "rounds": ctx.args.rounds,
            "mean_activation": float(acts[dt].mean()),
            "samples_s": {"batched": samples[f"batched_{dt}"]},
        }
        rec.update(_xla_ascent(ctx, model, layer, size, chunk, n_chunks, dt, only))
        if "xla_gflop" in rec:
            rec["xla_tflops"] = rec["xla_gflop"] / warm / 1e3
        if base is not None:
            rec.update({
                "baseline": "notes' loop, one filter at a time, jitted step "
                            "(float32, whole layer)",
                "baseline_filters_timed": m, "baseline_s": base * n,
                "baseline_ms_per_filter": base * 1e3, "speedup": base * n / warm,
                "baseline_gflop": base_flops / 1e9,
                "baseline_tflops": base_flops / (base * n) / 1e12})
            rec["samples_s"]["jax_notes_per_filter"] = samples["jax_notes"]
        if torch_s is not None:
            rec.update({"torch_baseline_s": torch_s * n,
                        "torch_ms_per_filter": torch_s * 1e3,
                        "speedup_vs_torch": torch_s * n / warm,
                        "jax_notes_vs_torch_notes": (torch_s / base) if base
                        else None})
            rec["samples_s"]["torch_notes_per_filter"] = samples["torch_notes"]
        elif ctx.peers:
            rec["torch_baseline"] = "absent (torch not installed)"
        out.append(rec)
    if "bfloat16" in acts and "float32" in acts:
        a32, a16 = acts["float32"], acts["bfloat16"]
        rel = np.abs(a16 - a32) / np.maximum(np.abs(a32), 1e-6)
        out[-1]["bf16_vs_f32_activation"] = {
            "median_rel_diff": float(np.median(rel)), "max_rel_diff": float(rel.max()),
            "mean_f32": float(a32.mean()), "mean_bf16": float(a16.mean())}
    return out


def _timed_counted(run, counter: CompileCounter) -> float:
    with counter:
        return timed(run)


def _atlas_layers(ctx: Ctx):
    model = ctx.model
    layers = model.conv_layers
    if ctx.args.atlas_layers:
        layers = tuple(ctx.args.atlas_layers.split(","))
    fpl = ctx.args.atlas_filters
    counts = {layer: model.channels(layer) if fpl is None else min(
        fpl, model.channels(layer)) for layer in layers}
    return layers, fpl, counts


def case_atlas(ctx: Ctx, size: int) -> list[dict]:
    """:func:`jaxconvviz.filter_atlas` end to end (host copies included).

    Warm-up: one full call with exactly the arguments (layers, filters per
    layer, size, steps, dtype, budget) of the timed calls, so every program
    the timed calls run is compiled; the record counts the compilations seen
    during the timed calls (0 means the warm-up covered every shape).
    Baseline (unless ``--no-baseline``): the notes' loop on 1-2 filters per
    layer, scaled to each layer's filter count.
    """
    import numpy as np

    jcv = ctx.jcv
    model, steps = ctx.ascent_model, ctx.steps
    layers, fpl, counts = _atlas_layers(ctx)
    n_total = sum(counts.values())
    log(f"atlas {size}px: {n_total} filters over {len(layers)} layers")
    base_total, base_layers = None, {}
    nb = 1 if ctx.cpu and not ctx.smoke else 2
    if ctx.args.baseline:
        base_total = 0.0
        for layer in layers:
            per = time_notes_jax(ctx.params, model, layer, size, steps, nb, ctx.key)
            base_layers[layer] = per * 1e3
            base_total += per * counts[layer]
    plan = _plan(ctx, model, layers, size, fpl,
                 run=jcv.Run(memory_budget=ctx.args.memory_budget))
    only = {p.layer: p.channel_only for p in plan}
    flops = sum(fl.ascent_flops(model, layer, size, steps, counts[layer], only[layer])
                for layer in layers)
    out = []
    for dt in ctx.dtypes:
        stamps: list[tuple[int, float]] = []

        def run(dt=dt, stamps=stamps):
            stamps.clear()
            t0 = time.perf_counter()

            def progress(done, total, t0=t0):
                stamps.append((done, time.perf_counter() - t0))

            return jcv.filter_atlas(
                ctx.params, model=model, layers=layers, size=size, steps=steps,
                key=ctx.key, filters_per_layer=fpl,
                run=jcv.Run(dtype=dt, memory_budget=ctx.args.memory_budget,
                            progress=progress))

        log(f"  filter_atlas {dt}: warm-up call with the timed arguments")
        with CompileCounter() as cc_cold:
            cold = timed(run)
        log(f"  cold {cold:.1f} s ({cc_cold.count} compilations); timed runs")
        warm_times = []
        with CompileCounter() as cc:
            for _ in range(max(1, ctx.args.repeat - 1)):
                t0 = time.perf_counter()
                res = run()
                warm_times.append(time.perf_counter() - t0)
        warm = statistics.median(warm_times)
        per_layer, prev_t, cum = {}, 0.0, 0
        for p in plan:
            cum += p.n_filters
            t_end = next((t for d, t in stamps if d >= cum), prev_t)
            per_layer[p.layer] = {"n": p.n_filters, "chunk": p.chunk,
                                  "n_chunks": p.n_chunks, "devices": p.n_devices,
                                  "s": t_end - prev_t}
            prev_t = t_end
        rec = {
            "case": f"atlas:{size}", "kind": "atlas", "size": size, "steps": steps,
            "n": n_total, "layers": len(layers), "dtype": dt,
            "conv_impl": _resolved(model, dt).conv,
            "channel_only": only,
            "batched_s": warm, "cold_s": cold, "samples_s": warm_times,
            "warmup": "one full filter_atlas call with the timed arguments",
            "compiles_in_warmup": cc_cold.count,
            "compiles_during_timed_runs": cc.count,
            "filters_per_s": n_total / warm,
            "gflop": flops / 1e9, "tflops": flops / warm / 1e12,
            "chunks": {p.layer: p.chunk for p in plan},
            "per_layer": per_layer,
            "all_finite": bool(all(np.isfinite(v).all() for v in res.values())),
            "memory_budget": ctx.args.memory_budget,
        }
        if ctx.args.xla_flops:
            xla, errs = 0.0, []
            for p in plan:
                r = _xla_ascent(ctx, model, p.layer, size, p.chunk, p.n_chunks, dt,
                                p.channel_only)
                if "xla_gflop" in r:
                    xla += r["xla_gflop"]
                    per_layer[p.layer]["xla_gflop"] = r["xla_gflop"]
                else:
                    errs.append(f"{p.layer}: {r}")
            if errs:
                rec["xla_flops_error"] = errs
            else:
                rec["xla_gflop"] = xla
                rec["xla_tflops"] = xla / warm / 1e3
        if base_total is not None:
            rec.update({"baseline": "notes' loop per layer (float32), timed on "
                                    f"{nb} filter(s) per layer, scaled",
                        "baseline_s": base_total,
                        "baseline_ms_per_filter_by_layer": base_layers,
                        "speedup": base_total / warm})
        out.append(rec)
    return out


def case_notes(ctx: Ctx, size: int, n_time: int = 2) -> list[dict]:
    """The one-at-a-time loops on every conv layer (JAX; PyTorch with
    ``--peers``), timed on ``n_time`` filters per layer, scaled to every
    filter of each layer: the full-atlas baseline."""
    model, steps = ctx.model, ctx.steps
    layers, _, counts = _atlas_layers(ctx)
    recs = {"jax": {}, "torch": {}}
    for layer in layers:
        recs["jax"][layer] = time_notes_jax(ctx.params, model, layer, size, steps,
                                            n_time, ctx.key)
        if ctx.torch_ok():
            recs["torch"][layer] = tp.time_notes_loop(ctx.params, model, layer, size,
                                                      steps, n_time)
        log(f"  notes {layer}: jax {recs['jax'][layer] * 1e3:.0f} ms/filter")
    n_total = sum(counts.values())
    flops = sum(fl.ascent_flops(model, layer, size, steps, counts[layer])
                for layer in layers)
    out = []
    for impl, per in recs.items():
        if not per:
            if ctx.peers:
                out.append({"case": f"notes:{size}:{n_time}", "kind": "notes",
                            "impl": impl, "absent": "torch not installed"})
            continue
        total = sum(per[layer] * counts[layer] for layer in layers)
        out.append({
            "case": f"notes:{size}:{n_time}", "kind": "notes", "impl": impl,
            "size": size, "steps": steps, "n": n_total, "dtype": "float32",
            "filters_timed_per_layer": n_time,
            "method": f"the notes' loop in {impl}, one filter at a time, timed "
                      f"on {n_time} filters per layer, scaled to every filter",
            "scaled_total_s": total,
            "ms_per_filter_by_layer": {k: v * 1e3 for k, v in per.items()},
            "gflop": flops / 1e9, "tflops": flops / total / 1e12,
            "chunks": {"chunk": 1},
        })
    return out


class _pacing:
    """``paced=False``: the engine's ascents without segments (each chunk's
    steps in one call, nothing waits: ``_pace.SEGMENT_SECONDS = inf``), the
    form before Ctrl-C pacing; the ``paced`` records against these give its
    cost (issue 29: under 3%)."""

    def __init__(self, paced: bool):
        self.paced = paced

    def __enter__(self):
        from jaxconvviz.featureviz import _pace

        self.old = (_pace.SEGMENT_SECONDS, _pace.QUEUE_DEPTH)
        if not self.paced:
            _pace.SEGMENT_SECONDS, _pace.QUEUE_DEPTH = float("inf"), 1 << 30

    def __exit__(self, *exc):
        from jaxconvviz.featureviz import _pace

        _pace.SEGMENT_SECONDS, _pace.QUEUE_DEPTH = self.old


def case_loops(ctx: Ctx, layer: str, size: int, n: int) -> list[dict]:
    """The step-loop forms (``Backend.loop``: fori paced and unpaced, python)
    x chunk sizes (``Run.batch_size``) of filter_patterns."""
    jcv = ctx.jcv
    out = []
    sizes = sorted({1, 2, 4, 8, 16, n} & set(range(1, n + 1)))
    if ctx.args.loop_chunks:
        sizes = [int(v) for v in ctx.args.loop_chunks.split(",")]
    elif ctx.smoke:
        sizes = [n]
    flops = fl.ascent_flops(ctx.model, layer, size, ctx.steps, n)
    forms = (("fori", True), ("fori", False), ("python", True))
    for dt in ctx.dtypes:
        for loop, paced in forms:
            for bs in sizes:
                def run(loop=loop, bs=bs, dt=dt, paced=paced):
                    with _pacing(paced):
                        return jcv.filter_patterns(
                            ctx.params, layer, range(n), key=ctx.key, size=size,
                            steps=ctx.steps,
                            model=ctx.model.with_backend(loop=loop),
                            run=jcv.Run(dtype=dt, batch_size=bs))

                cold, warm, samples = timeit(run, repeat=ctx.args.repeat)
                how = "" if paced else " unpaced"
                log(f"  loops {layer} {dt} {loop}{how} chunk {bs}: "
                    f"{warm * 1e3:.0f} ms")
                out.append({
                    "case": f"loops:{layer}:{size}:{n}", "kind": "loops",
                    "layer": layer, "size": size, "steps": ctx.steps, "n": n,
                    "dtype": dt, "loop": loop, "paced": paced,
                    "chunks": {"batch_size": bs},
                    "batched_s": warm, "cold_s": cold, "samples_s": samples,
                    "ms_per_filter": warm / n * 1e3, "gflop": flops / 1e9,
                    "tflops": flops / warm / 1e12,
                })
    return out


def case_channel(ctx: Ctx, layer: str, size: int, n: int) -> list[dict]:
    """``Backend.channel_only`` on vs off, interleaved over ``--rounds``,
    fastest kept, per dtype; with the activation each reaches."""
    import numpy as np

    jcv = ctx.jcv
    out = []
    for dt in ctx.dtypes:
        runs = {}
        for only in (True, False):
            def run(only=only, dt=dt):
                return jcv.filter_patterns(
                    ctx.params, layer, range(n), key=ctx.key, size=size,
                    steps=ctx.steps, model=ctx.model.with_backend(channel_only=only),
                    run=jcv.Run(dtype=dt))

            sync(run())  # compile
            runs[only] = run
        samples = {True: [], False: []}
        for _ in range(ctx.args.rounds):
            for only, run in runs.items():
                samples[only].append(timed(run))
        for only, run in runs.items():
            warm = min(samples[only])
            act = np.asarray(jcv.filter_activation(ctx.params, run(), layer, range(n),
                                                   model=ctx.model))
            flops = fl.ascent_flops(ctx.model, layer, size, ctx.steps, n, only)
            out.append({"case": f"channel:{layer}:{size}:{n}", "kind": "channel",
                        "layer": layer, "size": size, "steps": ctx.steps, "n": n,
                        "dtype": dt, "channel_only": only, "batched_s": warm,
                        "ms_per_filter": warm / n * 1e3, "samples_s": samples[only],
                        "gflop": flops / 1e9, "tflops": flops / warm / 1e12,
                        "mean_activation": float(act.mean())})
            log(f"  channel {layer} {dt} channel_only={only}: {warm * 1e3:.0f} ms")
        out[-2]["speedup_vs_whole_layer"] = out[-1]["batched_s"] / out[-2]["batched_s"]
    return out
