"""Compile the library's GPU and TPU programs without a device, and check them.

Run in its own virtualenv (``scripts/aot-requirements.txt``: one pinned jax, the CUDA
plugin, libtpu for ``--tpu``), never the library's test one::

    python scripts/aot_check.py --gpu                 # H100 SXM and H200
    python scripts/aot_check.py --targets h200        # one of them
    python scripts/aot_check.py --tpu                 # TPU v5e (libtpu 0.0.42.*), slow

For each target, every program is lowered with inputs as ``jax.ShapeDtypeStruct``
on a compile-only device (``jax.experimental.topologies``) and compiled by the
target's own XLA pipeline. The library builds each program for the target's platform,
not the running CPU: the model carries ``jcv.Backend(platform="gpu"|"tpu")``
(:func:`on_platform`) and is bound by the library's own ``jaxconvviz.backend.bind``
through the entry point's own path (:func:`platform_model`; ``channel_only`` from
``jaxconvviz.backend.resolve.resolve_channel_only``).

Library functions it calls: public ``jaxconvviz.featureviz.atlas.lowered_step`` (the
one-device ascent steps), ``jaxconvviz.backend.bind``/``resolve_channel_only``,
``jaxconvviz.backend.memory.filter_memory_bytes``, ``Backend``/``Run``/``Book``/
``Lucid``, ``attribution.cams.cam_batch``, ``attribution.gradients.attribution_batch``;
and these private ones, where nothing public reaches the program or the number:

* ``featureviz._programs.program``/``RenderSpec`` (the 40-step ``ascend`` loop and the
  ``shard_map`` mesh programs: ``lowered_step`` gives one step on one device);
* ``featureviz._engine.plan_layers``/``backend_of`` (the chunk the library plans for
  the target's devices and budget: ``atlas_plan`` plans for this process's devices);
* ``featureviz._plan`` (``filter_mesh``, ``filter_shardings``, ``key_parts``,
  ``ACCELERATOR_MEMORY_FRACTION``, and for the old XLA:CPU rule ``filter_memory_bytes``,
  ``plan_chunks``, ``param_bytes``, ``PARAM_FACTOR``);
* ``attribution._cam_common.compute_model``/``memory_budget_bytes`` and
  ``attribution.cam_perturbation.chunk_for`` (the CAM/IG binding and Score-CAM's
  chunk, as ``jcv.cam``/``jcv.attribution`` do them);
* ``models.predict._activations`` (the compiled forward pass of ``jcv.activations``).

Per program it reports, and checks:

* ``convs``: on GPU every convolution lowered to a cuDNN custom call (no ``convolution``
  op left for a generic emitter); on TPU the native convolutions are counted;
* ``backend``: the bound model's algorithm choices, all resolved for the target's
  platform and none of the XLA:CPU-only ones (:data:`CPU_ONLY`: matmul convolutions,
  Winograd, shifted-slice depthwise, pointwise dot, the custom HWIO VJPs), whole-layer
  ascent (no ``channel_only``);
* ``host``: no host callback, send/recv, infeed/outfeed or host-memory transfer anywhere
  in the program (loops included);
* ``memory``: argument + output + temp bytes from ``memory_analysis()`` (compile-only:
  no cuDNN workspaces), and for the ascent chunks the library's planner picks for the
  target's devices (whose estimate must be
  :func:`jaxconvviz.backend.memory.filter_memory_bytes` for the platform and dtype):
  compiled bytes within 2x of the estimate x chunk and under the budget;
* ``flops``: ``compiled.cost_analysis()`` where the backend gives one (TPU), else XLA's
  cost analysis of the pre-optimisation HLO (GPU; a while body counted once);
  ``bytes``: the fused HBM traffic of the optimised program (operands + results of every
  top-level instruction: fusions, cuDNN calls, copies), for the roofline;
* compile time.

It exits non-zero when a compile or a check fails, and writes
``docs/benchmarks_data/aot_<target>.json`` (``--out`` to change the folder).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

TARGET_DIR = ROOT / "scripts" / "aot_targets"
#: Fraction of device memory a JAX process's allocator may use (XLA's default
#: preallocation, ``XLA_PYTHON_CLIENT_MEM_FRACTION``): ``bytes_limit`` on a real device.
CLIENT_MEM_FRACTION = 0.75
#: Peak rates for the roofline (dense, per chip). H100 SXM and H200 share the compute;
#: float32 convolutions run as TF32 on the tensor cores (XLA:GPU's default precision).
PEAKS = {
    "h100": {"bf16_flops": 989e12, "tf32_flops": 494e12, "f32_flops": 67e12,
             "hbm_bytes_per_s": 3.35e12},
    "h200": {"bf16_flops": 989e12, "tf32_flops": 494e12, "f32_flops": 67e12,
             "hbm_bytes_per_s": 4.8e12},
    "v5e": {"bf16_flops": 197e12, "tf32_flops": 197e12, "f32_flops": 197e12 / 3,
            "hbm_bytes_per_s": 0.819e12},
}
TARGETS = {
    "h100": {"platform": "gpu", "config": "h100_sxm.txtpb", "memory": 84942979072},
    "h200": {"platform": "gpu", "config": "h200.txtpb", "memory": 151397597184},
    "v5e": {"platform": "tpu", "memory": 16 * 2**30},
}
SIZE = 128          # ascent image size (the benchmark atlas)
STEPS = 40          # ascent steps (the book)
CAM_N, CAM_PX = 64, 224
VGG_LAYERS = ("block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2",
              "block3_conv1", "block3_conv2", "block3_conv3", "block4_conv1",
              "block4_conv2", "block4_conv3", "block5_conv1", "block5_conv2",
              "block5_conv3")
ZOO_LAYERS = {
    "resnet50": ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out",
                 "conv5_block3_out"),
    "mobilenet_v2": ("block_3_expand_relu", "block_6_expand_relu",
                     "block_13_expand_relu", "out_relu"),
}
DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16}
DUMP_DIR: Path | None = None   # --dump: the optimised HLO of every program


# ----------------------------------------------------------------- the platform
#: Backend choices that exist for XLA:CPU only (``jaxconvviz/backend/resolve.py``): a
#: GPU/TPU program bound with one of them is the CPU variant (the matmul convolutions,
#: Winograd, the shifted-slice depthwise, the strided-slice pointwise dot, the custom
#: HWIO input-gradient VJPs).
CPU_ONLY = {"conv": ("matmul",), "conv3x3": ("winograd", "by_shape"),
            "depthwise": ("slices",), "pointwise": ("dot",), "conv_vjp": ("custom",)}


def on_platform(model, platform: str):
    """``model`` with ``Backend(platform=platform)``: the library resolves each of its
    "auto" choices for ``platform`` (``"gpu"`` or ``"tpu"``), not the running CPU."""
    if platform not in ("gpu", "tpu"):
        raise ValueError(f"platform must be 'gpu' or 'tpu'; got {platform!r}")
    return model.with_backend(platform=platform)


def platform_model(model, platform: str, dtype=jnp.float32, *, layer: str | None = None,
                   prefer_conv3x3: str | None = None):
    """``(model, channel_only)`` as the library's gradient programs build them on
    ``platform`` for compute ``dtype``: ``Backend(platform=...)`` bound by the library's
    own :func:`jaxconvviz.backend.bind` (``library_gradients=True``), and the ascent's
    ``channel_only`` for ``layer`` from :func:`jaxconvviz.backend.resolve.
    resolve_channel_only` (False without a layer)."""
    from jaxconvviz.backend import bind
    from jaxconvviz.backend.resolve import resolve_channel_only

    m = on_platform(model, platform)
    if jnp.dtype(dtype) != jnp.float32:
        m = m.with_dtype(dtype)
    m = bind(m, library_gradients=True, prefer_conv3x3=prefer_conv3x3)
    only = (False if layer is None
            else resolve_channel_only(m.backend, m.layer(layer).kind))
    return m, only


def backend_record(model, channel_only: bool) -> dict:
    """The bound ``model``'s algorithm choices (and the ascent's ``channel_only``)."""
    b = model.backend
    rec = {f: getattr(b, f) for f in ("conv", "conv3x3", "depthwise", "pointwise",
                                      "conv_vjp", "loop", "platform")}
    rec["channel_only"] = bool(channel_only)
    return rec


def variant_failures(choices: dict, platform: str) -> list[str]:
    """The failed variant checks of :func:`backend_record`'s ``choices``: every one
    resolved for ``platform``, none of :data:`CPU_ONLY`, whole-layer ascent."""
    bad = [f"backend {f}={choices[f]!r} is a CPU-only choice"
           for f, v in CPU_ONLY.items() if choices[f] in v]
    if choices["platform"] != platform:
        bad.append(f"backend resolved for {choices['platform']!r}, not {platform!r}")
    if choices["channel_only"]:
        bad.append("channel_only ascent (the CPU rule) on an accelerator")
    return bad


# ----------------------------------------------------------------- devices
def topology(target: str, n_devices: int = 1):
    """The compile-only devices of ``target`` (``n_devices`` on one host)."""
    from jax.experimental import topologies

    t = TARGETS[target]
    if t["platform"] == "gpu":
        cfg = (TARGET_DIR / t["config"]).read_text()
        return topologies.get_topology_desc(
            platform="cuda", topology=f"1x1x{n_devices}", target_config=cfg).devices
    shape = {1: "1x1", 2: "1x2", 8: "2x4"}[n_devices]
    bounds = {1: (1, 1, 1), 2: (1, 2, 1), 8: (2, 4, 1)}[n_devices]
    return topologies.get_topology_desc(
        platform="tpu", topology_name=f"v5e:{shape}", chip_config_name="default",
        chips_per_host_bounds=bounds, num_slices=1, wrap=(False, False, False)).devices


def budget_bytes(target: str) -> int:
    """The ascent planner's per-device budget on ``target``: the library's
    ``ACCELERATOR_MEMORY_FRACTION`` of an empty device's ``bytes_limit``."""
    from jaxconvviz.featureviz import _plan

    return int(TARGETS[target]["memory"] * CLIENT_MEM_FRACTION
               * _plan.ACCELERATOR_MEMORY_FRACTION)


def sds(tree, sharding):
    """ShapeDtypeStructs of ``tree``'s leaves (shapes or arrays) on ``sharding``."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                       sharding=sharding), tree)


@functools.cache
def _model(name: str, top: bool, px: int | None = None):
    from jaxconvviz.models.vgg import VGG16
    from jaxconvviz.models.zoo import build_application

    if name == "vgg16":
        return VGG16(include_top=top)
    return build_application(name, include_top=top, input_size=px)


def param_structs(model, sharding, hw):
    shapes = jax.eval_shape(lambda: model.init_params(jax.random.key(0), hw=hw))
    return sds(shapes, sharding)


# ----------------------------------------------------------------- HLO analysis
_DT_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
             "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8,
             "c64": 8, "c128": 16, "f8e4m3fn": 1, "f8e5m2": 1, "s4": 1, "u4": 1}
_SHAPE = re.compile(r"\b(" + "|".join(_DT_BYTES) + r")\[([0-9,]*)\]")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s+([\w\-]+)\((.*)$")
_COMP = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s+\(.*\{\s*$")
_FREE = {"parameter", "get-tuple-element", "tuple", "constant", "bitcast",
         "after-all", "partition-id", "replica-id", "opt-barrier"}
HOST_PATTERNS = (r'custom_call_target="[^"]*callback', r"\bsend\(", r"\brecv\(",
                 r"\binfeed\(", r"\boutfeed\(", r"\bS\(5\)", r"MoveToHost",
                 r"MoveToDevice", r"host_compute")


def shape_bytes(text: str) -> int:
    total = 0
    for dt, dims in _SHAPE.findall(text):
        n = 1
        for d in dims.split(","):
            if d:
                n *= int(d)
        total += n * _DT_BYTES[dt]
    return total


def hlo_traffic(text: str) -> dict:
    """Fused HBM traffic of an optimised HLO module's text: operands + results of every
    instruction of the entry and loop/branch computations (fusion internals excluded),
    a loop body counted once; and the counts the checks need."""
    comps: dict[str, list[str]] = {}
    entry, cur = None, None
    for line in text.splitlines():
        m = _COMP.match(line)
        if m:
            cur = m.group(2)
            comps[cur] = []
            if m.group(1):
                entry = cur
            continue
        if cur is not None:
            comps[cur].append(line)
    top, todo = set(), [entry]
    while todo:
        c = todo.pop()
        if c is None or c in top or c not in comps:
            continue
        top.add(c)
        for line in comps[c]:
            for key in ("body", "condition", "true_computation", "false_computation"):
                todo += re.findall(key + r"=%?([\w.\-]+)", line)
            if re.search(r"\s(call|async-start)\(", line):   # command buffers, async
                todo += re.findall(r"(?:to_apply|calls)=%?([\w.\-]+)", line)
            for group in re.findall(r"branch_computations=\{([^}]*)\}", line):
                todo += [g.strip().lstrip("%") for g in group.split(",")]
    bytes_, n_cudnn, n_conv, n_custom = 0, 0, 0, 0
    by_kind: dict[str, int] = {}
    for c in top:
        shapes: dict[str, str] = {}
        for line in comps[c]:
            m = _INSTR.match(line)
            if not m:
                continue
            name, shape, op, rest = m.groups()
            shapes[name] = shape
            if op in _FREE or op == "while" or op == "conditional":
                continue
            out = shape_bytes(shape)
            args = rest.split(")", 1)[0]
            ins = sum(shape_bytes(shapes.get(a.strip().lstrip("%"), ""))
                      for a in args.split(",") if a.strip())
            bytes_ += out + ins
            kind = ("cudnn" if "__cudnn$conv" in line else
                    "fusion" if op == "fusion" else
                    "copy" if op in ("copy", "transpose", "copy-start") else "other")
            by_kind[kind] = by_kind.get(kind, 0) + out + ins
            n_custom += op == "custom-call"
            n_conv += op == "convolution"
            if op in ("call", "async-start"):  # its callee is counted itself
                bytes_ -= out + ins
                by_kind["other"] -= out + ins
    # convolutions inside fusions (TPU fuses them): count in every computation
    n_conv_all = len(re.findall(r"\sconvolution\(", text))
    n_cudnn = len(re.findall(r'custom_call_target="__cudnn\$conv', text))
    host = sorted({p for p in HOST_PATTERNS if re.search(p, text)})
    n_while = len(re.findall(r"\swhile\(", text))
    return {"fused_bytes": bytes_, "fused_bytes_by_kind": by_kind,
            "cudnn_convs": n_cudnn, "convolution_ops": n_conv,
            "convolution_ops_all": n_conv_all, "custom_calls": n_custom,
            "host_transfers": host, "while_loops": n_while}


@functools.cache
def _cpu_client():
    import jax.extend

    return jax.extend.backend.get_backend("cpu")


def unoptimised_cost(lowered) -> dict:
    """XLA's cost analysis of the pre-optimisation HLO (flops, unfused bytes)."""
    from jax._src.lib import xla_client as xc

    mod = lowered.compiler_ir("hlo").get_hlo_module()
    ca = xc._xla.hlo_module_cost_analysis(_cpu_client(), mod)
    return {"flops": float(ca.get("flops", 0.0)),
            "unfused_bytes": float(ca.get("bytes accessed", 0.0))}


def compile_one(name: str, lower) -> dict:
    """Lower (``lower()``: a :class:`jax.stages.Lowered`) and compile one program; the
    record (no checks yet)."""
    t0 = time.perf_counter()
    lowered = lower()
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    mem = compiled.memory_analysis()
    rec = {"program": name, "lower_s": round(t1 - t0, 3),
           "compile_s": round(t2 - t1, 3),
           "argument_bytes": int(mem.argument_size_in_bytes),
           "output_bytes": int(mem.output_size_in_bytes),
           "alias_bytes": int(mem.alias_size_in_bytes),
           "temp_bytes": int(mem.temp_size_in_bytes)}
    rec["total_bytes"] = (rec["argument_bytes"] + rec["output_bytes"]
                          - rec["alias_bytes"] + rec["temp_bytes"])
    cost = None
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - compile-only executables may not have one
        cost = None
    if isinstance(cost, list):
        cost = cost[0] if cost else None
    if cost and cost.get("flops"):
        rec.update(flops=float(cost["flops"]),
                   cost_bytes=float(cost.get("bytes accessed", 0.0)),
                   flops_source="compiled.cost_analysis()")
    else:
        rec.update(unoptimised_cost(lowered), flops_source="pre-optimisation HLO")
    text = compiled.as_text()
    if DUMP_DIR:
        DUMP_DIR.mkdir(parents=True, exist_ok=True)
        (DUMP_DIR / f"{len(list(DUMP_DIR.iterdir())):03d}.hlo.txt").write_text(text)
    rec.update(hlo_traffic(text))
    return rec


def check(rec: dict, platform: str) -> list[str]:
    """The failed checks of one compiled program (empty: all passed)."""
    bad = []
    if platform == "gpu":
        if rec["convolution_ops_all"]:
            bad.append(f"{rec['convolution_ops_all']} convolution op(s) not lowered "
                       f"to cuDNN")
        if not rec["cudnn_convs"]:
            bad.append("no cuDNN convolution in the program")
    elif not rec["convolution_ops_all"]:
        bad.append("no convolution in the program")
    if rec["host_transfers"]:
        bad.append(f"host transfer(s): {rec['host_transfers']}")
    if "backend" in rec:
        bad += variant_failures(rec["backend"], platform)
    return bad


# ----------------------------------------------------------------- the programs
def _ascent_args(prog, params, n: int, *, rows, repl):
    """``(params, state, ids, hyper, t)`` structs of ``prog.step``/``prog.ascend``
    for a chunk of ``n`` filters (the state from ``prog.init``'s shapes)."""
    ids = jax.ShapeDtypeStruct((n,), jnp.int32, sharding=rows)
    kd = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=repl)
    state = sds(jax.eval_shape(prog.init, kd, ids), rows)
    hyper = jax.ShapeDtypeStruct((), jnp.float32, sharding=repl)
    t = jax.ShapeDtypeStruct((), jnp.int32, sharding=repl)
    return params, state, ids, hyper, t


def ascent_style(lucid: bool):
    """The style of the atlas benchmark: 128 px, 40 steps, the pre-ReLU objective."""
    from jaxconvviz.featureviz.styles import Book, Lucid

    return (Lucid if lucid else Book)(size=SIZE, steps=STEPS)


def ascent_program(model_name: str, layer: str, *, dtype, platform: str, devs,
                   n: int, lucid: bool = False, loop: bool = False):
    """The engine's compiled ascent for ``n`` filters of ``layer`` at :data:`SIZE` px
    on ``devs``: one step on one device through the public
    :func:`jaxconvviz.featureviz.atlas.lowered_step`; the whole :data:`STEPS`-step
    loop or a mesh through the engine's cached program (``_programs.program``, as
    ``_programs.run_spec`` builds it). ``(lower thunk, via, bound model,
    channel_only)``."""
    from jaxconvviz.featureviz import _plan, _programs
    from jaxconvviz.featureviz.atlas import lowered_step
    from jaxconvviz.run import Run

    base = _model(model_name, False)
    style = ascent_style(lucid)
    net = SIZE + style.margin
    compute, only = platform_model(base, platform, dtype, layer=layer)
    mesh = None if len(devs) == 1 else _plan.filter_mesh(devs)
    if mesh is None:
        rows = repl = jax.sharding.SingleDeviceSharding(devs[0])
    else:
        rows, repl = _plan.filter_shardings(mesh)
    params = param_structs(base, repl, (net, net))
    if mesh is None and not loop:
        run = Run(dtype=jnp.dtype(dtype).name)
        return (lambda: lowered_step(params, layer, n, style=style, size=SIZE,
                                     model=on_platform(base, platform), run=run),
                "atlas.lowered_step", compute, only)
    spec = _programs.RenderSpec(layer=layer, style=style, steps=STEPS,
                                pre_activation=style.pre_activation)
    m = spec.model_for(compute)
    _, impl = _plan.key_parts(jax.random.key(0))
    prog = _programs.program(spec, m, SIZE, int(m.input_shape[2]), only, mesh, impl)
    args = _ascent_args(prog, params, n, rows=rows, repl=repl)
    fn, kw = (prog.ascend, {"n": STEPS}) if loop else (prog.step, {})
    return (lambda: fn.lower(*args, **kw), "_programs.program", compute, only)


def planned_chunk(model_name: str, layer: str, target: str, devs, *, dtype,
                  lucid: bool = False):
    """The library's own plan (``_engine.plan_layers``, as ``filter_atlas`` plans) for
    all filters of ``layer`` at :data:`SIZE` px on the compile-only ``devs`` of
    ``target``, budget :func:`budget_bytes`, compute ``dtype``: a ``LayerPlan``; and
    ``(per_filter_bytes, n_chunks)`` of the XLA:CPU rule (what the library planned
    for every platform before the calibration)."""
    from jaxconvviz.featureviz import _engine, _plan

    base = _model(model_name, False)
    model = on_platform(base, TARGETS[target]["platform"])
    net = SIZE + ascent_style(lucid).margin
    n = base.channels(layer)
    params = jax.eval_shape(lambda: base.init_params(jax.random.key(0), hw=(net, net)))
    (plan,) = _engine.plan_layers(
        model, params, {layer: np.arange(n, dtype=np.int32)}, net,
        budget_bytes(target), tuple(devs), None, auto=False,
        channel_only=_engine.backend_of(model).channel_only,
        platform=TARGETS[target]["platform"], dtype=jnp.dtype(dtype))
    cpu_per = _plan.filter_memory_bytes(base, layer, net)
    fixed = int(_plan.PARAM_FACTOR * _plan.param_bytes(params))
    _, cpu_chunks = _plan.plan_chunks(n, per_filter_bytes=cpu_per,
                                      budget_bytes=budget_bytes(target),
                                      n_devices=len(devs), fixed_bytes=fixed)
    return plan, cpu_per, cpu_chunks


def cam_program(method: str, *, platform: str, dev, n: int = CAM_N):
    """``attribution.cams.cam_batch`` for ``n`` VGG16 images at 224 px, the model
    bound as ``jcv.cam`` binds it (``_cam_common.compute_model`` with the method
    record's 3x3 preference), Score-CAM's chunk as ``jcv.cam`` picks it."""
    from jaxconvviz.attribution import cam_perturbation, cams
    from jaxconvviz.attribution._cam_common import compute_model, memory_budget_bytes
    from jaxconvviz.attribution.cam_registry import cam_method

    record = cam_method(method)
    base = _model("vgg16", True)
    model = compute_model(on_platform(base, platform), conv3x3=record.conv3x3)
    s = jax.sharding.SingleDeviceSharding(dev)
    layer = model.default_layer
    chunk = 1
    if record.perturbation:
        c = model.output_shape(layer, (CAM_PX, CAM_PX))[-1]
        chunk = cam_perturbation.chunk_for(
            jax.eval_shape(lambda: base.init_params(jax.random.key(0))), model,
            (CAM_PX, CAM_PX), memory_budget_bytes(None), n * c)
    params = param_structs(base, s, (CAM_PX, CAM_PX))
    images = jax.ShapeDtypeStruct((n, CAM_PX, CAM_PX, 3), jnp.float32, sharding=s)
    ci = jax.ShapeDtypeStruct((n,), jnp.int32, sharding=s)
    kw = dict(model=model, layer=layer, method=record, use_top1=False, size=None,
              chunk=chunk, scores=True)
    return (lambda: cams.cam_batch.lower(params, images, ci, **kw), model,
            {"chunk": chunk, "layer": layer})


def ig_program(*, platform: str, dev, n: int = CAM_N, steps: int = 64):
    """``attribution.gradients.attribution_batch`` (Integrated Gradients), the model
    bound as ``jcv.attribution`` binds it (``_cam_common.compute_model``)."""
    from jaxconvviz.attribution import gradients
    from jaxconvviz.attribution._cam_common import compute_model

    base = _model("vgg16", True)
    model = compute_model(on_platform(base, platform))
    s = jax.sharding.SingleDeviceSharding(dev)
    params = param_structs(base, s, (CAM_PX, CAM_PX))
    img = jax.ShapeDtypeStruct((n, CAM_PX, CAM_PX, 3), jnp.float32, sharding=s)
    ci = jax.ShapeDtypeStruct((n,), jnp.int32, sharding=s)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=s)
    noise = jax.ShapeDtypeStruct((), jnp.float32, sharding=s)
    kw = dict(model=model, method="integrated_gradients", base="saliency",
              use_top1=False, steps=steps, samples=1, layer=None)
    return (lambda: gradients.attribution_batch.lower(params, img, ci, img, key, noise,
                                                      **kw), model, {})


def activations_program(*, platform: str, dev, n: int = CAM_N):
    """``models.predict._activations`` for every conv layer of VGG16 (the forward
    pass behind ``jcv.activations``, bound as it binds: ``library_gradients=False``)."""
    from jaxconvviz.backend import bind
    from jaxconvviz.models import predict

    base = _model("vgg16", True)
    model = bind(on_platform(base, platform), library_gradients=False)
    s = jax.sharding.SingleDeviceSharding(dev)
    params = param_structs(base, s, (CAM_PX, CAM_PX))
    img = jax.ShapeDtypeStruct((n, CAM_PX, CAM_PX, 3), jnp.float32, sharding=s)
    return (lambda: predict._activations.lower(params, img, model=model,
                                               layers=tuple(VGG_LAYERS)), model, {})


# ----------------------------------------------------------------- the run
def program_list(target: str, quick: bool) -> list[tuple[str, callable]]:
    """``[(name, thunk)]``: each thunk compiles one program and returns its record."""
    platform = TARGETS[target]["platform"]
    progs = []

    def ascent(model_name, layer, dt, *, lucid=False, loop=False, n_dev=1,
               calib=False):
        def run():
            devs = topology(target, n_dev)
            dtype = jnp.dtype(DTYPES[dt])
            plan, cpu_per, cpu_chunks = planned_chunk(model_name, layer, target, devs,
                                                      dtype=dtype, lucid=lucid)
            lower, via, compute, only = ascent_program(
                model_name, layer, dtype=dtype, platform=platform, devs=devs,
                n=plan.chunk, lucid=lucid, loop=loop)
            rec = compile_one("", lower)
            rec["backend"] = backend_record(compute, only)
            rec.update(model=model_name, layer=layer, dtype=dt, size=SIZE,
                       style="lucid" if lucid else "book", devices=n_dev, via=via,
                       chunk=plan.chunk, n_chunks=plan.n_chunks,
                       n_filters=plan.n_filters,
                       plan_per_filter_bytes=plan.per_filter_bytes,
                       cpu_rule_per_filter_bytes=cpu_per, cpu_rule_n_chunks=cpu_chunks,
                       calibration=calib,
                       steps=STEPS if loop else 1)
            return rec
        kind = ("lucid" if lucid else "book") + ("_loop" if loop else "_step")
        mesh = f":mesh{n_dev}" if n_dev > 1 else ""
        progs.append((f"{kind}:{model_name}:{layer}:{dt}{mesh}", run))

    dts = ("f32", "bf16")
    vgg = VGG_LAYERS if not quick else ("block1_conv2", "block3_conv1", "block5_conv3")
    for dt in dts:
        for layer in vgg:
            ascent("vgg16", layer, dt, calib=True)
    for dt in dts:
        ascent("vgg16", "block5_conv3", dt, loop=True)
        ascent("vgg16", "block4_conv3", dt, lucid=True)
        if not quick:  # lucid programs compile 4-10x slower than the book's
            ascent("vgg16", "block4_conv3", dt, lucid=True, loop=True)
    for n_dev in (2, 8):
        ascent("vgg16", "block5_conv3", "f32", n_dev=n_dev)
        if not quick:
            ascent("vgg16", "block4_conv3", "bf16", lucid=True, n_dev=n_dev)

    def single(name, build):
        def run():
            dev = topology(target)[0]
            lower, model, extra = build(platform=platform, dev=dev)
            rec = compile_one("", lower)
            rec["backend"] = backend_record(model, False)
            rec.update(extra)
            return rec
        progs.append((name, run))

    single(f"gradcam:vgg16:{CAM_N}x{CAM_PX}",
           functools.partial(cam_program, "gradcam"))
    single(f"gradcam++:vgg16:{CAM_N}x{CAM_PX}",
           functools.partial(cam_program, "gradcam++"))
    single(f"scorecam:vgg16:{CAM_N}x{CAM_PX}",
           functools.partial(cam_program, "scorecam"))
    single(f"integrated_gradients:vgg16:{CAM_N}x{CAM_PX}", ig_program)
    single(f"activations:vgg16:{CAM_N}x{CAM_PX}", activations_program)
    zoo = ZOO_LAYERS if not quick else {k: v[-1:] for k, v in ZOO_LAYERS.items()}
    for dt in dts:
        for name, layers in zoo.items():
            for layer in layers:
                ascent(name, layer, dt, calib=True)
    return progs


def memory_checks(recs: list[dict], target: str) -> None:
    """Planner calibration (issue 30 item 4), in place: every calibration step is
    compiled at the chunk the library's planner picks for the target's devices
    (``_engine.plan_layers``), whose per-filter estimate must be
    :func:`jaxconvviz.backend.memory.filter_memory_bytes` for the platform and dtype;
    the compiled bytes per filter (argument + output + temp - aliased - parameters,
    over the chunk) must be within 2x of the estimate, and the whole program's bytes
    under the budget."""
    from jaxconvviz.backend.memory import filter_memory_bytes

    budget = budget_bytes(target)
    platform = TARGETS[target]["platform"]
    for r in recs:
        if "error" in r or "plan_per_filter_bytes" not in r:
            continue
        dt = {"f32": "float32", "bf16": "bfloat16"}[r["dtype"]]
        model = _model(r["model"], False)
        net = SIZE + ascent_style(r["style"] == "lucid").margin
        est = filter_memory_bytes(model, r["layer"], net, platform=platform, dtype=dt)
        bad = r.setdefault("failed", [])
        if r["plan_per_filter_bytes"] != est:
            bad.append(f"the planner's estimate {r['plan_per_filter_bytes']} B/filter "
                       f"is not the calibrated {est} B/filter for {platform} {dt}")
        if not r.get("calibration"):
            continue
        per_xla = (r["temp_bytes"] + r["argument_bytes"] + r["output_bytes"]
                   - r["alias_bytes"] - r["param_bytes"]) / r["chunk"]
        chunk = r["chunk"]
        compiled = r["total_bytes"]
        ratio = est / max(per_xla, 1)
        r.update(xla_per_filter_bytes=int(per_xla), estimate_per_filter_bytes=est,
                 estimate_over_compiled=round(ratio, 3), budget_bytes=budget)
        if not 0.5 <= ratio <= 2.0:
            bad.append(f"estimate {est} B/filter is {ratio:.2f}x the compiled "
                       f"{per_xla:.0f} B/filter (outside 2x)")
        if compiled > budget:
            bad.append(f"planned chunk {chunk} compiles to {compiled:.3g} B, "
                       f"over the budget {budget}")


def roofline(recs: list[dict], target: str) -> dict:
    """Predicted seconds of the 4,224-filter VGG16 atlas (every conv layer, all
    filters, :data:`STEPS` steps at :data:`SIZE` px) per dtype, and of Grad-CAM on
    64 images: per program ``max(flops / peak, fused bytes / bandwidth)``."""
    pk = PEAKS[target]
    out = {"peaks": pk, "f32_compute": "tf32_flops (XLA:GPU's default precision "
           "runs float32 convolutions as TF32 on the tensor cores)"}
    for dt in ("f32", "bf16"):
        peak = pk["bf16_flops"] if dt == "bf16" else pk["tf32_flops"]
        layers, total, total_flops = {}, 0.0, 0.0
        for r in recs:
            if (r.get("model") != "vgg16" or r.get("style") != "book"
                    or r.get("dtype") != dt or r.get("steps") != 1
                    or r.get("devices") != 1 or "error" in r):
                continue
            calls = r["n_chunks"] * STEPS
            tc, tm = r["flops"] / peak, r["fused_bytes"] / pk["hbm_bytes_per_s"]
            s = calls * max(tc, tm)
            layers[r["layer"]] = {"s": round(s, 4), "compute_s": round(calls * tc, 4),
                                  "memory_s": round(calls * tm, 4),
                                  "bound": "compute" if tc >= tm else "memory"}
            total += s
            total_flops += calls * r["flops"]
        if len(layers) == len(VGG_LAYERS):
            out[f"atlas_{dt}"] = {"s": round(total, 3),
                                  "tflop": round(total_flops / 1e12, 1),
                                  "per_layer": layers}
    for r in recs:
        for prefix, key in (("gradcam:", "gradcam_64"),
                            ("activations:", "activations_64")):
            if r["program"].startswith(prefix) and "error" not in r:
                tc = r["flops"] / pk["tf32_flops"]
                tm = r["fused_bytes"] / pk["hbm_bytes_per_s"]
                out[key] = {"s": round(max(tc, tm), 5), "compute_s": round(tc, 5),
                            "memory_s": round(tm, 5), "tflop": r["flops"] / 1e12}
    return out


def run_target(target: str, args) -> tuple[dict, int]:
    platform = TARGETS[target]["platform"]
    recs, n_bad = [], 0
    t0 = time.perf_counter()
    only = re.compile(args.only) if args.only else None
    for name, thunk in program_list(target, args.quick):
        if only and not only.search(name):
            continue
        try:
            rec = thunk()
            rec["program"] = name
            rec["failed"] = check(rec, platform)
            if "model" in rec:
                model = _model(rec["model"], False)
                p = jax.eval_shape(lambda m=model: m.init_params(
                    jax.random.key(0), hw=(SIZE, SIZE)))
                rec["param_bytes"] = int(sum(np.prod(a.shape) * a.dtype.itemsize
                                             for a in jax.tree.leaves(p)))
        except Exception as e:  # noqa: BLE001 - reported, and the run fails
            rec = {"program": name, "error": f"{type(e).__name__}: {e}"[:2000],
                   "failed": ["compile failed"]}
            if args.verbose:
                traceback.print_exc()
        recs.append(rec)
        _say(target, rec)
    try:
        memory_checks(recs, target)
    except Exception as e:  # noqa: BLE001
        recs.append({"program": "memory_checks", "error": repr(e)[:2000],
                     "failed": ["memory checks failed"]})
    n_bad = sum(bool(r.get("failed")) for r in recs)
    doc = {"target": target, "platform": platform,
           "device_kind": str(topology(target)[0].device_kind),
           "jax": jax.__version__, "budget_bytes": budget_bytes(target),
           "size": SIZE, "steps": STEPS, "wall_s": round(time.perf_counter() - t0, 1),
           "n_programs": len(recs), "n_failed": n_bad,
           "roofline": roofline(recs, target) if target in PEAKS else None,
           "programs": recs}
    return doc, n_bad


def _say(target: str, r: dict) -> None:
    if "error" in r:
        print(f"[{target}] {r['program']}: FAILED {r['error'][:300]}", flush=True)
        return
    mark = "ok" if not r["failed"] else "FAILED " + "; ".join(r["failed"])
    print(f"[{target}] {r['program']}: {mark}; compile {r['compile_s']:.1f} s, "
          f"args {r['argument_bytes'] / 2**20:.0f} MiB + temp "
          f"{r['temp_bytes'] / 2**20:.0f} MiB, {r['flops'] / 1e12:.3g} TFLOP, "
          f"{r['fused_bytes'] / 2**30:.3g} GiB traffic, cuDNN {r['cudnn_convs']}, "
          f"chunk {r.get('chunk', '-')}", flush=True)


MEASURED_H100 = ROOT / "docs" / "benchmarks_data" / "h100_atlas_run1.json"


def markdown_table(folder: Path) -> str:
    """The roofline table of docs/roofline.md from the committed JSONs: predicted
    seconds per VGG16 layer and in all (H100, H200; f32 as TF32, bf16) beside the
    one H100 measurement (``h100_atlas_run1.json``)."""
    docs = {t: json.loads((folder / f"aot_{t}.json").read_text())
            for t in ("h100", "h200") if (folder / f"aot_{t}.json").exists()}
    meas = {}
    if MEASURED_H100.exists():
        for c in json.loads(MEASURED_H100.read_text()).get("cases", []):
            meas[{"float32": "f32", "bfloat16": "bf16"}[c["dtype"]]] = c
    rows = ["| layer | dtype | H100 predicted s | H100 measured s | measured / "
            "predicted | H200 predicted s | bound (H100 / H200) |",
            "|---|---|---:|---:|---:|---:|---|"]
    for dt in ("f32", "bf16"):
        a100 = docs["h100"]["roofline"][f"atlas_{dt}"]
        a200 = docs.get("h200", docs["h100"])["roofline"][f"atlas_{dt}"]
        m = meas.get(dt, {})
        for layer in VGG_LAYERS:
            p1, p2 = a100["per_layer"][layer], a200["per_layer"][layer]
            ms = m.get("per_layer", {}).get(layer, {}).get("s")
            rows.append(f"| {layer} | {dt} | {p1['s']:.3f} | "
                        + (f"{ms:.3f} | {ms / p1['s']:.1f}x" if ms else "- | -")
                        + f" | {p2['s']:.3f} | {p1['bound']} / {p2['bound']} |")
        ms = m.get("batched_s")
        rows.append(f"| **atlas, 4,224 filters** | **{dt}** | **{a100['s']:.2f}** | "
                    + (f"**{ms:.1f}** | **{ms / a100['s']:.1f}x**" if ms else "- | -")
                    + f" | **{a200['s']:.2f}** | |")
    # measured on the same H100 (docs/benchmarks.md): Grad-CAM directly timed
    # (TF32 default), activations by the benchmark (h100_filters_gradcam_run1.json)
    for key, what, ms in (("gradcam_64", "Grad-CAM, 64 images 224 px", 9.8),
                          ("activations_64", "activations, 64 images 224 px", 8.98)):
        g1 = docs["h100"]["roofline"].get(key)
        g2 = docs.get("h200", docs["h100"])["roofline"].get(key)
        if g1:
            bound = "compute" if g1["compute_s"] >= g1["memory_s"] else "memory"
            rows.append(f"| {what} | f32 | {g1['s'] * 1e3:.1f} ms | {ms} ms | "
                        f"{ms / (g1['s'] * 1e3):.1f}x | {g2['s'] * 1e3:.1f} ms | "
                        f"{bound} |")
    return "\n".join(rows)


def memory_table(folder: Path, target: str = "h100") -> str:
    """MiB per filter of every calibration step in ``aot_<target>.json``: XLA:GPU's
    buffer assignment, the calibrated estimate (what the library plans with), and
    the XLA:CPU rule the library used on every platform before (rows of the
    docs/roofline.md table)."""
    doc = json.loads((folder / f"aot_{target}.json").read_text())
    by = {}
    for r in doc["programs"]:
        if r.get("calibration") and "xla_per_filter_bytes" in r:
            by.setdefault((r["model"], r["layer"]), {})[r["dtype"]] = r
    rows = []
    for (model, layer), d in by.items():
        f, b = d.get("f32"), d.get("bf16")
        cell = lambda r, k: f"{r[k] / 2**20:.1f}" if r else "-"  # noqa: E731
        rows.append(f"| {model} {layer} | {cell(f, 'xla_per_filter_bytes')} | "
                    f"{cell(f, 'estimate_per_filter_bytes')} | "
                    f"{cell(b, 'xla_per_filter_bytes')} | "
                    f"{cell(b, 'estimate_per_filter_bytes')} | "
                    f"{cell(f or b, 'cpu_rule_per_filter_bytes')} |")
    return "\n".join(rows)


def rescore(path: Path) -> tuple[dict, int]:
    """Re-run the checks, the planner calibration and the roofline on a written
    JSON (after a change of the estimator or the peaks): nothing is compiled."""
    doc = json.loads(path.read_text())
    target, recs = doc["target"], doc["programs"]
    for r in recs:
        if "error" not in r:
            r["failed"] = check(r, doc["platform"])
    memory_checks(recs, target)
    doc["roofline"] = roofline(recs, target)
    doc["n_failed"] = sum(bool(r.get("failed")) for r in recs)
    return doc, doc["n_failed"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gpu", action="store_true", help="H100 SXM and H200 (XLA:GPU)")
    p.add_argument("--tpu", action="store_true", help="TPU v5e (needs libtpu)")
    p.add_argument("--targets", help="comma-separated subset of h100,h200,v5e")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks_data"))
    p.add_argument("--quick", action="store_true",
                   help="3 VGG16 layers, one layer per zoo model, the lucid step "
                   "only (no lucid loop or sharded lucid step)")
    p.add_argument("--only", help="regex on program names")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--dump", help="write each program's optimised HLO text here")
    p.add_argument("--rescore", action="store_true",
                   help="recompute the checks, calibration and roofline of the "
                   "targets' JSONs in --out without compiling")
    p.add_argument("--table", action="store_true",
                   help="print the roofline table of docs/roofline.md from the "
                   "JSONs in --out, and exit (nothing compiled)")
    args = p.parse_args(argv)
    if args.table:
        print(markdown_table(Path(args.out)) + "\n\n" + memory_table(Path(args.out)))
        return 0
    # before any backend starts: the compile-only devices come on top of the CPU,
    # and the library's XLA:CPU compiler options must not reach a GPU/TPU compile
    jax.config.update("jax_platforms", os.environ.get("JAX_PLATFORMS") or "cpu")
    os.environ["JAXCONVVIZ_XLA_OPTIONS"] = "off"
    global DUMP_DIR
    DUMP_DIR = Path(args.dump) if args.dump else None
    targets = [t for t in (["h100", "h200"] if args.gpu else [])
               + (["v5e"] if args.tpu else [])]
    if args.targets:
        targets = [t for t in args.targets.split(",") if t]
    if not targets:
        p.error("name --gpu and/or --tpu (or --targets)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n_bad = 0
    for target in targets:
        if args.rescore:
            doc, bad = rescore(out / f"aot_{target}.json")
        else:
            doc, bad = run_target(target, args)
        n_bad += bad
        path = out / f"aot_{target}.json"
        path.write_text(json.dumps(doc, indent=1) + "\n")
        rl = doc["roofline"] or {}
        pred = ", ".join(f"{k} {v['s']:.3g} s" for k, v in rl.items()
                         if isinstance(v, dict) and "s" in v)
        print(f"[{target}] {doc['n_programs']} programs, {bad} failed, "
              f"{doc['wall_s']:.0f} s; predicted: {pred}; wrote {path}", flush=True)
    print(f"aot_check: {len(targets)} target(s), {n_bad} failed program(s), "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main())
