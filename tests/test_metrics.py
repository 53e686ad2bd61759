"""Faithfulness metrics and sanity checks: hand-computed curves on a linear
model, ROAD's imputation against a dense solve and the mean-value property,
average drop / increase, the pointing game, and cascading randomization on the
trained blob net."""

# ruff: noqa: F811 -- pytest fixtures imported from test_gradcam
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxconvviz.attribution import metrics as M
from jaxconvviz.attribution.sanity import (
    cascading_randomization,
    label_randomization,
    spearman,
)
from jaxconvviz.attribution.toy import blob_images
from jaxconvviz.models.convnet import ConvNet, Layer
from jaxconvviz.run import Run


@pytest.fixture(autouse=True)
def _full_float32():
    with jax.default_matmul_precision("float32"):
        yield


def linear_model(hw=6):
    """score = sum_c w_c mean_ij x_ijc + b: every metric has a closed form."""
    return ConvNet(layers=(Layer.make("gap", "gap"),
                           Layer.make("d", "dense", features=1)),
                   input_shape=(hw, hw, 3), preprocessing="none")


W = np.array([[0.5], [1.0], [-0.25]], np.float32)


@pytest.fixture(scope="module")
def lin():
    rng = np.random.default_rng(0)
    params = {"d": {"kernel": W, "bias": np.array([0.1], np.float32)}}
    x = rng.uniform(0, 255, (2, 6, 6, 3)).astype(np.float32)
    maps = rng.uniform(0, 1, (2, 6, 6)).astype(np.float32)
    return params, x, maps


def lin_score(x):
    return x.astype(np.float64).mean(axis=(1, 2)) @ W[:, 0] + 0.1


@pytest.mark.slow
def test_deletion_and_insertion_by_hand(lin):
    params, x, maps = lin
    steps = 4
    dele = M.deletion(params, x, maps, model=linear_model(), steps=steps)
    ins = M.insertion(params, x, maps, model=linear_model(), steps=steps,
                      baseline=50.0)
    order = np.argsort(-maps.reshape(2, -1), axis=-1, kind="stable")
    want_d, want_i = np.zeros((2, steps + 1)), np.zeros((2, steps + 1))
    for s in range(steps + 1):
        k = round(s * 36 / steps)
        for i in range(2):
            top = np.zeros(36, bool)
            top[order[i, :k]] = True
            top = top.reshape(6, 6)[..., None]
            want_d[i, s] = lin_score(np.where(top, 0.0, x[i])[None])[0]
            want_i[i, s] = lin_score(np.where(top, x[i], 50.0)[None])[0]
    np.testing.assert_allclose(dele.scores, want_d, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ins.scores, want_i, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dele.fractions, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(dele.auc, np.trapezoid(want_d, dele.fractions),
                               rtol=1e-5)
    # a perfect map (the pixels' own contribution) deletes faster than its reverse
    contrib = (x.astype(np.float64) @ W[:, 0]).astype(np.float32)
    good = (contrib - contrib.min()) / np.ptp(contrib)
    auc_good = M.deletion(params, x, good, model=linear_model(), steps=8).auc
    auc_bad = M.deletion(params, x, 1 - good, model=linear_model(), steps=8).auc
    assert (auc_good < auc_bad).all()


def dense_impute(img, removed):
    """ROAD's system built densely with loops and solved with numpy."""
    h, w, _ = img.shape
    idx = {p: k for k, p in enumerate(zip(*np.nonzero(removed), strict=True))}
    a = np.zeros((len(idx), len(idx)))
    b = np.zeros((len(idx), img.shape[-1]))
    for (i, j), k in idx.items():
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                if (di, dj) == (0, 0):
                    continue
                ii, jj = i + di, j + dj
                if not (0 <= ii < h and 0 <= jj < w):
                    continue
                wt = 1 / 12 if di and dj else 1 / 6
                a[k, k] += wt
                if removed[ii, jj]:
                    a[k, idx[(ii, jj)]] -= wt
                else:
                    b[k] += wt * img[ii, jj]
    sol = np.linalg.solve(a, b)
    out = img.astype(np.float64).copy()
    for (i, j), k in idx.items():
        out[i, j] = sol[k]
    return out


@pytest.mark.slow
def test_linear_imputation_matches_dense_solve_and_keeps_ramps():
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 255, (9, 8, 3)).astype(np.float32)
    removed = rng.uniform(size=(9, 8)) < 0.5
    ours = np.asarray(M.linear_impute(jnp.asarray(img), jnp.asarray(removed)))
    np.testing.assert_allclose(ours, dense_impute(img, removed), rtol=1e-4,
                               atol=1e-3)
    np.testing.assert_array_equal(ours[~removed], img[~removed])
    # a linear ramp has the mean-value property: an interior hole is refilled
    ii, jj = np.indices((12, 12))
    ramp = np.stack([3.0 * ii + 2.0 * jj, 5.0 * ii, 100.0 - 4 * jj], -1).astype(
        np.float32)
    hole = np.zeros((12, 12), bool)
    hole[3:9, 2:8] = True
    filled = np.asarray(M.linear_impute(jnp.asarray(ramp), jnp.asarray(hole)))
    np.testing.assert_allclose(filled, ramp, atol=1e-3)


@pytest.mark.slow
def test_road_by_hand(lin):
    params, x, maps = lin
    res = M.road(params, x, maps, model=linear_model(), fractions=(0.25, 0.5))
    order = np.argsort(-maps.reshape(2, -1), axis=-1, kind="stable")
    for p, frac in enumerate((0.25, 0.5)):
        m = round(frac * 36)
        for i in range(2):
            morf = np.zeros(36, bool)
            morf[order[i, :m]] = True
            lerf = np.zeros(36, bool)
            lerf[order[i, 36 - m:]] = True
            for got, rem in ((res.morf, morf), (res.lerf, lerf)):
                filled = dense_impute(x[i], rem.reshape(6, 6))
                want = lin_score(filled[None])[0] - lin_score(x[i:i + 1])[0]
                np.testing.assert_allclose(got[i, p], want, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(res.combined, ((res.lerf - res.morf) / 2).mean(-1))
    with pytest.raises(ValueError, match="needs key="):
        M.road(params, x, maps, model=linear_model(), noise=1.0)
    with pytest.raises(ValueError, match=r"fractions must be .* in \(0, 1\)"):
        M.road(params, x, maps, model=linear_model(), fractions=(0.5, 1.0))


def test_confidence_change_by_hand(lin):
    params, x, maps = lin
    res = M.confidence_change(params, x, maps, model=linear_model())
    y = lin_score(x)
    o = lin_score(x * maps[..., None])
    drop = np.maximum(0, y - o) / y
    np.testing.assert_allclose(res.drop, drop, rtol=1e-5)
    np.testing.assert_array_equal(res.increased, o > y)
    assert res.average_drop == pytest.approx(100 * drop.mean(), rel=1e-5)
    assert res.increase_in_confidence == pytest.approx(100 * (o > y).mean())


def test_run_batch_size_gives_the_same_metrics(lin):
    params, x, maps = lin
    kw = dict(model=linear_model())
    one = Run(batch_size=1)
    a = M.confidence_change(params, x, maps, **kw)
    b = M.confidence_change(params, x, maps, run=one, **kw)
    np.testing.assert_allclose(b.drop, a.drop, rtol=1e-6)
    np.testing.assert_array_equal(b.increased, a.increased)
    d1 = M.deletion(params, x, maps, steps=2, **kw)
    d2 = M.deletion(params, x, maps, steps=2, run=one, **kw)
    np.testing.assert_allclose(d2.scores, d1.scores, rtol=1e-6)
    with pytest.raises(ValueError, match="run must be None or a jaxconvviz.Run"):
        M.deletion(params, x, maps, run=1, **kw)


def test_sanity_checks_name_a_missing_key(tiny_params):
    x = np.zeros((1, 32, 32, 3), np.float32)
    with pytest.raises(ValueError, match=r"^cascading_randomization needs key= "
                                         r"\(a jax.random.key"):
        cascading_randomization(tiny_params, x)
    with pytest.raises(ValueError, match=r"^label_randomization needs key="):
        label_randomization(tiny_params, tiny_params, x, key=0)


def test_pointing_game_and_mass():
    maps = np.zeros((3, 4, 4), np.float32)
    maps[0, 1, 1] = 1.0  # inside the box
    maps[1, 3, 3] = 1.0  # outside, 2 px diagonally from the box corner (1, 1)
    maps[2] = 0.5  # flat: argmax = first pixel (0, 0), which is outside
    boxes = np.array([[1, 1, 2, 2]] * 3)  # only pixel (1, 1)
    hits = M.pointing_game(maps, boxes=boxes, size=(4, 4))
    np.testing.assert_array_equal(hits, [True, False, False])
    np.testing.assert_array_equal(
        M.pointing_game(maps, boxes=boxes, size=(4, 4), tolerance=2.9),
        [True, True, True])
    masks = np.zeros((3, 4, 4), bool)
    masks[:, 1, 1] = True
    np.testing.assert_array_equal(M.pointing_game(maps, masks), hits)
    np.testing.assert_allclose(M.mass_in_mask(maps, masks), [1.0, 0.0, 1 / 16])
    with pytest.raises(ValueError, match="exactly one of masks"):
        M.pointing_game(maps)


def test_spearman_handles_ties_and_constants():
    a = np.array([[0, 0, 1, 2], [1, 1, 1, 1]], np.float32)
    b = np.array([[0, 0, 2, 5], [3, 1, 2, 0]], np.float32)
    np.testing.assert_allclose(spearman(a, b), [1.0, 0.0])
    np.testing.assert_allclose(spearman(a[:1], -b[:1]), [-1.0])


@pytest.mark.slow
def test_cascading_randomization_on_trained_net(trained_blob_net):
    """Randomising the trained blob net top-down destroys Grad-CAM's maps
    (rank correlation < 0.5 once every layer is random); every method's
    correlation is reported, guided backprop's included."""
    model, params = trained_blob_net
    x, _, _ = blob_images(jax.random.key(5), 16)
    res = cascading_randomization(
        params, x, methods=("gradcam", "gradcam++", "scorecam", "saliency",
                            "guided_backprop", "integrated_gradients"),
        key=jax.random.key(0), model=model, layer="c2")
    assert res.steps == ("d", "c2", "c1")
    mean = res.mean()
    print({m: np.round(v, 3).tolist() for m, v in mean.items()})
    assert mean["gradcam"][-1] < 0.5
    for m in mean:
        assert mean[m].shape == (3,) and np.isfinite(mean[m]).all()
    # the same weights: perfectly correlated
    same = label_randomization(params, params, x, methods=("gradcam", "saliency"),
                               key=jax.random.key(0), model=model, layer="c2")
    for m in ("gradcam", "saliency"):
        np.testing.assert_allclose(same.correlations[m], 1.0, atol=1e-6)


def test_comparison_and_metric_figures_show_the_data():
    from jaxconvviz.plotting import plot_methods, plot_metrics

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (2, 6, 6, 3), dtype=np.uint8)
    ovs = rng.integers(0, 256, (2, 3, 6, 6, 3), dtype=np.uint8)
    fig = plot_methods(imgs, ovs, ["a", "b", "c"], row_titles=["x", "y"], title="t")
    axes = fig.axes
    assert len(axes) == 8
    np.testing.assert_array_equal(axes[0].images[0].get_array(), imgs[0])
    np.testing.assert_array_equal(axes[6].images[0].get_array(), ovs[1, 1])
    assert axes[6].get_title() == "b" and axes[4].get_title() == "y"
    table = {"m1": {"auc": 0.25, "drop": 3.0}, "m2": {"auc": 0.5, "drop": 1.0},
             "m3": {"auc": 0.1, "drop": 2.0}}
    fig = plot_metrics(table, better={"auc": "lower"})
    heights = [[p.get_height() for p in ax.patches] for ax in fig.axes]
    assert heights == [[0.25, 0.5, 0.1], [3.0, 1.0, 2.0]]
    assert fig.axes[0].get_title() == "auc (lower is better)"
    labels = [[t.get_text() for t in ax.texts] for ax in fig.axes]
    assert labels == [["0.25", "0.5", "0.1"], ["3", "1", "2"]]
    # a percentage metric at 0 for every method: a 0-100 axis, bars labelled 0
    fig = plot_metrics({"m1": {"increase %": 0.0}, "m2": {"increase %": 0.0}})
    assert fig.axes[0].get_ylim()[0] == 0 and fig.axes[0].get_ylim()[1] >= 100
    assert [t.get_text() for t in fig.axes[0].texts] == ["0", "0"]
    with pytest.raises(ValueError, match="every method must have the metrics"):
        plot_metrics({"m1": {"auc": 1.0}, "m2": {"drop": 1.0}})
