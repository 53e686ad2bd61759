"""Grad-CAM and heatmap overlays: closed forms, a trained truth test, the Keras
oracle, invariants, error messages and the ``gradcam`` CLI."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.attribution.gradcam import grad_cam_with_scores
from jaxconvviz.models.convnet import ConvNet, Layer
from jaxconvviz.run import Run
from jaxconvviz.views.heatmaps import colorize, overlay, resize_heatmaps

from .conftest import CAT

# Accelerators may run float32 convs in TF32 by default; every value test here
# runs at full float32, and the GPU tolerance is wider (cuDNN picks different
# algorithms per batch size), as equinox's tree_allclose does.
ATOL = 1e-6 if jax.default_backend() == "cpu" else 1e-4


@pytest.fixture(autouse=True)
def _full_float32():
    with jax.default_matmul_precision("float32"):
        yield


# --------------------------------------------------------------- helpers
def gap_model(classes: int = 3, *, hw: int = 8, act: str = "softmax") -> ConvNet:
    """conv(4, 3x3 valid, relu) -> GAP -> dense: Grad-CAM has a closed form."""
    return ConvNet(layers=(
        Layer.make("c1", "conv", features=4, kernel_size=3, padding="valid",
                   activation="relu"),
        Layer.make("gap", "gap"),
        Layer.make("d", "dense", features=classes, activation=act),
    ), input_shape=(hw, hw, 3), preprocessing="none")


def gap_params(rng, classes: int = 3, *, bias: float = 0.0):
    return {
        "c1": {"kernel": rng.normal(0, 0.05, (3, 3, 3, 4)).astype(np.float32),
               "bias": np.full((4,), bias, np.float32)},
        "d": {"kernel": rng.normal(0, 1.0, (4, classes)).astype(np.float32),
              "bias": rng.normal(0, 1.0, (classes,)).astype(np.float32)},
    }


def conv_valid_relu(x, kernel, bias):
    """Independent NumPy 'valid' conv + ReLU, NHWC / HWIO."""
    kh, kw = kernel.shape[:2]
    n, h, w, _ = x.shape
    out = np.zeros((n, h - kh + 1, w - kw + 1, kernel.shape[-1]), np.float64)
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nhwc,cf->nhwf", x[:, i:i + out.shape[1],
                                               j:j + out.shape[2]], kernel[i, j])
    return np.maximum(out + bias, 0.0)


def closed_form_cam(x, params, k):
    """For GAP + dense, d y_k / d A_ijc = W[c, k] / (h w): the Grad-CAM is the
    ReLU of the class-weighted channel sum (the CAM of Zhou et al.), / max."""
    a = conv_valid_relu(x.astype(np.float64), params["c1"]["kernel"],
                        params["c1"]["bias"])
    k = np.broadcast_to(k, (x.shape[0],))
    w = params["d"]["kernel"][:, k].T  # (n, c)
    cam = np.maximum(np.einsum("nhwc,nc->nhw", a, w) / (a.shape[1] * a.shape[2]), 0)
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, cam / np.where(peak > 0, peak, 1), 0.0)


@pytest.fixture(scope="module")
def images8():
    return np.random.default_rng(0).uniform(0, 255, (5, 8, 8, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def images32():
    return np.random.default_rng(1).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)


# --------------------------------------------------------------- closed form
@pytest.mark.parametrize("k", [0, 1, 2])
def test_gap_dense_matches_closed_form(images8, k):
    params = gap_params(np.random.default_rng(3))
    cam = jcv.grad_cam(params, images8, layer="c1", class_index=k,
                       model=gap_model())
    ref = closed_form_cam(images8, params, k)
    np.testing.assert_allclose(np.asarray(cam), ref, rtol=1e-5, atol=ATOL)
    # normalised per image: each non-empty map peaks at exactly 1 (to rounding)
    peaks = np.asarray(cam).max(axis=(1, 2))
    np.testing.assert_allclose(peaks[ref.max(axis=(1, 2)) > 0], 1.0, atol=ATOL)


def test_top1_and_binary_sigmoid_head(images8):
    params = gap_params(np.random.default_rng(4))
    model = gap_model()
    cam, logits, used = grad_cam_with_scores(params, images8, layer="c1",
                                             model=model)
    # the logits are pre-softmax, and None explains each image's top-1
    a = conv_valid_relu(images8.astype(np.float64), params["c1"]["kernel"], 0.0)
    ref_logits = a.mean(axis=(1, 2)) @ params["d"]["kernel"] + params["d"]["bias"]
    np.testing.assert_allclose(np.asarray(logits), ref_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(used), ref_logits.argmax(-1))
    np.testing.assert_allclose(np.asarray(cam),
                               closed_form_cam(images8, params, ref_logits.argmax(-1)),
                               rtol=1e-5, atol=ATOL)
    # 1-unit sigmoid head: the score is its single logit
    bparams = gap_params(np.random.default_rng(5), classes=1)
    bmodel = gap_model(1, act="sigmoid")
    cam_b = jcv.grad_cam(bparams, images8, layer="c1", model=bmodel)
    np.testing.assert_allclose(np.asarray(cam_b), closed_form_cam(images8, bparams, 0),
                               rtol=1e-5, atol=ATOL)
    np.testing.assert_array_equal(
        np.asarray(jcv.grad_cam(bparams, images8, layer="c1", model=bmodel,
                                class_index=0)), np.asarray(cam_b))
    with pytest.raises(ValueError, match=r"class_index must be in 0 \(the single"):
        jcv.grad_cam(bparams, images8, layer="c1", model=bmodel, class_index=1)


def test_all_zero_maps_stay_zero_without_nan(images8):
    rng = np.random.default_rng(6)
    params = gap_params(rng)
    # class 0 with only negative weights: every location argues against it
    params["d"]["kernel"][:, 0] = -np.abs(params["d"]["kernel"][:, 0]) - 0.1
    cam = np.asarray(jcv.grad_cam(params, images8, layer="c1", class_index=0,
                                  model=gap_model()))
    assert np.isfinite(cam).all()
    np.testing.assert_array_equal(cam, 0.0)
    # dead layer: a huge negative bias makes every activation 0
    dead = gap_params(rng, bias=-1e4)
    cam = np.asarray(jcv.grad_cam(dead, images8, layer="c1", model=gap_model()))
    assert np.isfinite(cam).all()
    np.testing.assert_array_equal(cam, 0.0)
    # other images in the batch are unaffected by an all-zero neighbour
    mixed = gap_params(rng)
    x = images8.copy()
    x[2] = 0.0  # with zero bias a black image gives all-zero activations
    cam = np.asarray(jcv.grad_cam(mixed, x, layer="c1", class_index=1,
                                  model=gap_model()))
    np.testing.assert_array_equal(cam[2], 0.0)
    np.testing.assert_allclose(cam, closed_form_cam(x, mixed, 1), rtol=1e-5,
                               atol=ATOL)


# --------------------------------------------------------------- invariants
@pytest.mark.slow
def test_batched_equals_per_image_and_chunking(tiny_model, tiny_params, images32):
    full = np.asarray(jcv.grad_cam(tiny_params, images32, layer="block4_conv3"))
    for i in range(len(images32)):
        one = np.asarray(jcv.grad_cam(tiny_params, images32[i:i + 1],
                                      layer="block4_conv3"))
        np.testing.assert_allclose(one[0], full[i], rtol=1e-5, atol=ATOL)
    # batch_size chunks (2 + 2 + padded 1) reuse one compilation, same values
    from jaxconvviz.attribution.cams import cam_batch as _grad_cam_batch

    jcv.grad_cam(tiny_params, images32[:2], layer="block4_conv3")  # warm: n=2
    before = _grad_cam_batch._cache_size()
    chunked = np.asarray(jcv.grad_cam(tiny_params, images32, layer="block4_conv3",
                                      run=Run(batch_size=2)))
    assert _grad_cam_batch._cache_size() == before
    np.testing.assert_allclose(chunked, full, rtol=1e-5, atol=ATOL)
    assert chunked.shape == (5, 4, 4) and chunked.dtype == np.float32


def test_class_index_forms_agree(tiny_params, images32):
    _, logits, used = grad_cam_with_scores(tiny_params, images32)
    top1 = np.asarray(logits).argmax(-1)
    np.testing.assert_array_equal(np.asarray(used), top1)
    by_none = np.asarray(jcv.grad_cam(tiny_params, images32))
    by_array = np.asarray(jcv.grad_cam(tiny_params, images32, class_index=top1))
    np.testing.assert_array_equal(by_none, by_array)
    by_int = np.asarray(jcv.grad_cam(tiny_params, images32, class_index=7))
    by_full = np.asarray(jcv.grad_cam(tiny_params, images32,
                                      class_index=np.full(5, 7)))
    np.testing.assert_array_equal(by_int, by_full)
    by_np_int = np.asarray(jcv.grad_cam(tiny_params, images32,
                                        class_index=np.int64(7)))
    np.testing.assert_array_equal(by_int, by_np_int)
    # a different class gives a different map (the class matters)
    assert np.abs(by_int - np.asarray(jcv.grad_cam(tiny_params, images32,
                                                   class_index=8))).max() > 1e-3


def test_bf16_compute_close_to_float32(images8):
    params = gap_params(np.random.default_rng(8))
    model = gap_model()
    ref = np.asarray(jcv.grad_cam(params, images8, layer="c1", class_index=1,
                                  model=model))
    low = jcv.grad_cam(params, images8, layer="c1", class_index=1,
                       model=model.with_dtype(jnp.bfloat16))
    assert low.dtype == jnp.float32  # maps are float32 whatever the compute dtype
    assert np.isfinite(np.asarray(low)).all()
    assert np.abs(np.asarray(low) - ref).max() < 0.05
    # Run(dtype=...) computes the same way
    via_run = jcv.grad_cam(params, images8, layer="c1", class_index=1, model=model,
                           run=Run(dtype="bfloat16"))
    np.testing.assert_array_equal(np.asarray(via_run), np.asarray(low))


# --------------------------------------------------------------- bad input
def test_errors_name_the_problem(tiny_params, tiny_params_notop, images32):
    with pytest.raises(ValueError, match="jaxconvviz weights fetch imagenet --top"):
        jcv.grad_cam(tiny_params_notop, images32)
    with pytest.raises(ValueError, match=r"load_vgg16\('imagenet', include_top=True"):
        jcv.grad_cam(tiny_params_notop, images32)
    with pytest.raises(ValueError, match=r"layer must be one of .*block5_conv3.*"
                                         r"got 'fc1'"):
        jcv.grad_cam(tiny_params, images32, layer="fc1")
    with pytest.raises(ValueError, match=r"block5_conv3; got 'conv5'"):
        jcv.grad_cam(tiny_params, images32, layer="conv5")
    # pooling (spatial, but a resampled copy of the layer below) is refused,
    # naming the nearest CAM layers
    with pytest.raises(ValueError, match=r"got 'block5_pool', a maxpool layer .*"
                                         r"nearest are 'block5_conv3' \(before it\)"):
        jcv.grad_cam(tiny_params, images32, layer="block5_pool")
    with pytest.raises(ValueError, match=r"got 'block3_pool', a maxpool layer .*"
                                         r"'block3_conv3' \(before it\) and "
                                         r"'block4_conv1' \(after it\)"):
        jcv.cam(tiny_params, images32, method="scorecam", layer="block3_pool")
    with pytest.raises(ValueError, match=r"class_index must be in 0\.\.999 .*got 1000"):
        jcv.grad_cam(tiny_params, images32, class_index=1000)
    with pytest.raises(ValueError, match=r"0\.\.999.*got -1"):
        jcv.grad_cam(tiny_params, images32, class_index=np.array([0, 1, -1, 2, 3]))
    with pytest.raises(ValueError, match=r"shape \(5,\).*got shape \(2,\)"):
        jcv.grad_cam(tiny_params, images32, class_index=np.array([0, 1]))
    with pytest.raises(ValueError, match="got dtype float"):
        jcv.grad_cam(tiny_params, images32, class_index=1.5)
    with pytest.raises(ValueError, match="class_index must be None"):
        jcv.grad_cam(tiny_params, images32, class_index=True)
    with pytest.raises(ValueError, match=r"add a batch axis"):
        jcv.grad_cam(tiny_params, images32[0])
    with pytest.raises(ValueError, match=r"must be 32x32 .* got 64x64"):
        jcv.grad_cam(tiny_params, np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(n, h, w, 3\); got \(1, 32, 32, 1\)"):
        jcv.grad_cam(tiny_params, np.zeros((1, 32, 32, 1), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        jcv.grad_cam(tiny_params, np.full((1, 32, 32, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="batch_size must be None or a positive int"):
        jcv.grad_cam(tiny_params, images32, run=Run(batch_size=0))
    gap = gap_model()
    with pytest.raises(ValueError, match="params without layer 'd'"):
        jcv.grad_cam({"c1": gap_params(np.random.default_rng(0))["c1"]},
                     np.zeros((1, 8, 8, 3), np.float32), layer="c1", model=gap)
    notop = ConvNet(layers=gap.layers[:1], input_shape=(8, 8, 3),
                    preprocessing="none")
    with pytest.raises(ValueError, match="needs a classifier top"):
        jcv.grad_cam({}, np.zeros((1, 8, 8, 3), np.float32), layer="c1",
                     model=notop)


# --------------------------------------------------------------- Keras oracle
def _keras_grad_cam(keras, kmodel, layer, x_model, classes):
    """Grad-CAM the Keras way (Chollet 2nd ed. ch. 9 / tf-keras-vis): two
    models split at ``layer``, one image at a time (so the book's pooling over
    axes (0, 1, 2) is exact), the last activation replaced by linear
    (tf-keras-vis ``ReplaceToLinear``) so the score is the logit."""
    kmodel.layers[-1].activation = keras.activations.linear
    conv_model = keras.Model(kmodel.inputs, kmodel.get_layer(layer).output)
    inp = keras.Input(tuple(conv_model.output.shape[1:]))
    h, seen = inp, False
    for lay in kmodel.layers:
        if seen:
            h = lay(h)
        seen = seen or lay.name == layer
    head = keras.Model(inp, h)
    grad_fn = jax.jit(jax.grad(lambda a, k: head(a)[0, k]))  # jit: speed only
    out = []
    for i, k in enumerate(classes):
        acts = conv_model(x_model[i:i + 1])
        grads = grad_fn(acts, k)
        pooled = keras.ops.mean(grads, axis=(0, 1, 2))
        heat = np.mean(np.asarray(acts[0] * pooled), axis=-1)
        heat = np.maximum(heat, 0)
        out.append(heat / heat.max() if heat.max() > 0 else heat)
    return np.stack(out)


@pytest.mark.keras
@pytest.mark.slow
def test_matches_keras_oracle_small_cnn(keras):
    kl = keras.layers
    kmodel = keras.Sequential([
        keras.Input((16, 16, 3)),
        kl.Conv2D(4, 3, name="c1", activation="relu"),
        kl.GlobalAveragePooling2D(name="gap"),
        kl.Dense(3, name="d", activation="softmax"),
    ])
    rng = np.random.default_rng(11)
    params = {"c1": {"kernel": rng.normal(0, 0.05, (3, 3, 3, 4)),
                     "bias": rng.normal(0, 0.1, 4)},
              "d": {"kernel": rng.normal(0, 1, (4, 3)), "bias": rng.normal(0, 1, 3)}}
    params = {k: {n: np.asarray(a, np.float32) for n, a in v.items()}
              for k, v in params.items()}
    for name in ("c1", "d"):
        kmodel.get_layer(name).set_weights([params[name]["kernel"],
                                            params[name]["bias"]])
    model = ConvNet(layers=(
        Layer.make("c1", "conv", features=4, kernel_size=3, padding="valid",
                   activation="relu"),
        Layer.make("gap", "gap"),
        Layer.make("d", "dense", features=3, activation="softmax"),
    ), input_shape=(16, 16, 3), preprocessing="none")
    x = rng.uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
    classes = np.array([0, 1, 2, 1])
    with jax.default_matmul_precision("float32"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras' input-structure notice
        with jax.numpy_rank_promotion("allow"):  # Keras' own bias broadcast
            ref = _keras_grad_cam(keras, kmodel, "c1", x, classes)
        ours = np.asarray(jcv.grad_cam(params, x, layer="c1", class_index=classes,
                                       model=model))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.keras
@pytest.mark.parametrize("layer", ["block5_conv3", "block3_conv3"])
@pytest.mark.slow
def test_matches_keras_oracle_tiny_vgg(keras, tiny_model, tiny_params, images32,
                                       layer):
    kl = keras.layers
    seq = [keras.Input((32, 32, 3))]
    for spec in tiny_model.layers:
        o = spec.opt
        if spec.kind == "conv":
            seq.append(kl.Conv2D(o("features"), 3, padding="same", activation="relu",
                                 name=spec.name))
        elif spec.kind == "maxpool":
            seq.append(kl.MaxPooling2D(2, 2, name=spec.name))
        elif spec.kind == "flatten":
            seq.append(kl.Flatten(name=spec.name))
        else:
            seq.append(kl.Dense(o("features"), activation=o("activation"),
                                name=spec.name))
    kmodel = keras.Sequential(seq)
    for name, p in tiny_params.items():
        kmodel.get_layer(name).set_weights([np.asarray(p["kernel"]),
                                            np.asarray(p["bias"])])
    classes = np.array([5, 386, 999, 0, 42])
    x_caffe = keras.applications.vgg16.preprocess_input(images32.copy())
    with jax.default_matmul_precision("float32"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with jax.numpy_rank_promotion("allow"):
            ref = _keras_grad_cam(keras, kmodel, layer, x_caffe, classes)
        ours = np.asarray(jcv.grad_cam(tiny_params, images32, layer=layer,
                                       class_index=classes))
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------- truth test
# the toy task of jaxconvviz.attribution.toy: coloured squares on noise
# (the trained net is the session fixture ``trained_blob_net`` in conftest)
from jaxconvviz.attribution.toy import (  # noqa: E402
    COLOURS,
    SIDE,
    blob_images,
)


def _hit_rate(cam, mask):
    """Fraction of maps whose (bilinearly upsampled) argmax is in the blob."""
    up = resize_heatmaps(np.asarray(cam), (SIDE, SIDE))
    arg = up.reshape(len(up), -1).argmax(-1)
    return float(np.asarray(mask).reshape(len(up), -1)[np.arange(len(up)), arg].mean())


@pytest.mark.slow
def test_trained_net_heatmap_finds_the_blob(trained_blob_net):
    model, params = trained_blob_net
    x, y, mask = blob_images(jax.random.key(99), 200)  # held out
    acc = float((np.asarray(jcv.predict(params, x, model=model)).argmax(-1)
                 == np.asarray(y)).mean())
    assert acc >= 0.95
    cam = jcv.grad_cam(params, x, layer="c2", model=model)  # top-1 class
    assert _hit_rate(cam, mask) >= 0.9


@pytest.mark.slow
def test_trained_net_heatmap_is_class_specific(trained_blob_net):
    """Two blobs of different colours: the map of each colour's class sits on
    that colour's blob, not on the other one."""
    model, params = trained_blob_net
    xa, ya, ma = blob_images(jax.random.key(7), 240)
    _, yb, mb = blob_images(jax.random.key(8), 240)
    yb = (ya + 1 + jax.random.randint(jax.random.key(9), (240,), 0, 2)) % 3
    x = jnp.where(mb[..., None], jnp.asarray(COLOURS)[yb][:, None, None, :], xa)
    keep = ~np.asarray(jnp.any(ma & mb, axis=(1, 2)))  # blobs must not overlap
    x, ya, yb, ma, mb = (np.asarray(a)[keep] for a in (x, ya, yb, ma, mb))
    assert len(x) >= 150
    for cls, mask in ((ya, ma), (yb, mb)):
        cam = jcv.grad_cam(params, x, layer="c2", model=model, class_index=cls)
        assert _hit_rate(cam, mask) >= 0.9


# --------------------------------------------------------------- overlay
def test_overlay_saturated_inputs_do_not_overflow():
    img = np.full((1, 6, 5, 3), 255, np.uint8)
    heat = np.ones((1, 3, 3), np.float32)
    out = overlay(img, heat, alpha=0.4)
    assert out.dtype == np.uint8 and out.shape == (1, 6, 5, 3)
    # jet(1.0) = (0.5, 0, 0); the book's 0.4 * heat + img would reach 306
    np.testing.assert_array_equal(out[0, 0, 0], [204, 153, 153])
    assert (out == np.array([204, 153, 153], np.uint8)).all()
    # float input beyond [0, 255] is clipped, never wrapped; jet(0) = (0, 0, .5)
    big = overlay(np.full((1, 2, 2, 3), 400.0, np.float32), np.zeros((1, 2, 2)),
                  alpha=0.5)
    assert (big == np.array([128, 128, 191], np.uint8)).all()


def test_overlay_alpha_endpoints_and_blend():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 4, 6, 3), dtype=np.uint8)
    heat = rng.uniform(0, 1, (2, 4, 6)).astype(np.float32)
    np.testing.assert_array_equal(overlay(img, heat, alpha=0.0), img)
    np.testing.assert_array_equal(overlay(img, heat, alpha=1.0),
                                  colorize(heat, colormap="jet"))
    gray = overlay(img, heat, alpha=0.25, colormap="gray")
    ref = 0.75 * img.astype(np.float64) + 0.25 * (heat[..., None] * 255.0)
    assert np.abs(gray.astype(np.float64) - ref).max() <= 1.0  # LUT + rounding


def test_heatmap_resize_is_smooth_bilinear():
    heat = np.array([[[0.0, 1.0], [1.0, 0.0]]], np.float32)
    up = resize_heatmaps(heat, (4, 4))
    # pixel centres: source coordinates -0.25, 0.25, 0.75, 1.25 -> clamp
    t = np.array([0.0, 0.25, 0.75, 1.0])
    ref = t[None, :] * (1 - t[:, None]) + (1 - t[None, :]) * t[:, None]
    np.testing.assert_allclose(up[0], ref, atol=1e-6)
    # through overlay: alpha=1 with 'gray' shows the interpolated levels
    out = overlay(np.zeros((1, 4, 4, 3), np.uint8), heat, alpha=1.0, colormap="gray")
    np.testing.assert_allclose(out[0, ..., 0], ref * 255, atol=1.0)
    assert len(np.unique(out[0, ..., 0])) > 2  # not nearest-neighbour blocks


def test_overlay_errors():
    img = np.zeros((1, 4, 4, 3), np.uint8)
    heat = np.zeros((1, 2, 2), np.float32)
    with pytest.raises(ValueError, match=r"colormap must be .*jet.*got 'jett'"):
        overlay(img, heat, colormap="jett")
    with pytest.raises(ValueError, match=r"alpha must be .* \[0, 1\]; got 1.5"):
        overlay(img, heat, alpha=1.5)
    with pytest.raises(ValueError, match=r"heatmaps must lie in \[0, 1\]"):
        overlay(img, heat + 2.0)
    with pytest.raises(ValueError, match="NaN"):
        overlay(img, np.full((1, 2, 2), np.nan))
    with pytest.raises(ValueError, match="same number"):
        overlay(np.zeros((2, 4, 4, 3)), heat)
    with pytest.raises(ValueError, match="add a batch axis"):
        overlay(img[0], heat)
    with pytest.raises(ValueError, match=r"heatmaps must have shape \(n, h, w\)"):
        overlay(img, heat[0])


def test_overlay_module_is_jax_free_and_exported_lazily():
    import jaxconvviz.views.heatmaps as heatmaps

    text = open(heatmaps.__file__, encoding="utf-8").read()
    import re

    assert not re.search(r"^\s*(import|from) jax(\.| |$)", text, re.M)
    assert "overlay" in jcv._LAZY and jcv.overlay is overlay


# --------------------------------------------------------------- plotting
def test_plot_gradcam_panels_show_the_data():
    from matplotlib.figure import Figure

    from jaxconvviz.plotting import plot_gradcam

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    heat = rng.uniform(0, 1, (4, 5)).astype(np.float32)
    ov = overlay(img[None], heat[None])[0]
    fig = plot_gradcam(img, heat, ov, title="Grad-CAM: tabby (281)",
                       predictions=[("n1", "tabby", 0.925), ("n2", "tiger_cat", 0.07)])
    assert isinstance(fig, Figure)
    panels = fig.axes[:3]  # then the colour bar's axes
    assert len(fig.axes) == 4
    np.testing.assert_array_equal(np.asarray(panels[0].images[0].get_array()), img)
    np.testing.assert_allclose(np.asarray(panels[1].images[0].get_array()), heat)
    np.testing.assert_array_equal(np.asarray(panels[2].images[0].get_array()), ov)
    title = fig._suptitle.get_text()
    assert "tabby (281)" in title and "tabby 92.5%" in title
    assert "tiger_cat 7.0%" in title
    with pytest.raises(ValueError, match="heatmap must be one map"):
        plot_gradcam(img, heat[None], ov)


# --------------------------------------------------------------- CLI
@pytest.fixture
def tiny_cli(monkeypatch, tiny_model, tiny_params):
    import jaxconvviz.commands.common as common

    monkeypatch.setattr(common, "load_model_and_params",
                        lambda args, include_top: (tiny_model, tiny_params, "tiny"))


@pytest.mark.slow
def test_cli_gradcam_writes_figure_and_overlay(tiny_cli, tiny_params, tmp_path,
                                               capsys):
    from PIL import Image

    from jaxconvviz.cli import main

    assert main(["gradcam", str(CAT), "--out", str(tmp_path), "--alpha", "0.5"]) == 0
    out = capsys.readouterr().out
    x = jcv.load_img(CAT, target_size=(32, 32))
    probs = np.asarray(jcv.predict(tiny_params, x[None]))
    top3 = jcv.decode_predictions(probs, top=3)[0]
    for rank, (_, name, p) in enumerate(top3, 1):
        assert f"{rank}. {name}: {p:.4f}" in out
    assert f"Grad-CAM of {top3[0][1]} (index {int(probs.argmax())})" in out
    fig_png = Image.open(tmp_path / "gradcam_chelsea.png")
    assert fig_png.size[0] > 600
    ov = np.asarray(Image.open(tmp_path / "overlay_chelsea.png"))
    photo = jcv.load_img(CAT)
    assert ov.shape == photo.shape  # drawn on the full-resolution photo
    cam = np.asarray(jcv.grad_cam(tiny_params, x[None]))
    np.testing.assert_array_equal(ov, overlay(photo[None], cam, alpha=0.5)[0])


def test_cli_gradcam_explicit_class_and_errors(tiny_cli, tmp_path, capsys):
    from jaxconvviz.cli import main

    assert main(["gradcam", str(CAT), "--out", str(tmp_path), "--class", "386"]) == 0
    assert "Grad-CAM of African_elephant (index 386)" in capsys.readouterr().out
    assert main(["gradcam", str(CAT), "--out", str(tmp_path), "--class", "1000"]) == 2
    assert "--class must be in 0..999" in capsys.readouterr().err
    assert main(["gradcam", str(tmp_path / "nope.png"), "--out", str(tmp_path)]) == 2
    assert "image file not found" in capsys.readouterr().err
    assert main(["gradcam", str(CAT), "--out", str(tmp_path), "--layer", "fc2"]) == 2
    assert "--layer must be one of" in capsys.readouterr().err
    assert main(["gradcam", str(CAT), "--out", str(tmp_path), "--alpha", "2"]) == 2
    assert "--alpha must be in [0, 1]" in capsys.readouterr().err


def test_cli_gradcam_without_imagenet_weights_says_how_to_fetch(monkeypatch,
                                                                tmp_path, capsys):
    import jaxconvviz.commands.common as common
    from jaxconvviz.cli import main

    def offline(args, include_top):
        raise OSError("cannot download https://example/vgg16.h5: no network")

    monkeypatch.setattr(common, "load_model_and_params", offline)
    assert main(["gradcam", str(CAT), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "jaxconvviz weights fetch imagenet --top" in err
    # HED weights have no classifier: the real loader refuses include_top
    monkeypatch.undo()
    assert main(["gradcam", str(CAT), "--out", str(tmp_path), "--weights",
                 "hed"]) == 2
    assert "jaxconvviz weights fetch imagenet --top" in capsys.readouterr().err


# --------------------------------------------------------------- --method, explain
ALL_METHODS = jcv.explain_methods()


@pytest.mark.slow
@pytest.mark.parametrize("method", ALL_METHODS)
def test_cli_gradcam_every_method(tiny_cli, tiny_params, tmp_path, capsys, method):
    from PIL import Image

    from jaxconvviz.attribution.explain import heatmaps
    from jaxconvviz.cli import main

    assert main(["gradcam", str(CAT), "--out", str(tmp_path), "--method",
                 method]) == 0
    assert "of " in capsys.readouterr().out
    prefix = "gradcam" if method == "gradcam" else method.replace("+", "p")
    ov_name = "overlay_chelsea.png" if method == "gradcam" else (
        f"overlay_{prefix}_chelsea.png")
    ov = np.asarray(Image.open(tmp_path / ov_name))
    x = jcv.load_img(CAT, target_size=(32, 32))
    k = np.asarray(jcv.predict(tiny_params, x[None])).argmax(-1).astype(np.int32)
    cam = heatmaps(tiny_params, x[None], method, k, model=jcv.tiny_vgg16(),
                   layer="block5_conv3", key=jax.random.key(0))
    photo = jcv.load_img(CAT)
    np.testing.assert_array_equal(ov, overlay(photo[None], cam)[0])
    assert (tmp_path / f"{prefix}_chelsea.png").is_file()


def test_cli_gradcam_unknown_method(tiny_cli, tmp_path, capsys):
    from jaxconvviz.cli import main

    assert main(["gradcam", str(CAT), "--out", str(tmp_path), "--method",
                 "gradcam+"]) == 2
    assert "--method must be one of gradcam, gradcam++" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_explain_writes_figures_and_metrics(tiny_cli, tiny_params, tmp_path,
                                                capsys):
    import csv

    from jaxconvviz.cli import main

    from .conftest import ELEPHANT, decode_png

    assert main(["explain", str(CAT), str(ELEPHANT), "--methods",
                 "gradcam,scorecam,saliency", "--steps", "4", "--out",
                 str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "metrics.csv" in out
    for name in ("explain_chelsea.png", "explain_african_elephants.png",
                 "metrics.png"):
        decode_png(tmp_path / name)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [(r["image"], r["method"]) for r in rows] == [
        (img, m) for img in ("chelsea.png", "african_elephants.jpg")
        for m in ("gradcam", "scorecam", "saliency")]
    x = np.stack([jcv.load_img(p, target_size=(32, 32)) for p in (CAT, ELEPHANT)])
    maps = np.asarray(jcv.cam(tiny_params, x, method="scorecam"))
    want = jcv.deletion(tiny_params, x, maps, steps=4).auc
    got = [float(r["deletion_auc"]) for r in rows if r["method"] == "scorecam"]
    np.testing.assert_allclose(got, want, rtol=1e-4)
    assert main(["explain", str(CAT), "--methods", "gradcam,nope", "--out",
                 str(tmp_path)]) == 2
    assert "--methods must be a comma list" in capsys.readouterr().err


def test_overlay_accepts_grey_images():
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (2, 5, 6), dtype=np.uint8)
    heat = rng.uniform(0, 1, (2, 3, 3)).astype(np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    want = overlay(rgb, heat, alpha=0.3)
    np.testing.assert_array_equal(overlay(grey, heat, alpha=0.3), want)
    np.testing.assert_array_equal(overlay(grey[..., None], heat, alpha=0.3), want)
    # alpha 0 gives the grey image back, as RGB
    np.testing.assert_array_equal(overlay(grey, heat, alpha=0.0), rgb)
    with pytest.raises(ValueError, match="add a batch axis"):
        overlay(rgb[0], heat[:1])
