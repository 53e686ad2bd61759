"""Activation grids (book listing 5.31), feature-map grids, their figures and
the ``activations`` CLI verb: values against hand-computed answers and the
book's own loop."""

from __future__ import annotations

import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.cli import main
from jaxconvviz.views.activation_grids import grid_shape

from .conftest import decode_png


def book_grid(acts: np.ndarray, images_per_row: int = 16) -> np.ndarray:
    """The book's listing 5.31 loop, verbatim apart from the plotting."""
    layer_activation = acts[None].astype(np.float32)
    n_features = layer_activation.shape[-1]
    size = layer_activation.shape[1]
    n_cols = n_features // images_per_row
    display_grid = np.zeros((size * n_cols, images_per_row * size))
    for col in range(n_cols):
        for row in range(images_per_row):
            channel_image = layer_activation[0, :, :, col * images_per_row + row].copy()
            channel_image -= channel_image.mean()
            channel_image /= channel_image.std()
            channel_image *= 64
            channel_image += 128
            channel_image = np.clip(channel_image, 0, 255).astype("uint8")
            display_grid[col * size:(col + 1) * size,
                         row * size:(row + 1) * size] = channel_image
    return display_grid


# ------------------------------------------------------------ pixel values
def test_known_mean_and_std_give_exact_pixels():
    a = np.zeros((2, 2, 2), np.float32)
    a[..., 0] = [[0, 2], [2, 0]]  # mean 1, std 1 -> 64, 192
    a[..., 1] = [[-1, 3], [3, -1]]  # mean 1, std 2 -> 64, 192
    g = np.asarray(jcv.activation_grid(a))
    np.testing.assert_array_equal(g, [[64, 192, 64, 192], [192, 64, 192, 64]])
    assert g.dtype == np.float32


def test_clipping_against_closed_form():
    a = np.zeros((4, 4, 1), np.float32)
    a[1, 2, 0] = 1.0  # one hot pixel: mean 1/16, std sqrt(15)/16
    g = np.asarray(jcv.activation_grid(a))
    std = np.sqrt(15) / 16
    zero = 128 + 64 * (-(1 / 16) / std)  # 111.47...
    expected = np.full((4, 4), zero)
    expected[1, 2] = 255.0  # z = 3.87 -> 375.9, clipped
    np.testing.assert_allclose(g, expected, rtol=1e-5)


def test_matches_the_books_loop_on_live_channels():
    rng = np.random.default_rng(0)
    a = np.maximum(rng.normal(size=(12, 12, 32)), 0).astype(np.float32) * 7.0
    ours = np.asarray(jcv.activation_grid(a, images_per_row=16))
    book = book_grid(a, 16)
    assert ours.shape == book.shape == (24, 192)
    # the book truncates to uint8, ours keeps the float: book <= ours < book + 1
    # (up to float32 reduction-order noise at integer boundaries)
    assert (ours - book > -1e-3).all() and (ours - book < 1 + 1e-3).all()
    x = a.astype(np.float64)
    z = (x - x.mean(axis=(0, 1))) / x.std(axis=(0, 1))
    want = np.clip(z * 64 + 128, 0, 255)
    np.testing.assert_allclose(ours[:12, :12], want[..., 0], atol=1e-3)
    np.testing.assert_allclose(ours[12:, 12 * 15:], want[..., 31], atol=1e-3)


@pytest.mark.parametrize("dead_value", [0.0, 128.0])
def test_dead_channels_are_flat_not_nan(dead_value):
    a = np.ones((5, 5, 4), np.float32)
    a[..., 0] = 0.0  # ReLU-dead
    a[..., 1] = 0.1  # constant whose float32 mean is off by an ulp
    a[..., 2] = 3.0
    a[..., 3] = np.arange(25, dtype=np.float32).reshape(5, 5)
    g = np.asarray(jcv.activation_grid(a, dead_value=dead_value))
    assert np.isfinite(g).all()
    np.testing.assert_array_equal(g[:, :15], dead_value)
    assert g[:, 15:].std() > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        book = book_grid(np.concatenate([a] * 4, axis=-1), 16)  # NaN channels
    assert np.isfinite(book).all()  # the book hides its NaN in astype('uint8')
    np.testing.assert_allclose(
        np.asarray(jcv.standardize_channels(a, dead_value=dead_value))[..., :3],
        dead_value)


# -------------------------------------------------------------- layout
def test_tile_positions_reading_order():
    h, w, c = 3, 4, 12  # one hot pixel per channel, at flat position k
    a = np.zeros((h, w, c), np.float32)
    for k in range(c):
        a[k // w, k % w, k] = 1.0
    g = np.asarray(jcv.activation_grid(a, images_per_row=5))
    assert g.shape == (3 * h, 5 * w)  # 12 channels -> 3 rows of 5 tiles
    for k in range(c):
        r, col = divmod(k, 5)
        tile = g[r * h:(r + 1) * h, col * w:(col + 1) * w]
        assert np.unravel_index(tile.argmax(), tile.shape) == (k // w, k % w)
        assert tile.max() == 255.0


def test_tile_channels_on_arange():
    h, w, c = 2, 3, 7
    maps = np.arange(h * w * c, dtype=np.float32).reshape(c, h, w).transpose(1, 2, 0)
    g = np.asarray(jcv.tile_channels(maps, n_rows=2, n_cols=4, pad_value=-1.0))
    assert g.shape == (4, 12)
    for k in range(8):
        r, col = divmod(k, 4)
        tile = g[r * h:(r + 1) * h, col * w:(col + 1) * w]
        want = maps[..., k] if k < c else np.full((h, w), -1.0)
        np.testing.assert_array_equal(tile, want)
    np.testing.assert_array_equal(g[:2, :3], [[0, 1, 2], [3, 4, 5]])


def test_last_row_padding():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4, 4, 20)).astype(np.float32)
    g = np.asarray(jcv.activation_grid(a, images_per_row=16, pad_value=7.0))
    assert g.shape == (8, 64)
    np.testing.assert_array_equal(g[4:, 16:], 7.0)  # tiles 20..31
    assert (g[4:, :16] != 7.0).any()


def test_fewer_channels_than_per_row_make_one_row():
    a = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
    assert jcv.activation_grid(a).shape == (2, 6)
    assert grid_shape(3) == (1, 3)
    assert grid_shape(64, images_per_row=16) == (4, 16)
    assert grid_shape(33, images_per_row=16) == (3, 16)


def test_batch_equals_one_at_a_time():
    rng = np.random.default_rng(2)
    a = np.maximum(rng.normal(size=(3, 6, 5, 10)), 0).astype(np.float32)
    a[1, ..., 4] = 0.0
    b = np.asarray(jcv.activation_grids(a, images_per_row=4))
    for i in range(3):
        np.testing.assert_array_equal(b[i], np.asarray(
            jcv.activation_grid(a[i], images_per_row=4)))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "16"])
def test_bad_images_per_row(bad):
    with pytest.raises(ValueError, match="images_per_row"):
        jcv.activation_grid(np.ones((2, 2, 2), np.float32), images_per_row=bad)


@pytest.mark.parametrize("shape,hint", [
    ((4, 4), "dense"), ((1, 4, 4, 2), "acts\\[0\\]"), ((4,), "")])
def test_bad_rank(shape, hint):
    with pytest.raises(ValueError, match=f"acts must have shape .*{hint}"):
        jcv.activation_grid(np.ones(shape, np.float32))


# --------------------------------------------------- with a real model
@pytest.mark.slow
def test_layer_grids_of_tiny_vgg(tiny_params_notop, tiny_model):
    model = jcv.tiny_vgg16(include_top=False)
    rng = np.random.default_rng(3)
    img = rng.uniform(0, 255, size=(32, 32, 3)).astype(np.float32)
    grids = jcv.layer_activation_grids(tiny_params_notop, img, images_per_row=4)
    assert tuple(grids) == model.spatial_layers[:8] == (
        "block1_conv1", "block1_conv2", "block1_pool", "block2_conv1",
        "block2_conv2", "block2_pool", "block3_conv1", "block3_conv2")
    acts = jcv.activations(tiny_params_notop, img[None], layers=list(grids))
    for name, g in grids.items():
        np.testing.assert_array_equal(np.asarray(g), np.asarray(
            jcv.activation_grid(acts[name][0], images_per_row=4)))
    with pytest.raises(ValueError,
                       match="layers must be one of block1_conv1.*got 'fc1'"):
        jcv.layer_activation_grids(tiny_params_notop, img, layers=["fc1"])
    with pytest.raises(ValueError, match="flatten"):
        jcv.layer_activation_grids(tiny_params_notop, img, layers=["flatten"],
                                   model=tiny_model)


# ------------------------------------------------------- feature maps
def test_feature_map_grid_values_and_positions():
    h, w, c = 3, 3, 32
    rng = np.random.default_rng(4)
    maps = rng.uniform(-2, 5, size=(h, w, c)).astype(np.float32)
    maps[..., 5] = 2.0  # constant map -> 0 (imshow's lowest colour)
    g = np.asarray(jcv.feature_map_grid(maps))
    assert g.shape == (4 * h, 8 * w)  # the note's 4x8 for 32 maps
    for k in range(c):
        r, col = divmod(k, 8)
        tile = g[r * h:(r + 1) * h, col * w:(col + 1) * w]
        m = maps[..., k]
        want = (m - m.min()) / (m.max() - m.min()) if k != 5 else np.zeros((h, w))
        np.testing.assert_allclose(tile, want, rtol=1e-5, atol=1e-6)
    raw = np.asarray(jcv.feature_map_grid(maps, normalize=False, n_rows=2, n_cols=3))
    assert raw.shape == (2 * h, 3 * w)  # only the first 6 maps
    np.testing.assert_array_equal(raw[h:, 2 * w:], maps[..., 5])
    assert jcv.feature_map_grid(np.ones((2, 2, 64), np.float32)).shape == (16, 16)


# -------------------------------------------------------------- figures
def test_plot_activation_grid_draws_the_grid():
    from jaxconvviz.plotting import plot_activation_grid

    rng = np.random.default_rng(5)
    a = rng.normal(size=(6, 4, 20)).astype(np.float32)
    g = np.asarray(jcv.activation_grid(a))
    fig = plot_activation_grid(g, layer="block9_conv9", tile_hw=(6, 4), n_channels=20)
    (ax,) = fig.axes
    assert ax.get_title() == "block9_conv9"
    shown = ax.images[0].get_array()
    pad = np.zeros(g.shape, bool)
    pad[6:, 16:] = True  # tiles 20..31 of the second row
    np.testing.assert_array_equal(shown.mask, pad)
    np.testing.assert_array_equal(shown.data[~pad], g[~pad])
    assert ax.images[0].norm.vmin == 0 and ax.images[0].norm.vmax == 255
    assert ax.images[0].get_cmap().name.startswith("viridis")
    w_in, h_in = fig.get_size_inches()
    np.testing.assert_allclose(w_in, 16.0)  # book: one inch per tile
    np.testing.assert_allclose(h_in, 2.0 + 0.35)
    fig2 = plot_activation_grid(g, layer="x", image_name="cat.png")
    assert fig2.axes[0].get_title() == "x (cat.png)"
    with pytest.raises(ValueError, match="tile_hw"):
        plot_activation_grid(g, layer="x", tile_hw=(5, 4))


def test_plot_feature_maps_matches_feature_map_grid():
    from jaxconvviz.plotting import plot_feature_maps

    rng = np.random.default_rng(6)
    maps = rng.uniform(size=(5, 5, 64)).astype(np.float32)
    fig = plot_feature_maps(maps, layer="conv2d_1")
    img = fig.axes[0].images[0].get_array()
    g = np.asarray(jcv.feature_map_grid(maps))
    assert img.shape == (8 * 6 - 1, 8 * 6 - 1)  # 8x8 tiles, 1-px gaps
    for k in (0, 9, 63):
        r, c = divmod(k, 8)
        np.testing.assert_allclose(img[r * 6:r * 6 + 5, c * 6:c * 6 + 5],
                                   g[r * 5:r * 5 + 5, c * 5:c * 5 + 5], atol=1e-6)
    assert img.mask[5, :].all()  # gap row


# ----------------------------------------------------------------- CLI
@pytest.mark.hed
def test_cli_activations_hed(hed_path, tmp_path, capsys):
    rc = main(["activations", str(jcv.CAT_PHOTO), "--weights", str(hed_path),
               "--size", "48", "--layers", "block1_conv1", "block2_pool",
               "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "hed_bsds500" in out and "48x48" in out
    a = decode_png(tmp_path / "activations_block1_conv1.png")
    b = decode_png(tmp_path / "activations_block2_pool.png")
    assert a.shape[1] > a.shape[0] * 3  # 64 channels: 4 rows of 16
    assert b.shape[1] < b.shape[0] * 3  # 128 channels: 8 rows of 16
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "activations_block1_conv1.png", "activations_block2_pool.png"]


@pytest.fixture
def tiny_cli(monkeypatch, tiny_params_notop):
    import jaxconvviz.commands.common as common

    model = jcv.tiny_vgg16(include_top=False)

    def fake(args, *, include_top):
        return model, tiny_params_notop, "tiny VGG16 (random)"

    monkeypatch.setattr(common, "load_model_and_params", fake)
    return model


def test_cli_activations_default_layers(tiny_cli, tmp_path):
    rc = main(["activations", str(jcv.CAT_PHOTO), "--size", "32",
               "--images-per-row", "4", "--out", str(tmp_path)])
    assert rc == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"activations_{n}.png" for n in tiny_cli.spatial_layers[:8])
    for p in tmp_path.iterdir():
        decode_png(p)


def test_cli_activations_bad_layer_lists_layers(tiny_cli, tmp_path, capsys):
    rc = main(["activations", str(jcv.CAT_PHOTO), "--layers", "block1_conv1",
               "nope", "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--layers must be one of block1_conv1, block1_conv2" in err
    assert "block5_pool" in err and "'nope'" in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv,msg", [
    (["--images-per-row", "0"], "--images-per-row must be >= 1"),
    (["--size", "0"], "--size must be >= 1"),
    (["--size", "8", "--layers", "block5_pool"], "too small for layer 'block5_pool'"),
])
def test_cli_activations_bad_args(tiny_cli, tmp_path, capsys, argv, msg):
    rc = main(["activations", str(jcv.CAT_PHOTO), "--out", str(tmp_path), *argv])
    assert rc == 2
    assert msg in capsys.readouterr().err


def test_cli_activations_missing_image(tmp_path, capsys):
    rc = main(["activations", str(tmp_path / "none.png"), "--out", str(tmp_path)])
    assert rc == 2
    assert "not found" in capsys.readouterr().err


def test_cli_activations_grey_model(monkeypatch, tmp_path, key):
    """A one-channel 28x28 model (the Fashion-MNIST note's shape): the image
    is converted to grey luma, resized to the model's input size, and the
    default layers are its spatial ones."""
    import jaxconvviz.commands.common as common
    from jaxconvviz.models.convnet import ConvNet, Layer

    model = ConvNet(layers=(
        Layer.make("conv2d", "conv", features=4, kernel_size=3, activation="relu"),
        Layer.make("max_pooling2d", "maxpool", pool_size=2),
        Layer.make("flatten", "flatten"),
        Layer.make("dense", "dense", features=3, activation="softmax"),
    ), input_shape=(28, 28, 1), preprocessing="scale01")
    params = model.init_params(key)
    monkeypatch.setattr(common, "load_model_and_params",
                        lambda args, *, include_top: (model, params, "grey net"))
    assert main(["activations", str(jcv.CAT_PHOTO), "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "activations_conv2d.png", "activations_max_pooling2d.png"]
    grey = common.load_image_for(jcv.CAT_PHOTO, model)
    assert grey.shape == (28, 28, 1)
