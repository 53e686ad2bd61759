"""Issue 30 without a device: the calibrated per-filter memory estimate
(jaxconvviz.backend.memory) against XLA:GPU's compiled bytes committed by
scripts/aot_check.py, the script's HLO accounting on a hand-written module,
and scripts/gpu_probe.py's predictions (CPU only; the CUDA plugin is never
needed here)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.backend import memory
from jaxconvviz.featureviz import _plan
from jaxconvviz.models.zoo import build_application

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "benchmarks_data"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cpu_estimate_is_the_library_rule_unchanged():
    m = jcv.VGG16(include_top=False)
    for layer in ("block1_conv1", "block3_conv2", "block5_conv3"):
        # the XLA:CPU rule by hand: 5 x the float32 activations + 4 float32 images
        elems = sum(int(np.prod(m.output_shape(s.name, (64, 64))))
                    for s in m.layers[: m.layer_index(layer) + 1])
        want = int(5.0 * 4 * elems + 4 * 4 * 64 * 64 * 3)
        for dt in ("float32", "bfloat16"):
            assert memory.filter_memory_bytes(m, layer, 64, platform="cpu",
                                              dtype=dt) == want
            assert _plan.filter_memory_bytes(m, layer, 64, platform="cpu",
                                             dtype=dt) == want
        assert _plan.filter_memory_bytes(m, layer, 64) == want


def test_planner_uses_the_calibrated_estimate_of_the_devices_platform():
    """featureviz's planner (check_fits, _engine.plan_layers) asks
    backend.memory for the platform of the devices it plans and the compute
    dtype; CUDA/ROCm device platforms are "gpu", unknown plugins the CPU rule."""
    from jaxconvviz.featureviz import _engine

    m = jcv.VGG16(include_top=False)
    for plat, want in (("gpu", "gpu"), ("cuda", "gpu"), ("rocm", "gpu"),
                       ("tpu", "tpu"), ("cpu", "cpu"), ("METAL", "cpu")):
        assert _plan.memory_platform(plat) == want
        for dt in ("float32", "bfloat16"):
            assert _plan.filter_memory_bytes(
                m, "block5_conv3", 128, platform=plat, dtype=dt) == \
                memory.filter_memory_bytes(m, "block5_conv3", 128, platform=want,
                                           dtype=dt)

    class Dev:  # a device as the planner reads it
        def __init__(self, platform):
            self.platform, self.process_index = platform, 0

    params = jax.eval_shape(lambda: m.init_params(jax.random.key(0)))
    fsel = {"block5_conv3": np.arange(512, dtype=np.int32)}
    for plat, dt in (("gpu", "bfloat16"), ("gpu", "float32"), ("cpu", "float32")):
        (plan,) = _engine.plan_layers(m, params, fsel, 128, 10**12, (Dev(plat),),
                                      None, auto=False, channel_only=False,
                                      platform=plat, dtype=dt)
        assert plan.per_filter_bytes == memory.filter_memory_bytes(
            m, "block5_conv3", 128, platform=plat, dtype=dt)


def test_gpu_binding_has_no_cpu_only_choice():
    """scripts/aot_check.py builds each program with Backend(platform=...) bound
    by the library (no device needed): GPU/TPU get the cuDNN/XLA choices, the
    CPU its own, which the script's variant check rejects."""
    aot = _script("aot_check")
    m = jcv.VGG16(include_top=False)
    for plat in ("gpu", "tpu"):
        for dt in (jax.numpy.float32, jax.numpy.bfloat16):
            bound, only = aot.platform_model(m, plat, dt, layer="block3_conv1")
            assert aot.variant_failures(aot.backend_record(bound, only), plat) == []
    zoo = build_application("mobilenet_v2", include_top=False)
    bound, only = aot.platform_model(zoo, "gpu", layer="block_6_expand_relu")
    assert bound.backend.depthwise == "grouped" and bound.backend.pointwise == "conv"
    cpu = m.with_backend(platform="cpu")
    from jaxconvviz.backend import bind
    from jaxconvviz.backend.resolve import resolve_channel_only

    b = bind(cpu, library_gradients=True)
    bad = aot.variant_failures(aot.backend_record(
        b, resolve_channel_only(b.backend, "conv")), "gpu")
    assert any("conv_vjp='custom'" in x for x in bad)
    assert any("channel_only" in x for x in bad)


def test_gpu_estimate_by_hand_for_block1_conv2():
    # stored: block1_conv1 + block1_conv2 outputs, 128 x 128 x 64 each
    m = jcv.VGG16(include_top=False)
    elems = 2 * 128 * 128 * 64
    assert memory.stored_elements(m, "block1_conv2", 128) == elems
    # the first conv reads the image: its own output counts half
    assert memory.stored_elements(m, "block1_conv1", 128) == elems / 4
    per = (memory.ACTIVATION_FACTOR["bfloat16"] * 2 * elems
           + memory.IMAGE_COPIES * 4 * 128 * 128 * 3)
    got = memory.filter_memory_bytes(m, "block1_conv2", 128, platform="gpu",
                                     dtype="bfloat16")
    assert got == int(per * (1 + memory.CUDNN_WORKSPACE_MARGIN))
    f32 = memory.filter_memory_bytes(m, "block1_conv2", 128, platform="gpu",
                                     dtype="float32")
    assert 1.6 < f32 / got < 2.0  # activations halve, the float32 images stay


@pytest.mark.parametrize("target", ["h100", "h200", "v5e"])
def test_estimate_within_2x_of_compiled_and_plan_under_budget(target):
    """Every calibration step of the committed compile-only run (GPU: each VGG16
    conv layer at 128 px, four layers each of ResNet50 and MobileNetV2, f32 and
    bf16, compiled at the chunk the calibrated planner picks; TPU: three VGG16
    layers): the estimate is 1x-2x XLA's bytes per filter, and the compiled
    chunk's bytes are under the budget."""
    doc = json.loads((DATA / f"aot_{target}.json").read_text())
    recs = [r for r in doc["programs"] if r.get("calibration")]
    if doc["platform"] == "gpu":
        assert {r["layer"] for r in recs if r["model"] == "vgg16"} == set(
            jcv.VGG16(include_top=False).conv_layers)
        assert {r["model"] for r in recs} == {"vgg16", "resnet50", "mobilenet_v2"}
    assert {r["dtype"] for r in recs} == {"f32", "bf16"}
    models = {"vgg16": jcv.VGG16(include_top=False)}
    for r in recs:
        assert "error" not in r, r
        if r["model"] not in models:
            models[r["model"]] = build_application(
                r["model"], include_top=False)
        dt = {"f32": "float32", "bf16": "bfloat16"}[r["dtype"]]
        est = memory.filter_memory_bytes(models[r["model"]], r["layer"], r["size"],
                                         platform=doc["platform"], dtype=dt)
        per = (r["temp_bytes"] + r["argument_bytes"] + r["output_bytes"]
               - r["alias_bytes"] - r["param_bytes"]) / r["chunk"]
        assert 1.0 <= est / per <= 2.0, (r["program"], est, per)
        assert r["total_bytes"] <= doc["budget_bytes"], r["program"]
        assert r["chunk"] * r["n_chunks"] >= r["n_filters"]


def test_hlo_accounting_on_a_hand_written_module():
    aot = _script("aot_check")
    text = """HloModule m

%fused_add (p0: f32[4,8]) -> f32[4,8] {
  %p0 = f32[4,8]{1,0} parameter(0)
  ROOT %a = f32[4,8]{1,0} add(%p0, %p0)
}

%body (arg: (s32[], f32[4,8])) -> (s32[], f32[4,8]) {
  %arg = (s32[], /*index=1*/f32[4,8]) parameter(0)
  %x = f32[4,8]{1,0} get-tuple-element(%arg), index=1
  %f = f32[4,8]{1,0} fusion(%x), kind=kLoop, calls=%fused_add
  %c = (f32[4,8]{1,0}, u8[0]{0}) custom-call(%f, %x), custom_call_target=\
"__cudnn$convForward"
  ROOT %t = (s32[], f32[4,8]) tuple(%i, %f)
}

ENTRY %main (x: f32[4,8]) -> f32[4,8] {
  %x = f32[4,8]{1,0} parameter(0)
  %w = (s32[], f32[4,8]) while(%t0), condition=%cond, body=%body
  ROOT %y = f32[4,8]{1,0} copy(%x)
}
"""
    r = aot.hlo_traffic(text)
    # fusion 128 in + 128 out; custom call 2 x 128 in + 128 out; copy 128 + 128
    assert r["fused_bytes"] == 256 + 384 + 256
    assert r["cudnn_convs"] == 1 and r["convolution_ops_all"] == 0
    assert r["host_transfers"] == [] and r["while_loops"] == 1
    assert aot.hlo_traffic(text.replace("copy(%x)", "outfeed(%x)"))["host_transfers"]
    assert aot.shape_bytes("(bf16[2,3]{1,0}, s32[5])") == 12 + 20


def test_gpu_probe_predictions_run_on_cpu():
    probe = _script("gpu_probe")
    assert probe.gpu_key("NVIDIA H200 141GB HBM3e") == "h200"
    assert probe.gpu_key("NVIDIA H100 80GB HBM3") == "h100"
    assert probe.gpu_key("cpu") is None and probe.predicted(None) == {}
    for gpu in ("h100", "h200"):
        rl = json.loads((DATA / f"aot_{gpu}.json").read_text())["roofline"]
        pred = probe.predicted(gpu)
        assert pred["atlas128_bf16"] == rl["atlas_bf16"]["s"]
        assert pred["atlas128_f32"] == rl["atlas_f32"]["s"]
        assert pred["gradcam"] == rl["gradcam_64"]["s"]
        per_layer = sum(v["s"] for v in rl["atlas_f32"]["per_layer"].values())
        assert np.isclose(per_layer, rl["atlas_f32"]["s"], rtol=1e-3)
    h100, h200 = probe.predicted("h100"), probe.predicted("h200")
    # the same compute, more bandwidth
    assert h200["atlas128_bf16"] <= h100["atlas128_bf16"]
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_probe.py"),
                        "--predicted", "h200"], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "atlas128_bf16: predicted" in p.stdout
