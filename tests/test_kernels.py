"""Kernel views: kernel grids equal the param slices, histograms count every
weight, glorot_uniform bounds, the kernel/histogram figures, the ``kernels``
CLI verb and the Fashion-MNIST note figure helpers."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.cli import main
from jaxconvviz.models.convnet import ConvNet, Layer
from jaxconvviz.views.kernels import glorot_uniform_like

from .conftest import decode_png

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def fashion():
    spec = importlib.util.spec_from_file_location(
        "fashion_figures", SCRIPTS / "fashion_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def note_model(fashion):
    return fashion.fashion_note_model()


@pytest.fixture(scope="module")
def note_params(note_model):
    return note_model.init_params(jax.random.key(7))


@pytest.fixture(scope="module")
def note_untrained(fashion, note_model):
    return fashion.keras_untrained_params(note_model, key=jax.random.key(3))


# --------------------------------------------------------- kernel_grid
@pytest.mark.slow
def test_note_conv1_kernels_are_the_param_slices(note_model, note_params):
    k = np.asarray(note_params["conv2d"]["kernel"])
    assert k.shape == (3, 3, 1, 32)
    kg = jcv.kernel_grid(note_params, "conv2d", model=note_model, limit=0.5)
    assert (kg.vmin, kg.vmax, kg.rgb, kg.channel) == (-0.5, 0.5, False, 0)
    assert kg.filters == tuple(range(32))
    got = np.asarray(kg.kernels)
    assert got.shape == (32, 3, 3)
    for i in range(32):  # the note: conv_weights[:, :, 0, i*16 + j]
        np.testing.assert_array_equal(got[i], k[:, :, 0, i])
    auto = jcv.kernel_grid(note_params, "conv2d", model=note_model)
    assert auto.vmax == pytest.approx(np.abs(k).max()) and auto.vmin == -auto.vmax


@pytest.mark.slow
def test_rgb_first_layer_caffe_is_flipped_to_rgb(tiny_params_notop):
    k = np.asarray(tiny_params_notop["block1_conv1"]["kernel"])  # (3, 3, 3, 4) BGR
    kg = jcv.kernel_grid(tiny_params_notop, "block1_conv1")
    assert kg.rgb and kg.channel == "rgb"
    lim = np.abs(k).max()
    assert kg.vmax == pytest.approx(lim)
    got = np.asarray(kg.kernels)
    assert got.shape == (4, 3, 3, 3)
    for i in range(4):
        np.testing.assert_allclose(got[i], 0.5 + k[:, :, ::-1, i] / (2 * lim),
                                   rtol=1e-6, atol=1e-7)
    assert got.min() >= 0 and got.max() <= 1
    # a fixed limit below max|w| saturates (clipped into [0, 1])
    sat = np.asarray(jcv.kernel_grid(tiny_params_notop, "block1_conv1",
                                     limit=lim / 4).kernels)
    np.testing.assert_allclose(sat, np.clip(
        0.5 + np.transpose(k[:, :, ::-1, :], (3, 0, 1, 2)) / (lim / 2), 0, 1),
        rtol=1e-6, atol=1e-7)


def test_rgb_non_caffe_model_keeps_channel_order(key):
    model = ConvNet(layers=(Layer.make("c", "conv", features=2, kernel_size=3,
                                       activation="relu"),),
                    input_shape=(None, None, 3), preprocessing="scale01")
    params = model.init_params(key)
    k = np.asarray(params["c"]["kernel"])
    kg = jcv.kernel_grid(params, "c", model=model, limit=1.0)
    np.testing.assert_allclose(np.asarray(kg.kernels)[1], 0.5 + k[:, :, :, 1] / 2,
                               rtol=1e-6)


def test_channel_mean_and_filters(tiny_params_notop):
    k = np.asarray(tiny_params_notop["block3_conv1"]["kernel"])  # (3, 3, 4, 8)
    one = jcv.kernel_grid(tiny_params_notop, "block3_conv1", channel=2,
                          filters=[7, 0, 3])
    assert one.channel == 2 and one.filters == (7, 0, 3)
    np.testing.assert_array_equal(np.asarray(one.kernels),
                                  np.transpose(k[:, :, 2, [7, 0, 3]], (2, 0, 1)))
    assert one.vmax == pytest.approx(np.abs(k[:, :, 2, [7, 0, 3]]).max())
    mean = jcv.kernel_grid(tiny_params_notop, "block3_conv1")
    assert mean.channel == "mean" and not mean.rgb
    np.testing.assert_allclose(np.asarray(mean.kernels),
                               np.transpose(k.mean(axis=2), (2, 0, 1)), rtol=1e-6)
    grey = jcv.kernel_grid(tiny_params_notop, "block1_conv1", rgb=False)
    k1 = np.asarray(tiny_params_notop["block1_conv1"]["kernel"])
    np.testing.assert_allclose(np.asarray(grey.kernels),
                               np.transpose(k1.mean(axis=2), (2, 0, 1)), rtol=1e-6)


def test_all_zero_kernel_gets_unit_scale(note_model, note_params):
    zero = {**note_params, "conv2d": {**note_params["conv2d"],
                                      "kernel": np.zeros((3, 3, 1, 32), np.float32)}}
    kg = jcv.kernel_grid(zero, "conv2d", model=note_model)
    assert (kg.vmin, kg.vmax) == (-1.0, 1.0)


@pytest.mark.parametrize("kwargs,msg", [
    ({"layer": "block1_pool"}, "layer must be one of block1_conv1"),
    ({"layer": "block2_conv1", "rgb": True}, "rgb=True needs"),
    ({"layer": "block1_conv1", "channel": 3}, "channel must be an integer in 0..2"),
    ({"layer": "block1_conv1", "filters": [4]}, "filters must be an integer in 0..3"),
    ({"layer": "block1_conv1", "filters": []}, "at least one filter"),
    ({"layer": "block1_conv1", "limit": 0.0}, "limit must be a positive"),
])
def test_kernel_grid_errors(tiny_params_notop, kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        jcv.kernel_grid(tiny_params_notop, **kwargs)


# ---------------------------------------------------- weight_histogram
def test_histogram_counts_every_weight(tiny_params_notop):
    k = np.asarray(tiny_params_notop["block3_conv1"]["kernel"], np.float64)
    h = jcv.weight_histogram(tiny_params_notop, "block3_conv1", bins=7)
    assert h.size == k.size == 3 * 3 * 4 * 8
    assert h.counts.sum() == k.size and h.counts.dtype == np.int64
    want_counts, want_edges = np.histogram(k.ravel(), bins=7)
    np.testing.assert_array_equal(h.counts, want_counts)
    np.testing.assert_allclose(h.edges, want_edges)
    assert h.mean == pytest.approx(k.mean()) and h.std == pytest.approx(k.std())
    part = jcv.weight_histogram(tiny_params_notop, "block3_conv1", bins=4,
                                value_range=(0.0, 1.0))
    assert part.counts.sum() == (k >= 0).sum()
    np.testing.assert_allclose(part.edges, [0, 0.25, 0.5, 0.75, 1.0])


def test_histogram_dense_layer_and_errors(tiny_params, tiny_model):
    h = jcv.weight_histogram(tiny_params, "fc1", model=tiny_model)
    assert h.counts.sum() == h.size == np.asarray(tiny_params["fc1"]["kernel"]).size
    with pytest.raises(ValueError, match="bins"):
        jcv.weight_histogram(tiny_params, "fc1", bins=0)
    with pytest.raises(ValueError, match="value_range"):
        jcv.weight_histogram(tiny_params, "fc1", value_range=(1.0, 1.0))
    with pytest.raises(ValueError, match="layer must be one of"):
        jcv.weight_histogram(tiny_params, "flatten")


def test_glorot_uniform_like_keras_bounds():
    shape = (3, 3, 64, 64)
    w = np.asarray(glorot_uniform_like(np.zeros(shape), key=jax.random.key(1)))
    lim = math.sqrt(6 / (9 * 64 + 9 * 64))  # Keras glorot_uniform
    assert w.shape == shape and np.abs(w).max() <= lim
    assert np.abs(w).max() > 0.99 * lim
    assert w.std() == pytest.approx(lim / math.sqrt(3), rel=0.02)  # uniform std
    again = np.asarray(glorot_uniform_like(np.zeros(shape), key=jax.random.key(1)))
    np.testing.assert_array_equal(w, again)


# -------------------------------------------------------------- figures
def test_plot_kernels_draws_the_values():
    from jaxconvviz.plotting import plot_kernels

    k = np.arange(32 * 9, dtype=np.float32).reshape(32, 3, 3) / 288 - 0.5
    fig = plot_kernels(k, vmin=-0.5, vmax=0.5, n_cols=16, layer="conv2d")
    ax = fig.axes[0]
    img = ax.images[0].get_array()
    assert img.shape == (2 * 4 - 1, 16 * 4 - 1)  # 2x16 kernels, 1-px gaps
    for i in (0, 5, 16, 31):
        r, c = divmod(i, 16)
        np.testing.assert_array_equal(img[r * 4:r * 4 + 3, c * 4:c * 4 + 3], k[i])
    assert img.mask[3, :].all() and img.mask[:, 3].all()
    assert (ax.images[0].norm.vmin, ax.images[0].norm.vmax) == (-0.5, 0.5)
    assert len(fig.axes) == 2  # + colour bar
    assert "conv2d" in ax.get_title() and "vmin=-0.5" in ax.get_title()
    rgb = plot_kernels(np.full((3, 3, 3, 3), 0.25), vmin=-1, vmax=1)
    assert len(rgb.axes) == 1
    np.testing.assert_array_equal(rgb.axes[0].images[0].get_array()[:3, :3], 0.25)
    with pytest.raises(ValueError, match="vmin must be < vmax"):
        plot_kernels(k, vmin=1, vmax=1)
    with pytest.raises(ValueError, match="kernels must be"):
        plot_kernels(np.zeros((3, 3)), vmin=-1, vmax=1)


@pytest.mark.parametrize("layout", ["overlay", "side"])
def test_plot_weight_histograms(layout):
    from jaxconvviz.plotting import plot_weight_histograms

    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 0.2, 288), rng.uniform(-0.14, 0.14, (3, 3, 1, 32))
    fig = plot_weight_histograms({"trained": a, "untrained": b}, layer="conv2d",
                                 bins=12, layout=layout)
    axes = fig.axes
    assert len(axes) == (1 if layout == "overlay" else 2)
    heights = [sum(p.get_height() for p in ax.patches) for ax in axes]
    assert sum(heights) == 2 * 288  # every weight of both models counted
    q_lo, q_hi = np.quantile(np.concatenate([a, b.ravel()]), [0.001, 0.999])
    lo = q_lo - 0.02 * (q_hi - q_lo)  # central 99.8% plus a 2% margin
    assert min(p.get_x() for ax in axes for p in ax.patches) == pytest.approx(lo)
    texts = [t.get_text() for ax in axes for t in ax.get_legend().get_texts()]
    assert any(f"mean={a.mean():.4g}" in t and f"std={a.std():.4g}" in t
               for t in texts)
    assert any(t.startswith("untrained") for t in texts)
    with pytest.raises(ValueError, match="layout"):
        plot_weight_histograms({"a": a}, layer="x", layout="grid")


def test_weight_histogram_range_is_not_set_by_outliers():
    """One weight at 25 std (as in VGG16's block3_conv1) must not squeeze the
    distribution into a couple of bins: it is counted in the edge bin and
    named in the title; tail=0 shows min..max."""
    from jaxconvviz.plotting import plot_weight_histograms

    w = np.random.default_rng(1).normal(0, 0.02, 10_000)
    w[0] = 0.5
    fig = plot_weight_histograms({"trained": w}, layer="block3_conv1", bins=40)
    ax = fig.axes[0]
    assert ax.get_xlim()[1] < 0.1  # the bulk, not the outlier, sets the range
    assert sum(p.get_height() for p in ax.patches) == w.size
    assert "beyond" in fig._suptitle.get_text() and "0.5" in fig._suptitle.get_text()
    full = plot_weight_histograms({"trained": w}, layer="x", bins=40, tail=0.0)
    assert full.axes[0].get_xlim()[1] >= 0.5
    with pytest.raises(ValueError, match="tail must be in"):
        plot_weight_histograms({"trained": w}, layer="x", tail=0.7)


# ----------------------------------------------------------------- CLI
@pytest.mark.hed
@pytest.mark.slow
def test_cli_kernels_hed(hed_path, tmp_path, capsys):
    rc = main(["kernels", "--weights", str(hed_path), "--out", str(tmp_path),
               "--compare-untrained"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "64 kernels, RGB" in out and "1728 weights" in out
    decode_png(tmp_path / "kernels_block1_conv1.png")
    decode_png(tmp_path / "weights_hist_block1_conv1.png")


@pytest.fixture
def tiny_cli(monkeypatch, tiny_params_notop):
    import jaxconvviz.commands.common as common

    model = jcv.tiny_vgg16(include_top=False)
    monkeypatch.setattr(common, "load_model_and_params",
                        lambda args, *, include_top: (model, tiny_params_notop,
                                                      "tiny VGG16 (random)"))
    return model


def test_cli_kernels_deeper_layer(tiny_cli, tmp_path, capsys):
    rc = main(["kernels", "--layer", "block3_conv1", "--channel", "1",
               "--filters", "0:5", "--limit", "0.5", "--out", str(tmp_path)])
    assert rc == 0
    assert "5 kernels, input channel 1, scale -0.5..0.5" in capsys.readouterr().out
    decode_png(tmp_path / "kernels_block3_conv1.png")
    decode_png(tmp_path / "weights_hist_block3_conv1.png")


@pytest.mark.parametrize("argv,msg", [
    (["--layer", "block1_pool"], "--layer must be one of block1_conv1, block1_conv2"),
    (["--layer", "nope"], "block5_conv3; got 'nope'"),
    (["--filters", "9"], "--filters must select filters in 0..3"),
    (["--channel", "3"], "--channel must be in 0..2"),
    (["--bins", "0"], "--bins must be >= 1"),
    (["--limit", "-1"], "--limit must be > 0"),
])
def test_cli_kernels_bad_args(tiny_cli, tmp_path, capsys, argv, msg):
    rc = main(["kernels", "--out", str(tmp_path), *argv])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and msg in err


# ------------------------------------------------ Fashion-MNIST note
def test_note_model_matches_the_note(note_model, note_params):
    assert note_model.layer_names == (
        "conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1", "flatten",
        "dense", "dropout", "dense_1")
    assert note_model.output_shape("conv2d", (28, 28)) == (28, 28, 32)
    assert note_model.output_shape("conv2d_1", (28, 28)) == (14, 14, 64)
    assert note_model.output_shape("flatten", (28, 28)) == (7 * 7 * 64,)
    assert note_params["dense"]["kernel"].shape == (3136, 100)


@pytest.mark.slow
def test_keras_untrained_params(note_model, note_untrained):
    p = note_untrained
    note_model.check_params(p)
    k = np.asarray(p["conv2d"]["kernel"])
    lim = math.sqrt(6 / (9 * 1 + 9 * 32))
    assert np.abs(k).max() <= lim and np.abs(k).max() > 0.8 * lim
    assert all(not np.asarray(v["bias"]).any() for v in p.values())


def test_save_note_figures(fashion, note_model, note_params, note_untrained,
                           tmp_path):
    untrained = note_untrained
    img = np.zeros((28, 28), np.uint8)
    img[8:22, 4:24] = 200  # a boot-ish block
    paths = fashion.save_note_figures(untrained, note_params, note_model, img,
                                      tmp_path / "fig")
    assert sorted(paths) == sorted([
        "input_image", "weights_hist_conv2d", "kernels_conv2d_trained",
        "kernels_conv2d_untrained", "feature_maps_conv2d", "feature_maps_conv2d_1"])
    for name, p in paths.items():
        # note_ prefix: `jaxconvviz kernels` writing weights_hist_<layer>.png
        # into the same folder must not overwrite the script's figure
        assert p == tmp_path / "fig" / f"note_{name}.png"
        decode_png(p)
    with pytest.raises(ValueError, match="one grey image"):
        fashion.save_note_figures(untrained, note_params, note_model,
                                  np.zeros((28, 28, 3)), tmp_path)
