"""filter_atlas: equals filter_patterns whatever the chunking, the number of
devices (4 forced host devices, in a subprocess) or processes (2 processes
under jax.distributed on 127.0.0.1); memory budgets -> chunk sizes by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.backend import backend
from jaxconvviz.featureviz._plan import (
    ACTIVATION_FACTOR,
    cpu_batch_size,
    filter_memory_bytes,
    parse_memory_budget,
    plan_chunks,
)
from jaxconvviz.featureviz.atlas import atlas_plan, filter_atlas
from jaxconvviz.run import Run
from tests._procs import communicate_all, free_port

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("block1_conv2", "block3_conv1")  # tiny VGG16: 4 and 8 filters
KW = dict(size=32, steps=3)


@pytest.fixture(scope="module")
def tiny():
    model = jcv.tiny_vgg16(include_top=False)
    return model, model.init_params(jax.random.key(1))


@pytest.fixture(scope="module")
def reference(tiny):
    """filter_patterns, one layer at a time, every filter in one chunk."""
    model, params = tiny
    return {layer: np.asarray(jcv.filter_patterns(
        params, layer, range(model.channels(layer)), key=jax.random.key(0),
        model=model, **KW)) for layer in LAYERS}


@pytest.mark.slow
def test_atlas_equals_filter_patterns_any_chunking(tiny, reference):
    model, params = tiny
    for bs in (None, 3):  # 3: uneven chunks (8 -> 3 x 3, one padded)
        seen = []
        out = filter_atlas(params, layers=LAYERS, key=jax.random.key(0), model=model,
                           **KW, run=Run(batch_size=bs, progress=lambda d, t, s=seen:
                                         s.append((d, t))))
        # progress counts filters over the whole atlas, rising to the total
        assert seen[-1] == (12, 12)
        assert [d for d, _ in seen] == sorted({d for d, _ in seen})
        assert list(out) == list(LAYERS)
        for layer in LAYERS:
            assert out[layer].dtype == np.float32
            np.testing.assert_allclose(out[layer], reference[layer], rtol=0,
                                       atol=1e-5)


def test_budget_chunks_equal_unchunked(tiny, reference):
    model, params = tiny
    layer = "block3_conv1"
    per = filter_memory_bytes(model, layer, 32)
    fixed = 3 * sum(np.size(v) * 4 for v in jax.tree.leaves(params))
    budget = fixed + 3 * per  # room for exactly 3 filters
    run = Run(memory_budget=budget, devices=jax.devices()[:1])
    (plan,) = atlas_plan(params, layers=[layer], size=32, model=model, run=run)
    assert (plan.chunk, plan.n_chunks) == (3, 3)
    out = filter_atlas(params, layers=[layer], key=jax.random.key(0), model=model,
                       run=run, **KW)
    np.testing.assert_allclose(out[layer], reference[layer], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_python_loop_and_filter_selection(tiny, reference):
    model, params = tiny
    sel = {"block3_conv1": [5, 2]}
    with backend(loop="python"):
        out = filter_atlas(params, layers=["block3_conv1"], filters_per_layer=sel,
                           key=jax.random.key(0), model=model, **KW)
    # another batch (2 filters, not 8) and loop form: a different compiled
    # program, equal up to float rounding (1 ulp of pixels near 150 is 1.5e-5)
    np.testing.assert_allclose(out["block3_conv1"], reference["block3_conv1"][[5, 2]],
                               rtol=1e-6, atol=1e-5)
    out = filter_atlas(params, layers=LAYERS, filters_per_layer=6,
                       key=jax.random.key(0), model=model, **KW)
    assert out["block1_conv2"].shape[0] == 4  # only 4 filters there
    np.testing.assert_allclose(out["block3_conv1"], reference["block3_conv1"][:6],
                               rtol=1e-6, atol=1e-5)


def test_default_layers_are_the_conv_layers(tiny):
    model, params = tiny
    plans = atlas_plan(params, model=model, size=32)
    assert [p.layer for p in plans] == list(model.conv_layers)
    assert [p.n_filters for p in plans] == [model.channels(x) for x in
                                            model.conv_layers]
    assert jcv.filter_atlas is filter_atlas


def test_plan_chunks_by_hand():
    # 12 500 B, 100 B per filter -> 125 per device; 512 filters -> 5 chunks of 103
    assert plan_chunks(512, per_filter_bytes=100, budget_bytes=12_500) == (103, 5)
    # 4 devices: 500 per call -> 2 chunks of 256 (a multiple of 4)
    assert plan_chunks(512, per_filter_bytes=100, budget_bytes=12_500,
                       n_devices=4) == (256, 2)
    # fixed bytes come off the budget first: (12 500 - 2 500) // 100 = 100
    # per call -> 6 chunks, ceil(512 / 6) = 86
    assert plan_chunks(512, per_filter_bytes=100, budget_bytes=12_500,
                       fixed_bytes=2_500) == (86, 6)
    assert plan_chunks(512, per_filter_bytes=100, budget_bytes=10_000) == (86, 6)
    assert plan_chunks(200, per_filter_bytes=100, budget_bytes=10_000) == (100, 2)
    # a CPU cap of 8 per device, 3 devices: 24 per call, 50 filters -> 3 x 18
    assert plan_chunks(50, per_filter_bytes=1, budget_bytes=10**9, n_devices=3,
                       cap_per_device=8) == (18, 3)
    # a budget too small for one filter still runs one per device
    assert plan_chunks(5, per_filter_bytes=10**9, budget_bytes=1) == (1, 5)


def test_memory_estimate_by_hand_and_16gb_plan():
    model = jcv.VGG16(include_top=False)
    # block1_conv1 at 10 px: activations 10*10*64, image 10*10*3
    assert filter_memory_bytes(model, "block1_conv1", 10) == int(
        ACTIVATION_FACTOR * 4 * 6400 + 16 * 300)
    # conv, conv, pool: 2 * 6400 + 5*5*64
    assert filter_memory_bytes(model, "block1_pool", 10) == int(
        ACTIVATION_FACTOR * 4 * (12800 + 1600) + 16 * 300)
    # the full atlas on a 16 GB card: every layer's chunk fits the budget
    budget = parse_memory_budget("16GB") * 0.8
    fixed = 3 * 14_714_688 * 4  # VGG16 conv params, float32
    for layer in model.conv_layers:
        per = filter_memory_bytes(model, layer, 128)
        chunk, n = plan_chunks(model.channels(layer), per_filter_bytes=per,
                               budget_bytes=budget, fixed_bytes=fixed)
        assert chunk * n >= model.channels(layer)
        assert fixed + chunk * per <= budget


@pytest.mark.parametrize("compute", ["float32-xla", "bfloat16-matmul"])
@pytest.mark.slow
def test_memory_estimate_bounds_xla(compute):
    """The analytic per-filter bytes are an upper bound of XLA's own
    accounting of one ascent step (slope between two chunk sizes), also for
    the bf16 matrix-product convolutions (their row im2col copies)."""
    from jaxconvviz.featureviz.atlas import lowered_step

    model = jcv.VGG16(include_top=False)
    params = jax.eval_shape(lambda: model.init_params(jax.random.key(0)))
    layer, size = "block2_conv2", 32
    bf16 = compute == "bfloat16-matmul"
    run = Run(dtype="bfloat16" if bf16 else "float32")

    def temp(bs):
        with backend(conv="matmul" if bf16 else "auto"):
            low = lowered_step(params, layer, bs, size=size, model=model, run=run)
        return low.compile().memory_analysis().temp_size_in_bytes

    slope = (temp(6) - temp(2)) / 4
    assert 0 < slope <= filter_memory_bytes(model, layer, size)


def test_parse_memory_budget():
    assert parse_memory_budget(None) is None
    assert parse_memory_budget("16GB") == 16 * 10**9
    assert parse_memory_budget("12GiB") == 12 * 2**30
    assert parse_memory_budget(" 1.5 gb ") == 1_500_000_000
    assert parse_memory_budget(2_000_000) == 2_000_000
    assert parse_memory_budget("0.5MB") == 500_000
    for bad in ("lots", "16 parsecs", -5, 0, True, "0GB", float("nan"), [16]):
        with pytest.raises(ValueError, match="memory_budget"):
            parse_memory_budget(bad)


def test_bad_arguments_raise_before_compute(tiny):
    model, params = tiny
    k = jax.random.key(0)
    cases = [
        (dict(key=None), "key"),
        (dict(key=k, layers=["nope"]), "layers must be one of"),
        (dict(key=k, layers=[]), "layers"),
        (dict(key=k, filters_per_layer=0), "filters_per_layer"),
        (dict(key=k, filters_per_layer="all"), "filters_per_layer"),
        (dict(key=k, filters_per_layer={"block1_conv1": [99]}), "filter_indices"),
        (dict(key=k, layers=["block1_conv1"],
              filters_per_layer={"block2_conv1": [0]}), "filters_per_layer"),
        (dict(key=k, run=Run(devices=["cpu"])), "devices"),
        (dict(key=k, run=Run(memory_budget="huge")), "memory_budget"),
        (dict(key=k, steps=0), "steps"),
        (dict(key=k, size=4), "size"),
        (dict(key=k, style="book"), "style"),
        (dict(key=k, objective="mean"), "objective"),
    ]
    for kwargs, msg in cases:
        with pytest.raises(ValueError, match=msg):
            filter_atlas(params, model=model, **{"size": 32, **kwargs})
    # execution options are checked where they are made
    for make, msg in ((lambda: Run(devices=[]), "devices"),
                      (lambda: Run(dtype=jnp.int8), "dtype"),
                      (lambda: Run(batch_size=0), "batch_size"),
                      (lambda: jcv.Book(step_size=float("nan")), "step_size")):
        with pytest.raises(ValueError, match=msg):
            make()


@pytest.mark.slow
def test_bf16_atlas_reaches_float32_activations(tiny, reference):
    model, params = tiny
    layer = "block3_conv1"
    out = filter_atlas(params, layers=[layer], key=jax.random.key(0), model=model,
                       run=Run(dtype="bfloat16"), **KW)
    idx = range(model.channels(layer))
    a16 = np.asarray(jcv.filter_activation(params, out[layer], layer, idx,
                                           model=model))
    a32 = np.asarray(jcv.filter_activation(params, reference[layer], layer, idx,
                                           model=model))
    np.testing.assert_allclose(a16, a32, rtol=0.05, atol=0.05 * np.abs(a32).max())


# ------------------------------------------------------- devices, processes
_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    import jaxconvviz as jcv
    mode, out = sys.argv[1], sys.argv[2]
    if mode.startswith("proc"):
        port, pid = sys.argv[3], int(mode[4:])
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2,
                                   process_id=pid)
    model = jcv.tiny_vgg16(include_top=False)
    params = model.init_params(jax.random.key(1))
    kw = dict(layers=("block1_conv2", "block3_conv1"), size=32, steps=3,
              key=jax.random.key(0), model=model)
    # explicit devices: every layer sharded (devices=None keeps the tiny
    # model's light layers on one CPU device, checked below)
    dv = jax.devices() if mode == "devices" else None
    from jaxconvviz.run import Run
    res = jcv.filter_atlas(params, run=Run(devices=dv), **kw)
    plan = jcv.atlas_plan(params, layers=kw["layers"], size=32, model=model,
                          run=Run(devices=dv))
    info = {"n_devices": jax.device_count(), "processes": jax.process_count(),
            "plan": [(p.layer, p.chunk, p.n_chunks, p.n_devices) for p in plan]}
    if mode == "devices":  # the same atlas on one of the four devices
        one = jcv.filter_atlas(params, run=Run(devices=jax.devices()[:1]), **kw)
        info["one_vs_four"] = max(float(np.abs(one[k] - res[k]).max()) for k in res)
        auto = jcv.atlas_plan(params, layers=kw["layers"], size=32, model=model)
        info["auto_plan"] = [(p.layer, p.chunk, p.n_chunks, p.n_devices)
                             for p in auto]
        auto_res = jcv.filter_atlas(params, **kw)
        info["auto_vs_one"] = max(float(np.abs(one[k] - auto_res[k]).max())
                                  for k in res)
    if jax.process_index() == 0:
        np.savez(out, **res)
        print(json.dumps(info))
""")


def _run(args, env_extra=None, timeout=240):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-c", _SCRIPT, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)


def _check(outs, path, reference):
    res = np.load(path)
    for layer in LAYERS:
        np.testing.assert_allclose(res[layer], reference[layer], rtol=0, atol=1e-4)
    return outs


@pytest.mark.slow
def test_sharded_over_4_devices_equals_single(tmp_path, reference):
    path = tmp_path / "dev.npz"
    p = _run(["devices", str(path)], {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu"})
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    info = json.loads(out.strip().splitlines()[-1])
    assert info["n_devices"] == 4
    # 4 filters -> one chunk of 4 (1 per device, the CPU cap for 32x32 maps);
    # 8 -> 8 (2 per device; the cap for 8x8 maps is 16)
    assert info["plan"] == [["block1_conv2", 4, 1, 4], ["block3_conv1", 8, 1, 4]]
    # equal up to float32 rounding of differently batched CPU convolutions
    # (values ~128, where one ulp is 1.5e-5)
    assert info["one_vs_four"] <= 1e-4
    # devices=None: the tiny model at 32 px is far below CPU_SHARD_MIN_MACS
    # (block3_conv1: 0.35 M multiply-adds), so each layer runs on device 0 in
    # chunks of the per-device cap: the single-device computation exactly
    assert info["auto_plan"] == [["block1_conv2", 1, 4, 1], ["block3_conv1", 8, 1, 1]]
    assert info["auto_vs_one"] == 0.0
    _check(out, path, reference)


@pytest.mark.slow
def test_two_processes_equal_single_process(tmp_path, reference):
    path = tmp_path / "proc.npz"
    port = str(free_port())
    env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    procs = [_run([f"proc{i}", str(path), port], env) for i in (0, 1)]
    outs = communicate_all(procs)
    info = json.loads(outs[0][0].strip().splitlines()[-1])
    assert info["processes"] == 2 and info["n_devices"] == 2
    assert "{" not in outs[1][0]  # only process 0 reports and writes
    # each process computes half of every chunk (one device each); on CPU
    # block1_conv2 (32x32 maps) runs 1 filter per device, block3_conv1 (8x8)
    # up to 16
    assert info["plan"] == [["block1_conv2", 2, 2, 2], ["block3_conv1", 8, 1, 2]]
    _check(outs, path, reference)


@pytest.mark.slow
def test_max_pool_tiled_equals_flax_max_pool_with_ties():
    """nets.max_pool_tiled (used for window == strides pools): the values and
    the gradient of flax's reduce-window max pool exactly, ties included
    (the first maximum of a window in row-major order gets the gradient)."""
    import flax.linen as nn

    from jaxconvviz.models.kinds.pool import max_pool_tiled

    rng = np.random.default_rng(0)
    for shape, k in (((2, 8, 8, 3), (2, 2)), ((2, 7, 9, 2), (2, 2)),
                     ((1, 9, 9, 2), (3, 3))):
        for x in (rng.normal(size=shape), rng.integers(0, 3, shape)):  # 2nd: ties
            x = jnp.asarray(x, jnp.float32)

            def ref(x, k=k):
                return nn.max_pool(x, k, strides=k, padding="VALID")

            y, vjp = jax.vjp(lambda x, k=k: max_pool_tiled(x, k), x)
            y0, vjp0 = jax.vjp(ref, x)
            ct = jnp.asarray(rng.normal(size=y0.shape), jnp.float32)
            assert bool((y == y0).all())
            assert bool((vjp(ct)[0] == vjp0(ct)[0]).all())
            # forward mode too (custom_jvp): tangent of the first maximum
            t = jnp.asarray(rng.normal(size=shape), jnp.float32)
            _, dy = jax.jvp(lambda x, k=k: max_pool_tiled(x, k), (x,), (t,))
            _, dy0 = jax.jvp(ref, (x,), (t,))
            assert bool((dy == dy0).all())


@pytest.mark.slow
def test_cli_all_layers_writes_every_conv_layer(tmp_path, monkeypatch):
    from PIL import Image

    from jaxconvviz.cli import main
    from jaxconvviz.commands import atlas as cmd
    from jaxconvviz.models.convnet import ConvNet, Layer

    model = ConvNet(layers=(
        Layer.make("c1", "conv", features=3, activation="relu"),
        Layer.make("p1", "maxpool", pool_size=2),
        Layer.make("c2", "conv", features=5, activation="relu"),
    ), input_shape=(None, None, 3), preprocessing="none", name_="two_convs")
    params = model.init_params(jax.random.key(3), hw=(16, 16))
    monkeypatch.setattr(cmd, "load_model_and_params",
                        lambda args, include_top: (model, params, "two convs"))
    argv = ["atlas", "--all-layers", "--size", "16", "--steps", "2", "--cols", "5",
            "--margin", "1", "--seed", "4", "--filters", "0:64", "--out",
            str(tmp_path)]  # 0:64 is clipped to each layer's 3 and 5 filters
    assert main(argv) == 0
    for layer, n in (("c1", 3), ("c2", 5)):
        png = np.asarray(Image.open(tmp_path / f"atlas_{layer}.png"))
        pats = jcv.filter_patterns(params, layer, range(n), key=jax.random.key(4),
                                   size=16, steps=2, model=model)
        np.testing.assert_array_equal(png, jcv.atlas_grid(pats, n_cols=5, margin=1))
        assert (tmp_path / f"atlas_{layer}_figure.png").is_file()
    assert main(argv[:1] + ["--layer", "c1"] + argv[1:]) == 2
    assert main(argv + ["--memory-budget", "lots"]) == 2


def test_cpu_default_chunk_by_feature_map_size():
    """XLA:CPU: ceil(512 / (h' * w')) filters per chunk, at most 16."""
    assert jax.default_backend() == "cpu"
    m = jcv.VGG16(include_top=False)
    got = {layer: cpu_batch_size(512, m, layer, 64) for layer in
           ("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1",
            "block5_conv3")}
    assert got == {"block1_conv1": 1, "block2_conv1": 1, "block3_conv1": 2,
                   "block4_conv1": 8, "block5_conv3": 16}
    assert cpu_batch_size(3, m, "block5_conv3", 64) == 3
    assert cpu_batch_size(512, m, "block5_conv3", 256) == 2  # 16x16 maps
