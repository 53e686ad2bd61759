"""scripts/benchmark.py: the --smoke run CI does (a subprocess, JSON checked)
and the analytic FLOP count by hand."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import jaxconvviz as jcv

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "benchmark.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("jcv_benchmark", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_conv_flops_by_hand():
    b = _bench_module()
    m = jcv.VGG16(include_top=False)
    # block1_conv2 at 10 px: 10*10*(3*3*3*64 + 3*3*64*64)
    assert b.conv_macs(m, "block1_conv2", 10) == 100 * (1728 + 36864)
    # block3_conv1 at 64 px: 64^2 * 38592 + 32^2 * (73728 + 147456) + 16^2 * 294912
    macs = 4096 * 38592 + 1024 * 221184 + 256 * 294912
    assert b.conv_macs(m, "block3_conv1", 64) == macs == 460_062_720
    # pools add nothing; a pool layer counts the convs below it
    assert b.conv_macs(m, "block3_pool", 64) == b.conv_macs(m, "block3_conv3", 64)
    # forward + input gradient, 2 FLOP per multiply-add, steps x filters
    assert b.ascent_flops(m, "block3_conv1", 64, 40, 64) == 4.0 * macs * 40 * 64
    # the whole VGG16 conv stack at 224 px: the textbook 15.35 G multiply-adds
    assert b.conv_macs(m, "block5_conv3", 224) == 15_346_630_656
    # computing one channel of block3_conv1: its 294912 per pixel become 1152
    assert b.ascent_flops(m, "block3_conv1", 64, 40, 64, channel_only=True) == \
        4.0 * (macs - 256 * (294912 - 1152)) * 40 * 64


def test_parse_case():
    b = _bench_module()
    assert b.parse_case("filters:block3_conv1:64:16") == (
        "filters", ["block3_conv1", 64, 16])
    with pytest.raises(ValueError, match="unknown case"):
        b.parse_case("nope:1")


def test_smoke_run_emits_consistent_json(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=600,
                       cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads(p.stdout)
    assert doc == json.loads(out.read_text())
    assert doc["smoke"] is True and doc["steps"] == 3
    assert doc["device"]["platform"] == "cpu" and doc["jax_version"]
    kinds = {c["kind"] for c in doc["cases"]}
    assert kinds == {"filters", "atlas", "gradcam", "activations", "loops",
                     "channel"}
    for c in doc["cases"]:
        assert "error" not in c, c
        assert c["batched_s"] > 0
        if c["kind"] not in ("loops", "channel"):
            assert c["baseline_s"] > 0
            assert c["speedup"] == pytest.approx(c["baseline_s"] / c["batched_s"])
        assert c["tflops"] == pytest.approx(c["gflop"] / c["batched_s"] / 1e3) \
            if "gflop" in c else True
        assert c.get("peak_bytes") is None  # XLA:CPU has no memory stats
    f = next(c for c in doc["cases"] if c["kind"] == "filters")
    m = jcv.tiny_vgg16(include_top=False)
    b = _bench_module()
    # the library computes only each filter's channel on CPU; the notes' loop
    # the whole layer
    assert f["channel_only"] is True
    assert f["gflop"] * 1e9 == pytest.approx(
        b.ascent_flops(m, f["layer"], f["size"], 3, f["n"], channel_only=True))
    assert f["baseline_gflop"] * 1e9 == pytest.approx(
        b.ascent_flops(m, f["layer"], f["size"], 3, f["n"]))
    assert f["mean_activation"] > 0
    on, off = (c for c in doc["cases"] if c["kind"] == "channel")
    assert (on["channel_only"], off["channel_only"]) == (True, False)
    assert on["speedup_vs_whole_layer"] == pytest.approx(
        off["batched_s"] / on["batched_s"])
    assert on["mean_activation"] == pytest.approx(off["mean_activation"], rel=1e-3)
    # one round in --smoke; the reported time is the fastest sample
    assert f["rounds"] == 1 and f["batched_s"] == min(f["samples_s"]["batched"])
    assert f["baseline_ms_per_filter"] == pytest.approx(
        1e3 * min(f["samples_s"]["jax_notes_per_filter"]))
    assert f["conv_impl"] == "xla" and f["dtype"] == "float32"
    a = next(c for c in doc["cases"] if c["kind"] == "atlas")
    assert a["all_finite"] and a["n"] == 8 and set(a["per_layer"]) == {
        "block1_conv1", "block1_conv2"}
    g = next(c for c in doc["cases"] if c["kind"] == "gradcam")
    assert g["batched_equals_loop_max_abs"] < 1e-5
    # Grad-CAM: the convs' forward only (2 FLOP per multiply-add)
    assert g["gflop"] * 1e9 == pytest.approx(
        2.0 * b.conv_macs(jcv.tiny_vgg16(), "block5_conv3", g["size"]) * g["n"])
