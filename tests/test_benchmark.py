"""benchmarks (the checkout's top-level package, not in the wheel): FLOP
counts by hand, the record schema (failed cases recorded, environment
fields, per-case memory), the dense-peak table, targets, and the --smoke runs
of scripts/benchmark.py and scripts/gpu_probe.py (subprocesses, JSON
checked)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import pytest

import jaxconvviz as jcv
from benchmarks import cases as C
from benchmarks import flops as fl
from benchmarks import records as R
from benchmarks.targets import evaluate
from benchmarks.timing import CaseMemory, CompileCounter

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
STAMP = ("device_kind", "platform", "jax", "jaxlib", "precision", "git_commit",
         "git_dirty", "dtype", "chunks", "memory", "case", "kind")


def _env(**kw):
    return {"platform": "cpu", "device_kind": "cpu", "jax": jax.__version__,
            "jaxlib": "x", "precision": "default",
            "git": {"commit": "abc", "dirty": False}, **kw}


def test_conv_flops_by_hand():
    m = jcv.VGG16(include_top=False)
    # block1_conv2 at 10 px: 10*10*(3*3*3*64 + 3*3*64*64)
    assert fl.conv_macs(m, "block1_conv2", 10) == 100 * (1728 + 36864)
    # block3_conv1 at 64 px: 64^2 * 38592 + 32^2 * (73728 + 147456) + 16^2 * 294912
    macs = 4096 * 38592 + 1024 * 221184 + 256 * 294912
    assert fl.conv_macs(m, "block3_conv1", 64) == macs == 460_062_720
    assert fl.conv_macs(m, "block3_pool", 64) == fl.conv_macs(m, "block3_conv3", 64)
    # forward + input gradient, 2 FLOP per multiply-add, steps x filters
    assert fl.ascent_flops(m, "block3_conv1", 64, 40, 64) == 4.0 * macs * 40 * 64
    # the whole VGG16 conv stack at 224 px: the textbook 15.35 G multiply-adds
    assert fl.conv_macs(m, "block5_conv3", 224) == 15_346_630_656
    # one channel of block3_conv1: its 294912 per pixel become 1152
    assert fl.ascent_flops(m, "block3_conv1", 64, 40, 64, channel_only=True) == \
        4.0 * (macs - 256 * (294912 - 1152)) * 40 * 64
    assert fl.forward_flops(m, 224, 2) == 2.0 * 15_346_630_656 * 2


@pytest.mark.slow
def test_xla_step_count_is_the_hand_count_within_padding(tiny_model, tiny_params_notop):
    """XLA's count of one step of the library's program is the hand count of
    the convolutions it runs, within 10% ('same' padding's zero taps fewer,
    elementwise work more): forward + input gradient of every conv; with the
    pre-ReLU objective (linear in the target conv's output) XLA drops the
    target conv's forward, whose value the step does not use."""
    m, p = tiny_model, tiny_params_notop
    # tiny VGG16 at 16 px: block1_conv1 16*16*27*4, block1_conv2 16*16*36*4 MACs
    c1, c2 = 16 * 16 * 27 * 4, 16 * 16 * 36 * 4
    assert fl.conv_macs(m, "block1_conv2", 16) == c1 + c2
    post = fl.ascent_step_xla_flops(p, m, "block1_conv2", 16, 4, pre_activation=False)
    assert 0.9 < post / (2 * 2 * (c1 + c2) * 4) < 1.1
    pre = fl.ascent_step_xla_flops(p, m, "block1_conv2", 16, 4, pre_activation=True)
    assert 0.9 < pre / (2 * (2 * c1 + c2) * 4) < 1.1
    # one output channel of the target conv: 16*16*36 MACs in its gradient
    only = fl.ascent_step_xla_flops(p, m, "block1_conv2", 16, 4, channel_only=True,
                                    pre_activation=True)
    assert 0.9 < only / (2 * (2 * c1 + 16 * 16 * 36) * 4) < 1.1


def test_xla_counts_a_while_loop_body_once():
    """Why the ascent is counted from its one-step program: XLA's cost
    analysis of a fori_loop does not multiply by the trip count."""
    def loop(x, n):
        return jax.lax.fori_loop(0, n, lambda _, y: y @ x, x)

    x = jax.numpy.ones((8, 8))
    one = fl.jit_xla_flops(lambda x: x @ x, x)
    assert one == 2 * 8 ** 3
    for n in (2, 8):  # the body (+ the loop counter's few ops), not n bodies
        assert one <= fl.jit_xla_flops(lambda x, n=n: loop(x, n), x) < 1.1 * one


def test_parse_case():
    assert C.parse_case("filters:block3_conv1:64:16") == (
        "filters", ["block3_conv1", 64, 16])
    with pytest.raises(ValueError, match="unknown case kind 'nope'.*atlas"):
        C.parse_case("nope:1")


def test_failed_case_is_recorded_with_its_error(monkeypatch):
    def boom(ctx, n):
        raise RuntimeError(f"out of memory at {n}")

    monkeypatch.setitem(C.CASES, "boom", boom)
    ctx = SimpleNamespace(env=_env())
    (rec,) = C.run_case(ctx, "boom:7")
    assert rec["error"] == "RuntimeError: out of memory at 7"
    assert rec["case"] == "boom:7" and rec["kind"] == "boom"
    assert any("out of memory" in line for line in rec["traceback"])
    assert all(k in rec for k in STAMP) and rec["git_commit"] == "abc"
    (bad,) = C.run_case(ctx, "nope:1")
    assert bad["error"].startswith("ValueError: unknown case kind 'nope'")


def test_memory_on_cpu_is_not_available_never_rss():
    with CaseMemory() as m:
        jax.numpy.ones(10).block_until_ready()
    rec = m.record()
    assert rec["peak_bytes"] is None and rec["source"] == "not available"
    assert "RSS" in rec["note"]


def test_memory_per_case_from_the_high_water_mark():
    m = CaseMemory()
    m.before, m.after = {"peak_bytes_in_use": 100}, {"peak_bytes_in_use": 250}
    assert m.record()["peak_bytes"] == 250 and m.record()["per_case"]
    m.after = {"peak_bytes_in_use": 100}  # did not rise: only an upper bound
    r = m.record()
    assert r["peak_bytes"] is None and r["at_most_bytes"] == 100
    m.own_process = True  # one case per process: the mark is the case's own
    assert m.record()["peak_bytes"] == 100


def test_compile_counter_counts_compiles_not_cached_calls():
    f = jax.jit(lambda x: x * 3 + 1)
    x = jax.numpy.ones(17).block_until_ready()
    with CompileCounter() as c:
        f(x).block_until_ready()
    assert c.count == 1
    with CompileCounter() as c:
        f(x).block_until_ready()
    assert c.count == 0


def test_peaks_and_mfu():
    h200 = _env(platform="gpu", device_kind="NVIDIA H200")
    r = R.add_utilisation({"dtype": "bfloat16", "tflops": 100.0,
                           "xla_tflops": 494.7}, h200)
    assert r["peak_tflops"] == 989.4 and r["mfu"] == pytest.approx(0.5)
    assert r["mfu_flops"] == "xla_cost_analysis" and "datasheet" in r["peak_source"]
    r = R.add_utilisation({"dtype": "float32", "tflops": 49.47}, h200)
    assert r["math_mode"] == "tf32" and r["mfu"] == pytest.approx(0.1)
    assert r["mfu_flops"] == "analytic"
    r = R.add_utilisation({"dtype": "float32", "tflops": 6.69},
                          {**h200, "precision": "highest"})
    assert r["math_mode"] == "float32" and r["mfu"] == pytest.approx(0.1)
    r = R.add_utilisation({"dtype": "bfloat16", "tflops": 1.0}, _env())
    assert r["mfu"] is None and "no dense peak" in r["peak_source"]


def _atlas(dtype, s, **kw):
    return {"case": "atlas:128", "kind": "atlas", "size": 128, "steps": 40,
            "n": 4224, "dtype": dtype, "batched_s": s, **kw}


def test_targets_measured_met_and_not_measured():
    gpu = _env(platform="gpu", device_kind="NVIDIA H200")
    recs = [_atlas("bfloat16", 3.5, mfu=0.42, mfu_flops="xla_cost_analysis"),
            _atlas("float32", 9.0),
            {"case": "notes:128:2", "kind": "notes", "impl": "jax", "size": 128,
             "steps": 40, "n": 4224, "scaled_total_s": 450.0},
            {"case": "filters:block5_conv3:128:512", "kind": "filters",
             "error": "RuntimeError: oom"}]
    t = {x["id"]: x for x in evaluate(recs, gpu)}
    assert t["atlas_bf16_s"]["measured"] == 3.5 and t["atlas_bf16_s"]["met"] is True
    assert t["atlas_f32_s"]["met"] is False
    assert t["atlas_bf16_mfu"]["measured"] == 0.42
    assert t["atlas_bf16_mfu"]["met"] is False
    assert t["atlas_vs_jax_loop"]["measured"] == pytest.approx(50.0)
    assert t["atlas_vs_jax_loop"]["met"] is True
    # a failed case measures nothing; PyTorch's loop was not in the run
    assert t["block5_conv3_bf16_s"]["measured"] is None
    assert t["atlas_vs_torch_loop"]["met"] is None
    # the same records from a CPU run: GPU targets do not apply
    cpu = {x["id"]: x for x in evaluate(recs, _env())}
    assert cpu["atlas_bf16_s"]["applies"] is False
    assert cpu["atlas_bf16_s"]["met"] is None


def test_library_never_imports_benchmarks_and_the_wheel_leaves_them_out():
    import fnmatch
    import tomllib

    pkg = ROOT / "jaxconvviz"
    offenders = [str(p.relative_to(pkg)) for p in pkg.rglob("*.py")
                 if re.search(r"^\s*(from|import)\s+benchmarks\b", p.read_text(),
                              re.M)]
    assert offenders == []
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
        "setuptools"]["packages"]["find"]
    # setuptools' packages.find: every directory with an __init__.py whose
    # dotted name matches an include pattern
    packages = [".".join(d.parent.relative_to(ROOT).parts)
                for d in ROOT.rglob("__init__.py") if ".venv" not in d.parts]
    assert "benchmarks" in packages
    wheel = [p for p in packages
             if any(fnmatch.fnmatchcase(p, pat) for pat in find["include"])]
    assert "jaxconvviz" in wheel and "jaxconvviz.featureviz" in wheel
    assert not [p for p in wheel if not p.startswith("jaxconvviz")], wheel


def _run(args, tmp_path, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=tmp_path)


@pytest.mark.slow
def test_smoke_run_json_schema(tmp_path):
    out = tmp_path / "bench.json"
    cases = "filters:block1_conv2:16:4,atlas:16,notes:16:1,gradcam:2:32,nope:1"
    p = _run([str(SCRIPTS / "benchmark.py"), "--smoke", "--cases", cases,
              "--out", str(out)], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads(p.stdout)
    assert doc == json.loads(out.read_text())
    assert doc["smoke"] is True and doc["steps"] == 3
    env = doc["environment"]
    assert env["platform"] == "cpu" and env["jax"] == jax.__version__ and env["jaxlib"]
    assert re.fullmatch(r"[0-9a-f]{40}", env["git"]["commit"] or "") or \
        env["git"]["source"] != "git"
    recs = {c["case"]: c for c in doc["cases"]}
    assert list(recs) == cases.split(",")  # nothing dropped, in order
    assert recs["nope:1"]["error"].startswith("ValueError: unknown case kind")
    for c in doc["cases"]:
        assert all(k in c for k in STAMP), (c["case"], set(STAMP) - set(c))
        assert c["memory"]["peak_bytes"] is None  # XLA:CPU: not available
        if c["case"] != "nope:1":
            assert "error" not in c, c
    m = jcv.tiny_vgg16(include_top=False)
    f = recs["filters:block1_conv2:16:4"]
    assert f["dtype"] == "float32" and f["channel_only"] is True
    assert f["chunks"]["chunk"] * f["chunks"]["n_chunks"] >= 4
    assert f["gflop"] * 1e9 == pytest.approx(
        fl.ascent_flops(m, "block1_conv2", 16, 3, 4, channel_only=True))
    assert f["baseline_gflop"] * 1e9 == pytest.approx(
        fl.ascent_flops(m, "block1_conv2", 16, 3, 4))
    # XLA drops the target conv's unused forward (pre-ReLU objective)
    assert 0.7 < f["xla_gflop"] / f["gflop"] < 1.2
    assert f["tflops"] == pytest.approx(f["gflop"] / f["batched_s"] / 1e3)
    assert f["speedup"] == pytest.approx(f["baseline_s"] / f["batched_s"])
    assert f["compiles_during_timed_runs"] == 0 and f["mean_activation"] > 0
    assert f["mfu"] is None and "no dense peak" in f["peak_source"]
    a = recs["atlas:16"]
    assert a["all_finite"] and a["n"] == 8
    assert a["compiles_in_warmup"] > 0 and a["compiles_during_timed_runs"] == 0
    assert a["chunks"] == {k: v["chunk"] for k, v in a["per_layer"].items()}
    n = recs["notes:16:1"]
    assert n["impl"] == "jax" and n["n"] == 8 and n["scaled_total_s"] > 0
    g = recs["gradcam:2:32"]
    assert g["batched_equals_loop_max_abs"] < 1e-5
    assert g["gflop"] * 1e9 == pytest.approx(
        2.0 * fl.conv_macs(jcv.tiny_vgg16(), "block5_conv3", 32) * 2)
    assert {t["id"] for t in doc["targets"]} >= {"atlas_bf16_s", "atlas_bf16_mfu"}
    assert all(t["applies"] is False for t in doc["targets"] if t["issue"] == 19)


@pytest.mark.slow
def test_gpu_probe_smoke_writes_each_case_and_a_summary(tmp_path):
    out = tmp_path / "probe"
    p = _run([str(SCRIPTS / "gpu_probe.py"), "--smoke", "--out", str(out),
              "--only", "gradcam", "--budget", "600"], tmp_path, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [x for x in p.stdout.splitlines() if x.startswith("[probe] ") and "/" in
             x.split()[1]]
    assert len(lines) == 1 and "nope:1 FAILED" in lines[0]
    assert "gradcam:1:32 float32" in lines[0]
    files = sorted(x.name for x in out.glob("*.json"))
    assert files == ["01_gradcam.json", "summary.json"]
    s = json.loads((out / "summary.json").read_text())
    assert [r["case"] for r in s["records"]] == ["gradcam:1:32", "nope:1"]
    assert s["records"][0]["memory"]["source"] == "not available"
    assert s["environment"]["platform"] == "cpu"
    assert "atlas_bf16_s" in s["not_measured"]


def test_plot_peers_draws_measured_records_and_refuses_none(tmp_path):
    from benchmarks.plot import plot_peers

    rec = {"case": "cam:gradcam:4:224", "kind": "cam", "method": "gradcam",
           "ours_s_per_image": 1.0, "peer_s_per_image": 4.5,
           "speedup_vs_peer": 4.5, "target_speedup_vs_peer": 4.0, "met": True}
    doc = {"environment": {"platform": "cpu", "cpu": "AMD EPYC", "cpu_count": 2},
           "cases": [rec, {"case": "render:x", "kind": "render", "absent": "no"}]}
    src = tmp_path / "peers.json"
    src.write_text(json.dumps(doc))
    plot_peers([str(src)], str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    src.write_text(json.dumps({**doc, "cases": doc["cases"][1:]}))
    with pytest.raises(ValueError, match="no measured peer records"):
        plot_peers([str(src)], str(tmp_path / "q.png"))
