"""use_cpu_cores and filter_patterns over several devices: the host split
into 4 CPU devices (in a subprocess, as JAX fixes the count at start-up)
gives one device's patterns; the switch's errors name what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.cli import main

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = textwrap.dedent("""
    import json, sys
    import jaxconvviz as jcv
    n = jcv.use_cpu_cores(int(sys.argv[1]) if sys.argv[1] != "auto" else None)
    import jax, numpy as np
    again = jcv.use_cpu_cores(n)  # the count in effect: a no-op
    model = jcv.tiny_vgg16(include_top=False)
    params = model.init_params(jax.random.key(1))
    kw = dict(key=jax.random.key(0), size=32, steps=3, model=model)
    one = jax.devices()[:1]
    info = {"n": n, "again": again, "devices": jax.device_count(), "diff": {}}
    done = []
    cases = {  # name: (layer, filters, extra kwargs)
        "one_chunk": ("block3_conv1", range(8), {}),         # 8 over 4 devices
        "uneven": ("block3_conv1", [7, 0, 3, 5, 1], {"batch_size": 3}),
        "per_device_cap": ("block1_conv2", range(4), {}),  # 32x32 maps: 1 each
        "fewer_than_devices": ("block2_conv1", [2, 3], {}),
        "whole_layer": ("block3_conv1", range(6), {"channel_only": False}),
        "bf16_matmul": ("block3_conv2", range(5), {"dtype": "bfloat16"}),
    }
    from jaxconvviz.backend import backend
    from jaxconvviz.run import Run
    for name, (layer, fidx, extra) in cases.items():
        with backend(channel_only=extra.pop("channel_only", "auto")):
            a = jcv.filter_patterns(params, layer, fidx, run=Run(devices=one, **extra),
                                    **kw)
            b = jcv.filter_patterns(params, layer, fidx, **kw, run=Run(
                devices=jax.devices(), progress=lambda d, t: done.append((d, t)),
                **extra))
            # devices=None: the tiny model at 32 px is below CPU_SHARD_MIN_MACS,
            # so the default stays on one device, bitwise
            c = jcv.filter_patterns(params, layer, fidx, run=Run(**extra), **kw)
        info["diff"][name] = float(np.abs(np.asarray(a) - np.asarray(b)).max())
        info.setdefault("default_vs_one", []).append(
            float(np.abs(np.asarray(a) - np.asarray(c)).max()))
        info.setdefault("on", []).append(str(b.sharding.device_set))
    # a noisy start: a flat one ties every max pool, where the last float
    # bit of a batched convolution decides which pixel gets the gradient
    init = (np.random.default_rng(0).uniform(0, 20, (3, 32, 32, 3)) + 118
            ).astype(np.float32)
    a = jcv.filter_patterns(params, "block3_conv1", [1, 2, 4], init=init,
                            run=Run(devices=one), size=32, steps=3, model=model)
    b = jcv.filter_patterns(params, "block3_conv1", [1, 2, 4], init=init, size=32,
                            steps=3, model=model, run=Run(devices=jax.devices()))
    info["diff"]["init"] = float(np.abs(np.asarray(a) - np.asarray(b)).max())
    info["progress_last"] = done[-1]
    print(json.dumps(info))
""")


def _run(arg, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "", **(env_extra or {})}
    env.pop("JAX_NUM_CPU_DEVICES", None)
    p = subprocess.run([sys.executable, "-c", _SCRIPT, arg], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_filter_patterns_over_4_cpu_devices_equals_one():
    info = _run("4")
    assert info["n"] == info["again"] == info["devices"] == 4
    # float32 rounding of differently batched CPU convolutions only (values
    # around 128, one ulp 1.5e-5); bf16 compute differs by bf16 rounding of
    # differently batched products, far below a grey level
    for name, d in info["diff"].items():
        assert d <= (0.05 if name == "bf16_matmul" else 1e-4), (name, d)
    # results are gathered onto the first device
    assert all(s == "{CpuDevice(id=0)}" for s in info["on"])
    assert info["progress_last"] == [5, 5]
    assert info["default_vs_one"] == [0.0] * 6


def test_xla_flags_force_count_wins():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=3"}
    script = ("import jaxconvviz as jcv, jax; n = jcv.use_cpu_cores(); "
              "print(n, jax.device_count())\n"
              "try:\n    jcv.use_cpu_cores(2)\nexcept ValueError as e:\n    print(e)")
    p = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                       text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT),
                            "JAX_PLATFORMS": "cpu", **env})
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.strip().splitlines()
    assert lines[0] == "3 3"
    assert "n=2 contradicts XLA_FLAGS" in lines[1] and "forces 3" in lines[1]


def test_use_cpu_cores_after_start_and_bad_counts():
    have = len(jax.devices("cpu"))  # conftest started JAX with its devices
    assert jcv.use_cpu_cores(have) == have  # already in effect: fine
    with pytest.raises(RuntimeError, match=rf"use_cpu_cores\({have + 1}\) came after "
                       rf"JAX started its CPU backend with {have}"):
        jcv.use_cpu_cores(have + 1)
    assert len(jax.devices("cpu")) == have and jax.config.jax_num_cpu_devices <= 0
    for bad in (0, -2, 1.5, "2", True):
        with pytest.raises(ValueError, match=r"n must be None .* int >= 1; got"):
            jcv.use_cpu_cores(bad)
    assert jcv.available_cores() == len(os.sched_getaffinity(0))


@pytest.mark.slow
def test_filter_patterns_bad_devices():
    model = jcv.tiny_vgg16(include_top=False)
    params = model.init_params(jax.random.key(1))
    kw = dict(key=jax.random.key(0), size=32, steps=1, model=model)
    from jaxconvviz.run import Run

    for bad in ([], "cpu", [jax.devices()[0], jax.devices()[0]], 3):
        with pytest.raises(ValueError, match="devices must be"):
            jcv.filter_patterns(params, "block1_conv1", [0], run=Run(devices=bad),
                                **kw)
    # an explicit single device is used as given (results on it)
    out = jcv.filter_patterns(params, "block1_conv1", [0, 1],
                              run=Run(devices=jax.devices()), **kw)
    ref = jcv.filter_patterns(params, "block1_conv1", [0, 1], **kw)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))


def test_cli_cpu_devices_option(capsys):
    have = len(jax.devices("cpu"))
    for bad, msg in (("0", "--cpu-devices must be 'auto' or an int >= 1; got '0'"),
                     ("two", "--cpu-devices must be 'auto' or an int >= 1; got 'two'"),
                     (str(have + 1), f"came after JAX started its CPU backend with "
                                     f"{have}")):
        assert main(["--cpu-devices", bad, "weights", "list"]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err


def test_auto_devices_by_multiply_adds():
    """Light CPU layers stay on one device; the count is by hand."""
    from types import SimpleNamespace

    from jaxconvviz.featureviz._plan import CPU_SHARD_MIN_MACS, auto_devices
    from jaxconvviz.models.shapes import conv_macs

    vgg = jcv.VGG16(include_top=False)
    # block1_conv1: 64*64 pixels * 27 * 64 = 7.08 M; block1_conv2 adds
    # 64*64 * 576 * 64 = 151 M
    assert conv_macs(vgg, "block1_conv1", 64) == 64 * 64 * 27 * 64
    assert conv_macs(vgg, "block1_conv2", 64) == 64 * 64 * (27 + 576) * 64
    assert conv_macs(vgg, "block1_conv1", 150) > CPU_SHARD_MIN_MACS \
        > conv_macs(vgg, "block1_conv1", 64)
    cpus = tuple(SimpleNamespace(platform="cpu", id=i) for i in range(2))
    gpus = tuple(SimpleNamespace(platform="gpu", id=i) for i in range(2))
    assert auto_devices(cpus, vgg, "block1_conv1", 64) == cpus[:1]
    assert auto_devices(cpus, vgg, "block1_conv1", 150) == cpus
    assert auto_devices(cpus, vgg, "block1_conv2", 64) == cpus
    assert auto_devices(gpus, vgg, "block1_conv1", 64) == gpus
    assert auto_devices(cpus[:1], vgg, "block5_conv3", 64) == cpus[:1]
    # computing one channel of block1_conv2 (7.1 M + 2.4 M) stays on one
    assert auto_devices(cpus, vgg, "block1_conv2", 64, channel_only=True) \
        == cpus[:1]
    assert auto_devices(cpus, vgg, "block2_conv1", 64, channel_only=True) == cpus


def test_bf16_flags_from_cpuinfo():
    from jaxconvviz.backend.cpu import cpu_flags_have_bf16

    zen4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
    zen3 = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
    spr = "flags\t: avx512f amx_bf16 amx_tile\n"
    assert cpu_flags_have_bf16(zen4) and cpu_flags_have_bf16(spr)
    assert not cpu_flags_have_bf16(zen3) and not cpu_flags_have_bf16("")
