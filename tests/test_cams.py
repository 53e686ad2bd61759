"""The CAM family: closed forms on hand-set GAP models, an independent NumPy
reference of every method (pytorch-grad-cam's formulas, NCHW, float64) on a
conv-conv-flatten-dense net whose gradient is known in closed form, batched ==
one image at a time, chunking, errors, and localization on a trained net."""

# ruff: noqa: F811 -- pytest fixtures imported from test_gradcam
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.attribution._cam_common import resize_matrix
from jaxconvviz.attribution.cam_perturbation import live_first
from jaxconvviz.attribution.cams import cam_batch
from jaxconvviz.attribution.toy import SIDE, blob_images
from jaxconvviz.models.convnet import ConvNet, Layer
from jaxconvviz.run import Run

from .test_gradcam import (  # noqa: F401 -- fixtures and helpers
    conv_valid_relu,
    gap_model,
    gap_params,
    images8,
)

CAM_METHODS = jcv.cam_methods()


@pytest.fixture(autouse=True)
def _full_float32():
    with jax.default_matmul_precision("float32"):
        yield


def _norm(cam):
    cam = np.maximum(cam, 0.0)
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, cam / np.where(peak > 0, peak, 1.0), 0.0)


# ------------------------------------------------- closed forms (GAP + dense)
# For conv -> GAP -> dense, G_ijc = W[c, k] / (h w) =: g_c, constant over space.
@pytest.fixture(scope="module")
def gap_case(images8):
    params = gap_params(np.random.default_rng(21))
    a = conv_valid_relu(images8.astype(np.float64), params["c1"]["kernel"], 0.0)
    return params, a


def _gap_closed_form(method, a, wk):
    hw = a.shape[1] * a.shape[2]
    g = wk / hw  # (n, c)
    s = a.sum(axis=(1, 2))  # (n, c)
    if method in ("gradcam", "hirescam"):
        w = g
    elif method == "xgradcam":  # sum_ij g A / sum_ij A = g (where sum A > 0)
        w = np.where(s > 0, g * s / (s + 1e-7), 0.0)
    elif method == "gradcam++":  # hw g^2 / (2 g^2 + S g^3) * relu(g)
        w = np.where(g > 0, hw * g ** 2 / (2 * g ** 2 + s * g ** 3 + 1e-6) * g, 0.0)
    elif method in ("layercam", "gradcam_elementwise"):  # A >= 0 after ReLU
        w = np.maximum(g, 0.0)
    elif method == "ablationcam":  # zeroing channel c lowers y_k by W_ck mean(A_c)
        return None
    else:
        raise AssertionError(method)
    return _norm(np.einsum("nhwc,nc->nhw", a, w))


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "xgradcam", "gradcam++",
                                    "layercam", "gradcam_elementwise"])
def test_gap_closed_forms(gap_case, images8, method):
    params, a = gap_case
    k = np.array([0, 1, 2, 0, 1])
    wk = params["d"]["kernel"][:, k].T
    ours = np.asarray(jcv.cam(params, images8, method=method, layer="c1",
                              class_index=k, model=gap_model()))
    np.testing.assert_allclose(ours, _gap_closed_form(method, a, wk), rtol=1e-5,
                               atol=1e-6)


def test_gap_ablation_closed_form(gap_case, images8):
    params, a = gap_case
    k = np.array([2, 1, 0, 2, 1])
    wk = params["d"]["kernel"][:, k].T
    y = a.mean(axis=(1, 2)) @ params["d"]["kernel"] + params["d"]["bias"]
    yk = y[np.arange(5), k]
    w = wk * a.mean(axis=(1, 2)) / yk[:, None]
    ref = _norm(np.einsum("nhwc,nc->nhw", a, w))
    ours = np.asarray(jcv.cam(params, images8, method="ablationcam", layer="c1",
                              class_index=k, model=gap_model()))
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_eigencam_of_rank_one_activation_is_its_spatial_factor():
    """A = u(i, j) v(c) with u >= 0: the first principal component of the
    centred rows is v, so the map is +-(u - mean u) |v|, the sign putting the
    extreme location up; relu'd and / max."""
    model = ConvNet(layers=(
        Layer.make("c1", "conv", features=3, kernel_size=1, activation="relu"),
        Layer.make("gap", "gap"),
        Layer.make("d", "dense", features=2),
    ), input_shape=(6, 6, 3), preprocessing="none")
    v = np.array([1.0, 2.0, 0.5], np.float32)
    params = {"c1": {"kernel": np.zeros((1, 1, 3, 3), np.float32),
                     "bias": np.zeros(3, np.float32)},
              "d": {"kernel": np.ones((3, 2), np.float32),
                    "bias": np.zeros(2, np.float32)}}
    params["c1"]["kernel"][0, 0, 0, :] = v  # A_ijc = x_ij0 * v_c
    u = np.random.default_rng(0).uniform(0, 255, (2, 6, 6)).astype(np.float32)
    x = np.zeros((2, 6, 6, 3), np.float32)
    x[..., 0] = u
    ours = np.asarray(jcv.cam(params, x, method="eigencam", layer="c1", model=model))
    d = u - u.mean(axis=(1, 2), keepdims=True)
    flat = d.reshape(2, -1)
    d = d * np.sign(flat[np.arange(2), np.abs(flat).argmax(1)])[:, None, None]
    ref = _norm(d)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


# -------------------------------------- independent reference (NCHW, float64)
def flat_model() -> ConvNet:
    """c1 conv(4, 3x3 valid, relu) -> c2 conv(5, 3x3 valid, relu) -> flatten ->
    dense(3): the logit is linear in c2's activation, so G = W_d[:, k]
    reshaped (h, w, c), varying over space."""
    return ConvNet(layers=(
        Layer.make("c1", "conv", features=4, kernel_size=3, padding="valid",
                   activation="relu"),
        Layer.make("c2", "conv", features=5, kernel_size=3, padding="valid",
                   activation="relu"),
        Layer.make("flatten", "flatten"),
        Layer.make("d", "dense", features=3, activation="softmax"),
    ), input_shape=(8, 8, 3), preprocessing="none")


@pytest.fixture(scope="module")
def flat_case():
    rng = np.random.default_rng(5)
    params = {
        "c1": {"kernel": rng.normal(0, 0.02, (3, 3, 3, 4)),
               "bias": rng.normal(0, 0.1, 4)},
        "c2": {"kernel": rng.normal(0, 0.3, (3, 3, 4, 5)),
               "bias": rng.normal(0, 0.1, 5)},
        "d": {"kernel": rng.normal(0, 1.0, (80, 3)), "bias": rng.normal(0, 1, 3)},
    }
    params = {k: {n: np.asarray(a, np.float32) for n, a in v.items()}
              for k, v in params.items()}
    x = rng.uniform(0, 255, (4, 8, 8, 3)).astype(np.float32)
    return params, x


def np_forward(params, x, *, ablate=None):
    """(logits, A at c2 NHWC); ``ablate=(channel,)`` zeroes it in A first."""
    a1 = conv_valid_relu(x.astype(np.float64), params["c1"]["kernel"],
                         params["c1"]["bias"])
    a2 = conv_valid_relu(a1, params["c2"]["kernel"], params["c2"]["bias"])
    a = a2.copy()
    if ablate is not None:
        a[..., ablate] = 0.0
    logits = a.reshape(len(a), -1) @ params["d"]["kernel"] + params["d"]["bias"]
    return logits, a2


def up_align_corners(m, size):
    """Loop bilinear upsampling, torch UpsamplingBilinear2d (align_corners)."""
    h, w = m.shape
    out = np.zeros(size)
    for i in range(size[0]):
        for j in range(size[1]):
            y = i * (h - 1) / (size[0] - 1)
            xx = j * (w - 1) / (size[1] - 1)
            y0, x0 = int(np.floor(y)), int(np.floor(xx))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            ty, tx = y - y0, xx - x0
            out[i, j] = ((1 - ty) * (1 - tx) * m[y0, x0] + (1 - ty) * tx * m[y0, x1]
                         + ty * (1 - tx) * m[y1, x0] + ty * tx * m[y1, x1])
    return out


def projection_2d(m):
    """pytorch-grad-cam's get_2d_projection for one (c, h, w) map, plus the
    sign rule (the entry of largest magnitude is positive)."""
    c = m.shape[0]
    rows = m.reshape(c, -1).T
    centred = rows - rows.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=True)
    proj = centred @ vt[0, :]
    if proj[np.abs(proj).argmax()] < 0:
        proj = -proj
    return proj.reshape(m.shape[1:])


def reference_cam(method, params, x, k):
    """pytorch-grad-cam's get_cam_weights / get_cam_image, one image at a time,
    NCHW, float64; then relu and / max."""
    logits, a_nhwc = np_forward(params, x)
    n, h, w, c = a_nhwc.shape
    out = []
    for i in range(n):
        a = a_nhwc[i].transpose(2, 0, 1)  # (c, h, w)
        g = params["d"]["kernel"][:, k[i]].reshape(h, w, c).transpose(2, 0, 1)
        if method == "gradcam":
            cam = (g.mean(axis=(1, 2))[:, None, None] * a).sum(0)
        elif method == "gradcam++":
            g2, g3 = g ** 2, g ** 3
            s = a.sum(axis=(1, 2))
            aij = g2 / (2 * g2 + s[:, None, None] * g3 + 1e-6)
            aij = np.where(g != 0, aij, 0)
            wts = (np.maximum(g, 0) * aij).sum(axis=(1, 2))
            cam = (wts[:, None, None] * a).sum(0)
        elif method == "xgradcam":
            s = a.sum(axis=(1, 2))
            wts = (g * a / (s[:, None, None] + 1e-7)).sum(axis=(1, 2))
            cam = (wts[:, None, None] * a).sum(0)
        elif method == "hirescam":
            cam = (g * a).sum(0)
        elif method == "gradcam_elementwise":
            cam = np.maximum(g * a, 0).sum(0)
        elif method == "layercam":
            cam = (np.maximum(g, 0) * a).sum(0)
        elif method == "eigencam":
            cam = projection_2d(a)
        elif method == "eigengradcam":
            cam = projection_2d(g * a)
        elif method == "scorecam":
            scores = []
            for ch in range(c):
                up = up_align_corners(a[ch], x.shape[1:3])
                lo, hi = up.min(), up.max()
                up = (up - lo) / (hi - lo + 1e-8)
                lg, _ = np_forward(params, x[i:i + 1] * up[None, :, :, None])
                scores.append(lg[0, k[i]])
            scores = np.array(scores)
            wts = np.exp(scores - scores.max())
            wts = wts / wts.sum()
            cam = (wts[:, None, None] * a).sum(0)
        elif method == "ablationcam":
            base = logits[i, k[i]]
            abl = np.array([np_forward(params, x[i:i + 1], ablate=ch)[0][0, k[i]]
                            for ch in range(c)])
            wts = (base - abl) / base
            cam = (wts[:, None, None] * a).sum(0)
        else:
            raise AssertionError(method)
        out.append(cam)
    return _norm(np.stack(out))


def test_scorecam_dead_channels_scored_by_the_zero_image(flat_case):
    """Channels that never fire are scored by one forward pass of the zero
    image (their Score-CAM mask is all zero); the maps still equal the
    reference that runs every channel, and ``live_first`` orders the live
    pairs first and counts them."""
    params, x = flat_case
    c2 = dict(params["c2"])
    c2["kernel"] = c2["kernel"].copy()
    c2["kernel"][..., [1, 3]] = 0.0
    c2["bias"] = c2["bias"].copy()
    c2["bias"][[1, 3]] = -1.0  # relu(-1) = 0 everywhere
    params = {**params, "c2": c2}
    _, a = np_forward(params, x)
    assert (a[..., [1, 3]] == 0).all()
    assert (a[..., [0, 2, 4]] != 0).any(axis=(1, 2)).all()
    order, n_live = live_first(jnp.asarray(a))
    assert int(n_live) == 4 * 3
    np.testing.assert_array_equal(
        np.asarray(order)[:12], [i * 5 + k for i in range(4) for k in (0, 2, 4)])
    k = np.array([0, 2, 1, 2])
    ours = np.asarray(jcv.cam(params, x, method="scorecam", layer="c2",
                              class_index=k, model=flat_model()))
    ref = reference_cam("scorecam", params, x, k)
    assert ref.max() > 0
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=2e-5)
    # all channels dead: every score is the zero image's, the map all zero
    dead = {**params, "c2": {"kernel": np.zeros_like(c2["kernel"]),
                             "bias": np.full_like(c2["bias"], -1.0)}}
    assert np.asarray(jcv.cam(dead, x, method="scorecam", layer="c2",
                              model=flat_model())).max() == 0.0


@pytest.mark.parametrize("method", CAM_METHODS)
def test_matches_independent_reference(flat_case, method):
    params, x = flat_case
    k = np.array([0, 2, 1, 2])
    ours = np.asarray(jcv.cam(params, x, method=method, layer="c2", class_index=k,
                              model=flat_model()))
    ref = reference_cam(method, params, x, k)
    assert ref.max() > 0  # a real map, not an all-zero agreement
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=2e-5)


def _logit_2(z):
    return z[:, 2]


def test_target_callable_gives_the_class_index_maps(flat_case):
    """class_index=k and a target that is the logit of class k (a function,
    or the feature-visualization objective ClassLogit(k)) give the same maps
    for every method; a target explains no class (-1)."""
    params, x = flat_case
    kw = dict(layer="c2", model=flat_model())
    for method in CAM_METHODS:
        by_int = np.asarray(jcv.cam(params, x, method=method, class_index=2, **kw))
        for target in (_logit_2, jcv.objectives.ClassLogit(2)):
            got = np.asarray(jcv.cam(params, x, method=method, class_index=target,
                                     **kw))
            np.testing.assert_allclose(got, by_int, rtol=1e-6, atol=1e-7,
                                       err_msg=method)
    res = jcv.cam_with_scores(params, x, class_index=_logit_2, **kw)
    np.testing.assert_array_equal(np.asarray(res.classes), -1)


def test_probability_target_by_hand(flat_case):
    """Grad-CAM of the softmax probability p_k: G = p_k (W_k - W p), so the
    channel weights are its spatial mean (NumPy, float64). The head is
    scaled down so that no probability saturates (in float32, 1 - p would
    round to 0)."""
    params, x = flat_case
    params = {**params, "d": {k: v * np.float32(0.05)
                              for k, v in params["d"].items()}}
    logits, a = np_forward(params, x)
    assert np.ptp(logits, axis=-1).max() < 5
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    wd = params["d"]["kernel"].astype(np.float64)  # (h w c, classes)
    g = p[:, 1:2] * (wd[:, 1][None] - p @ wd.T)  # (n, h w c)
    g = g.reshape(a.shape)
    want = _norm(np.einsum("nhwc,nc->nhw", a, g.mean(axis=(1, 2))))
    assert want.max() == 1.0 and (want < 1).any()
    for target in (jcv.objectives.ClassProbability(1),
                   lambda z: jax.nn.softmax(z, axis=-1)[:, 1]):
        got = np.asarray(jcv.cam(params, x, class_index=target, layer="c2",
                                 model=flat_model()))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def test_target_errors(flat_case):
    params, x = flat_case
    kw = dict(layer="c2", model=flat_model())
    with pytest.raises(ValueError, match=r"one number per image, shape \(4,\); "
                                         r"got shape \(4, 3\)"):
        jcv.cam(params, x, class_index=jnp.abs, **kw)
    with pytest.raises(ValueError, match="must read the class logits only"):
        jcv.cam(params, x, class_index=jcv.objectives.Channel("c1", 0), **kw)
    with pytest.raises(ValueError, match="calling .* failed"):
        jcv.cam(params, x, class_index=lambda z: z @ jnp.ones((7,)), **kw)


def test_pooling_and_dense_layers_are_refused(tiny_params, images32):
    """A pooling layer's CAM is a resampled copy of the layer below (at 32 px
    block5_pool is 1x1: a map of 1.0); dense and flatten have no map."""
    assert "block5_pool" in jcv.tiny_vgg16().spatial_layers
    assert "block5_pool" not in jcv.cam_layers(model=jcv.tiny_vgg16())
    for layer, kind in (("block5_pool", "maxpool"), ("fc1", "dense"),
                        ("flatten", "flatten")):
        with pytest.raises(ValueError, match=rf"got '{layer}', a {kind} layer .*"
                                             r"nearest are 'block5_conv3'"):
            jcv.cam(tiny_params, images32, method="layercam", layer=layer)


def test_hirescam_equals_gradcam_on_gap_models_but_not_in_general(
        gap_case, images8, flat_case):
    params, _ = gap_case
    kw = dict(layer="c1", class_index=1, model=gap_model())
    np.testing.assert_allclose(
        np.asarray(jcv.cam(params, images8, method="hirescam", **kw)),
        np.asarray(jcv.cam(params, images8, method="gradcam", **kw)), atol=1e-6)
    fparams, x = flat_case
    kw = dict(layer="c2", class_index=1, model=flat_model())
    diff = np.abs(np.asarray(jcv.cam(fparams, x, method="hirescam", **kw))
                  - np.asarray(jcv.cam(fparams, x, method="gradcam", **kw)))
    assert diff.max() > 0.05


def test_resize_matrix_align_corners_matches_loop():
    m = np.random.default_rng(0).uniform(size=(3, 4))
    up = resize_matrix(3, 7, align_corners=True) @ m @ resize_matrix(
        4, 9, align_corners=True).T
    np.testing.assert_allclose(up, up_align_corners(m, (7, 9)), atol=1e-6)


# --------------------------------------------------------------- invariants
@pytest.fixture(scope="module")
def images32():
    return np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)


def test_eigencam_runs_without_the_head(tiny_params, images32):
    """cam(method="eigencam") stops at the layer: the same maps as the run
    that also computes the logits, and its program holds no classifier
    matrix product (the tiny VGG16's fc1 takes 16 inputs)."""
    model = jcv.tiny_vgg16(include_top=True)
    got = np.asarray(jcv.cam(tiny_params, images32, method="eigencam"))
    full = jcv.cam_with_scores(tiny_params, images32, method="eigencam")
    np.testing.assert_array_equal(got, np.asarray(full.cams))
    assert full.logits.shape == (3, model.num_outputs)
    fc1 = tiny_params["fc1"]["kernel"].shape
    kw = dict(model=model, layer="block5_conv3", method=jcv.cam_method("eigencam"),
              use_top1=True)
    x, ci = jnp.asarray(images32), jnp.zeros(3, jnp.int32)
    with_head = cam_batch.lower(tiny_params, x, ci, **kw).as_text()
    headless = cam_batch.lower(tiny_params, x, ci, scores=False, **kw).as_text()
    dims = f"{fc1[0]}x{fc1[1]}xf32"
    assert dims in with_head and dims not in headless


def test_eigencam_on_a_model_without_a_top(tiny_params, tiny_params_notop, images32):
    """Eigen-CAM reads no class, so cam() takes params without a classifier
    (the HED weights, include_top=False): the same maps as with the top, any
    image size the layer allows, peaks exactly 1; class_index is refused."""
    top = np.asarray(jcv.cam(tiny_params, images32, method="eigencam"))
    bare = np.asarray(jcv.cam(tiny_params_notop, images32, method="eigencam"))
    np.testing.assert_array_equal(bare, top)
    assert (top.reshape(3, -1).max(axis=1) == 1.0).all()
    big = np.concatenate([images32, images32], axis=1)  # 64 x 32 px
    maps = np.asarray(jcv.cam(tiny_params_notop, big, method="eigencam"))
    assert maps.shape == (3, 4, 2) and (maps.reshape(3, -1).max(axis=1) == 1.0).all()
    with pytest.raises(ValueError, match=r"class_index must be None for "
                                         r"cam\(method='eigencam'\) on a model"):
        jcv.cam(tiny_params_notop, images32, method="eigencam", class_index=1)
    with pytest.raises(ValueError, match=r"needs a classifier top"):
        jcv.cam(tiny_params_notop, images32, method="gradcam")
    with pytest.raises(ValueError, match=r"needs a classifier top"):  # scores need it
        jcv.cam_with_scores(tiny_params_notop, images32, method="eigencam")


@pytest.mark.parametrize("method", CAM_METHODS)
@pytest.mark.slow
def test_batched_equals_one_at_a_time(tiny_params, images32, method):
    full = np.asarray(jcv.cam(tiny_params, images32, method=method))
    assert full.shape == (3, 2, 2) and full.dtype == np.float32
    assert (full >= 0).all() and (full <= 1).all()
    for i in range(len(images32)):
        one = np.asarray(jcv.cam(tiny_params, images32[i:i + 1], method=method))
        np.testing.assert_allclose(one[0], full[i], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_memory_budget_chunks_give_the_same_maps(flat_case, method):
    params, x = flat_case
    kw = dict(method=method, layer="c2", class_index=1, model=flat_model())
    big = np.asarray(jcv.cam(params, x, **kw))
    # one image's forward is ~1.2 KB here: a 3 KB budget makes chunks of two
    small = np.asarray(jcv.cam(params, x, run=Run(memory_budget=3000), **kw))
    np.testing.assert_allclose(small, big, rtol=1e-5, atol=1e-6)


def test_size_resizes_inside_and_default_layer(tiny_params, images32):
    maps = np.asarray(jcv.cam(tiny_params, images32, size=(32, 32)))
    low = np.asarray(jcv.cam(tiny_params, images32))
    assert maps.shape == (3, 32, 32)
    rh = resize_matrix(2, 32, align_corners=False)
    np.testing.assert_allclose(maps, np.einsum("Hh,nhw,Ww->nHW", rh, low, rh),
                               atol=1e-5)
    same = np.asarray(jcv.cam(tiny_params, images32, layer="block5_conv3"))
    np.testing.assert_array_equal(low, same)  # None = block5_conv3 for VGG16


def test_one_compilation_per_method_and_shape(tiny_params, images32):
    jcv.cam(tiny_params, images32, method="layercam")
    before = cam_batch._cache_size()
    jcv.cam(tiny_params, images32 + 1.0, method="layercam")
    jcv.cam(tiny_params, images32, method="layercam", class_index=3)
    jcv.cam(tiny_params, images32, method="layercam", class_index=[1, 2, 3])
    assert cam_batch._cache_size() == before + 1  # top-1 vs given classes


def test_errors(tiny_params, tiny_params_notop, images32):
    with pytest.raises(ValueError, match=r"method must be one of gradcam, "
                                         r"gradcam\+\+.*ablationcam; got 'gradcam\+'"):
        jcv.cam(tiny_params, images32, method="gradcam+")
    for bad in ((0, 3), -4, True, 2.5):
        with pytest.raises(ValueError, match=r"size must be None, a positive int "
                                             r"\(a square side\) or \(H, W\)"):
            jcv.cam(tiny_params, images32, size=bad)
    # an int is a square side, as size= is everywhere else
    np.testing.assert_array_equal(jcv.cam(tiny_params, images32, size=12),
                                  jcv.cam(tiny_params, images32, size=(12, 12)))
    with pytest.raises(ValueError, match="memory_budget must be None, a positive"):
        jcv.cam(tiny_params, images32, method="scorecam", run=Run(memory_budget=0))
    with pytest.raises(ValueError, match="run must be None or a jaxconvviz.Run"):
        jcv.cam(tiny_params, images32, run={"batch_size": 2})
    with pytest.raises(ValueError, match="needs a classifier top"):
        jcv.cam(tiny_params_notop, images32, method="eigengradcam")
    with pytest.raises(ValueError, match="layer must be one of"):
        jcv.cam(tiny_params, images32, layer="fc1")


def test_conv3x3_form_from_record_and_backend(tiny_model, flat_case, monkeypatch):
    from jaxconvviz.attribution._cam_common import compute_model
    from jaxconvviz.backend import backend
    from jaxconvviz.backend import winograd as convs

    vgg = tiny_model
    cpu = jax.default_backend() == "cpu"
    assert vgg.backend.conv3x3 == "auto"
    # Score-CAM's record prefers Winograd-where-it-pays; the others keep "conv"
    assert jcv.cam_method("scorecam").conv3x3 == "by_shape"
    assert [m for m in CAM_METHODS if jcv.cam_method(m).conv3x3 != "conv"] == [
        "scorecam"]
    assert compute_model(vgg, conv3x3="by_shape").backend.conv3x3 == (
        "by_shape" if cpu else "conv")
    assert compute_model(vgg).backend.conv3x3 == "conv"
    # the process default wins over the record, the model's own over both
    with backend(conv3x3="conv"):
        assert compute_model(vgg, conv3x3="by_shape").backend.conv3x3 == "conv"
    with backend(conv3x3="winograd"):
        assert compute_model(vgg).backend.conv3x3 == "winograd"
    wino = vgg.with_backend(conv3x3="winograd")
    assert compute_model(wino, conv3x3="by_shape").backend.conv3x3 == "winograd"
    # the setting reaches the compiled program, and the maps stay the
    # independent reference's
    params, x = flat_case
    k = np.array([0, 2, 1, 2])
    traced = []
    real = convs._winograd
    monkeypatch.setattr(convs, "_winograd",
                        lambda *a: traced.append(a[0].shape) or real(*a))
    for method in ("gradcam", "scorecam"):
        traced.clear()
        with backend(conv3x3="winograd"):
            ours = np.asarray(jcv.cam(params, x, method=method, layer="c2",
                                      class_index=k, model=flat_model()))
        # both layers (3 and 4 input channels, 3x3 VALID) went through it
        assert {shape[-1] for shape in traced} == {3, 4}, method
        np.testing.assert_allclose(ours, reference_cam(method, params, x, k),
                                   rtol=1e-4, atol=2e-5)
    with pytest.raises(ValueError, match="Backend.conv3x3 must be one of"):
        with backend(conv3x3="fast"):
            pass


# --------------------------------------------------------------- localization
def _in_box(maps, mask):
    """Per image: argmax in the box, and the fraction of mass in the box."""
    from jaxconvviz.views.heatmaps import resize_heatmaps

    up = resize_heatmaps(np.asarray(maps), (SIDE, SIDE))
    m = np.asarray(mask).reshape(len(up), -1)
    flat = up.reshape(len(up), -1)
    peak = m[np.arange(len(up)), flat.argmax(-1)]
    mass = (flat * m).sum(-1) / np.maximum(flat.sum(-1), 1e-12)
    return peak, mass


@pytest.mark.slow
def test_every_cam_localizes_the_object(trained_blob_net):
    """On the blob net (object in a known 8x8 box), every method puts its peak
    or 80% of its mass in the box on at least 90% of held-out images."""
    model, params = trained_blob_net
    x, _, mask = blob_images(jax.random.key(123), 100)
    rates = {}
    for method in CAM_METHODS:
        maps = jcv.cam(params, x, method=method, layer="c2", model=model)
        peak, mass = _in_box(maps, mask)
        rates[method] = float(np.mean(peak | (mass >= 0.8)))
    print(rates)
    assert min(rates.values()) >= 0.9, rates


# --------------------------------------------------------- imported Keras graph
@pytest.mark.slow
@pytest.mark.keras
def test_every_method_on_an_imported_keras_graph(keras, tmp_path):
    """A residual Keras classifier (conv -> conv -> Add -> ReLU -> GAP -> dense),
    saved and imported as a graph: every CAM at the ReLU node equals its closed
    form on Keras' own activation (GAP + dense: G = W[:, k] / hw), and the
    saliency equals jax.grad of the Keras model's logit."""
    import warnings

    from jaxconvviz.attribution._cam_common import normalise, resize_matrix

    L = keras.layers
    inp = keras.Input((8, 8, 3))
    y = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    z = L.Conv2D(4, 3, padding="same", name="c2")(y)
    a = L.Activation("relu", name="act")(L.Add(name="add")([y, z]))
    g = L.GlobalAveragePooling2D(name="gap")(a)
    out = L.Dense(3, activation="softmax", name="d")(g)
    km = keras.Model(inp, out)
    rng = np.random.default_rng(8)
    for lay in km.layers:
        ws = lay.get_weights()
        if ws:
            lay.set_weights([rng.normal(0, 0.3 if w.ndim > 1 else 0.1, w.shape)
                             .astype(np.float32) for w in ws])
    km.save(tmp_path / "res.keras")
    model, params = jcv.load_keras_model(tmp_path / "res.keras")
    assert model.layer("add").inputs == ("c1", "c2")
    assert model.default_layer == "act"
    x = rng.uniform(0, 1, (3, 8, 8, 3)).astype(np.float32)
    k = np.array([0, 2, 1])
    with warnings.catch_warnings(), jax.numpy_rank_promotion("allow"):
        warnings.simplefilter("ignore")
        acts = np.asarray(keras.Model(inp, a)(x), np.float64)
        wd = np.asarray(km.get_layer("d").get_weights()[0], np.float64)
        km.get_layer("d").activation = keras.activations.linear
        logit = jax.jit(jax.grad(lambda xi, kk: km(xi[None])[0, kk]),
                        static_argnums=1)
        sal_ref = np.stack([np.asarray(logit(jnp.asarray(x[i]), int(k[i])))
                            for i in range(3)])
        masked_logits = {}
        up = resize_matrix(8, 8, align_corners=True)
        for i in range(3):
            for ch in range(4):
                m = up @ acts[i, :, :, ch] @ up.T
                m = (m - m.min()) / (m.max() - m.min() + 1e-8)
                masked_logits[i, ch] = float(km(x[i:i + 1] * m[None, :, :, None]
                                                .astype(np.float32))[0, k[i]])
    wk = wd[:, k].T
    for method in CAM_METHODS:
        ours = np.asarray(jcv.cam(params, x, method=method, class_index=k,
                                  model=model))
        if method in ("eigencam", "eigengradcam"):
            gmap = np.broadcast_to((wk / 64.0)[:, None, None, :], acts.shape)
            src = acts if method == "eigencam" else acts * gmap
            ref = _norm(np.stack([projection_2d(s.transpose(2, 0, 1)) for s in src]))
        elif method == "ablationcam":
            y_ = acts.mean(axis=(1, 2)) @ wd + km.get_layer("d").get_weights()[1]
            yk = y_[np.arange(3), k]
            ref = _norm(np.einsum("nhwc,nc->nhw", acts,
                                  wk * acts.mean(axis=(1, 2)) / yk[:, None]))
        elif method == "scorecam":
            s = np.array([[masked_logits[i, ch] for ch in range(4)]
                          for i in range(3)])
            wts = np.exp(s - s.max(-1, keepdims=True))
            wts /= wts.sum(-1, keepdims=True)
            ref = _norm(np.einsum("nhwc,nc->nhw", acts, wts))
        else:
            ref = _gap_closed_form(method, acts, wk)
        assert ref.max() > 0
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=2e-5, err_msg=method)
    sal = np.asarray(jcv.attribution(params, x, method="saliency", class_index=k,
                                     model=model))
    np.testing.assert_allclose(sal, sal_ref, rtol=1e-4, atol=1e-6)
    assert np.asarray(normalise(jnp.ones((1, 2, 2)))).max() == 1.0


def test_ablationcam_at_a_non_cut_node_of_a_graph():
    """c1 -> c2 -> add(c1, c2) -> GAP -> dense, 1x1 convs: c2 is not a cut node
    (add also reads c1), so the whole net runs with the channel zeroed;
    ablating channel ch of c2 lowers y_k by W[ch, k] mean(c2_ch)."""
    model = ConvNet(layers=(
        Layer.make("c1", "conv", features=3, kernel_size=1, activation="relu"),
        Layer.make("c2", "conv", features=3, kernel_size=1),
        Layer.make("add", "add", inputs=("c1", "c2")),
        Layer.make("gap", "gap"),
        Layer.make("d", "dense", features=2),
    ), input_shape=(5, 5, 3), preprocessing="none")
    rng = np.random.default_rng(2)
    params = {n: {"kernel": rng.normal(0, 0.5, s).astype(np.float32),
                  "bias": rng.normal(0, 0.1, s[-1]).astype(np.float32)}
              for n, s in (("c1", (1, 1, 3, 3)), ("c2", (1, 1, 3, 3)),
                           ("d", (3, 2)))}
    x = rng.uniform(0, 1, (2, 5, 5, 3)).astype(np.float32)
    a1 = np.maximum(x.astype(np.float64) @ params["c1"]["kernel"][0, 0]
                    + params["c1"]["bias"], 0)
    a2 = a1 @ params["c2"]["kernel"][0, 0] + params["c2"]["bias"]
    y = (a1 + a2).mean(axis=(1, 2)) @ params["d"]["kernel"] + params["d"]["bias"]
    k = np.array([1, 0])
    yk = y[np.arange(2), k]
    w = params["d"]["kernel"][:, k].T * a2.mean(axis=(1, 2)) / yk[:, None]
    ref = _norm(np.einsum("nhwc,nc->nhw", a2, w))
    ours = np.asarray(jcv.cam(params, x, method="ablationcam", layer="c2",
                              class_index=k, model=model))
    assert ref.max() > 0
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 3, 12), (2, 5, 4, 3)])
@pytest.mark.slow
def test_principal_projection_both_eigen_routes_match_svd(shape):
    """h*w <= c goes through the Gram matrix, h*w > c through the covariance;
    both equal pytorch-grad-cam's SVD projection (with the sign rule)."""
    from jaxconvviz.attribution.cam_eigen import principal_projection

    m = np.random.default_rng(4).normal(size=shape).astype(np.float32)
    ours = np.asarray(principal_projection(jnp.asarray(m)))
    ref = np.stack([projection_2d(a.transpose(2, 0, 1).astype(np.float64))
                    for a in m])
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
