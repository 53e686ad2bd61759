"""A CAM method added from this file, without editing the library: one
function and one record, registered, then run through ``jcv.cam``, the
``explain`` API and command, and the report builder, its values checked
against a hand computation (NumPy, float64) on the conv-conv-flatten-dense
net whose gradient is known in closed form."""

# ruff: noqa: F811 -- pytest fixtures imported from test_cams
from __future__ import annotations

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.attribution import explain

from .conftest import CAT
from .test_cams import _norm, flat_case, flat_model, np_forward  # noqa: F401
from .test_gradcam import tiny_cli  # noqa: F401


def gradient_magnitude(c):
    """The new method: sum_c |G_c| A_c (gradient magnitude times activation)."""
    return (jnp.abs(c.grads) * c.acts).sum(axis=-1)


RECORD = jcv.CamMethod("gradmag", "Gradient magnitude", "gradient",
                       gradient_magnitude)


@pytest.fixture(autouse=True)
def _full_float32():
    with jax.default_matmul_precision("float32"):
        yield


@pytest.fixture
def gradmag():
    jcv.register_cam_method(RECORD)
    try:
        yield RECORD
    finally:
        jcv.unregister_cam_method("gradmag")


def hand_gradmag(params, x, k):
    """relu(sum_c |G_c| A_c) / max with G = W_d[:, k] reshaped (h, w, c)."""
    _, a = np_forward(params, x)
    n, h, w, c = a.shape
    g = params["d"]["kernel"][:, k].T.reshape(n, h, w, c)
    return _norm((np.abs(g) * a).sum(-1))


def test_registered_method_runs_through_cam_and_explain(gradmag, flat_case):
    params, x = flat_case
    k = np.array([0, 2, 1, 2])
    assert "gradmag" in jcv.cam_methods() and "gradmag" in jcv.explain_methods()
    assert jcv.cam_methods(family="gradient")[-1] == "gradmag"  # after its family
    assert jcv.cam_method("gradmag") is RECORD
    want = hand_gradmag(params, x, k)
    assert want.max() == 1.0 and (want < 1).any()  # a real map
    ours = np.asarray(jcv.cam(params, x, method="gradmag", layer="c2",
                              class_index=k, model=flat_model()))
    np.testing.assert_allclose(ours, want, rtol=1e-4, atol=2e-5)
    # the explain API: same maps, labelled, with metrics of those maps
    classes, _, table = explain.evaluate(params, x, ["gradmag"], model=flat_model(),
                                         layer="c2", class_index=k, steps=4)
    np.testing.assert_array_equal(classes, k)
    np.testing.assert_allclose(table["gradmag"]["maps"], want, rtol=1e-4, atol=2e-5)
    auc = jcv.deletion(params, x, table["gradmag"]["maps"], class_index=k,
                       model=flat_model(), steps=4).auc
    np.testing.assert_array_equal(table["gradmag"]["deletion AUC"], auc)
    assert explain.method_label("gradmag") == "Gradient magnitude"
    # unregistered: unknown again, the error lists the built-in methods
    jcv.unregister_cam_method("gradmag")
    try:
        with pytest.raises(ValueError, match=r"method must be one of gradcam, .*"
                                             r"ablationcam; got 'gradmag'"):
            jcv.cam(params, x, method="gradmag", layer="c2", model=flat_model())
    finally:
        jcv.register_cam_method(RECORD)


def test_registry_refuses_bad_records(gradmag):
    with pytest.raises(ValueError, match="already registered"):
        jcv.register_cam_method(RECORD)
    assert jcv.register_cam_method(RECORD, replace=True) is RECORD
    with pytest.raises(ValueError, match="attribution method's name"):
        jcv.register_cam_method(jcv.CamMethod("saliency", "S", "gradient",
                                              gradient_magnitude))
    with pytest.raises(ValueError, match="family must be one of gradient, eigen, "
                                         "perturbation; got 'other'"):
        jcv.CamMethod("x", "X", "other", gradient_magnitude)
    with pytest.raises(ValueError, match="conv3x3 must be one of conv, by_shape"):
        jcv.CamMethod("x", "X", "gradient", gradient_magnitude, conv3x3="winograd")
    # the built-in records: the old tables are views of these fields
    recs = {m: jcv.cam_method(m) for m in jcv.cam_methods()}
    assert [m for m, r in recs.items() if r.perturbation] == ["scorecam",
                                                              "ablationcam"]
    assert [m for m, r in recs.items() if not r.needs_gradient] == [
        "eigencam", "scorecam", "ablationcam"]
    assert [m for m, r in recs.items() if r.headless] == ["eigencam"]
    assert recs["gradcam++"].label == "Grad-CAM++"


@pytest.mark.slow
def test_registered_method_in_the_explain_command(gradmag, tiny_cli, tiny_params,
                                                  tmp_path, capsys):
    from jaxconvviz.cli import main

    assert main(["explain", str(CAT), "--methods", "gradmag,gradcam", "--steps",
                 "2", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [r["method"] for r in rows] == ["gradmag", "gradcam"]
    x = jcv.load_img(CAT, target_size=(32, 32))[None]
    maps = np.asarray(jcv.cam(tiny_params, x, method="gradmag"))
    want = jcv.deletion(tiny_params, x, maps, steps=2).auc
    np.testing.assert_allclose(float(rows[0]["deletion_auc"]), want[0], rtol=1e-4)


def test_registered_method_in_the_report(gradmag, flat_case, tmp_path):
    from jaxconvviz.report.build import ReportImage, available_cam_methods, build_report

    params, x = flat_case
    assert "gradmag" in available_cam_methods()
    images = [ReportImage(f"img{i}", x[i]) for i in range(2)]
    build_report(tmp_path, params, model=flat_model(), images=images,
                 key=jax.random.key(0), layers=("c2",), filters_per_layer=1,
                 size=8, steps=1, style="book", cam_methods=["gradmag"], top_k=1)
    page = (tmp_path / "images.html").read_text()
    assert "Gradient magnitude" in page
    assert sorted(p.name for p in (tmp_path / "img" / "cam").iterdir()) == [
        "gradient_magnitude_0.jpg", "gradient_magnitude_1.jpg"]
