"""Per-program XLA:CPU options (jaxconvviz.xla): where they apply, that the
user's choices win, and that programs built with them compute the same
values as plain jax.jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.attribution import cams, gradients, metrics
from jaxconvviz.backend import xla
from jaxconvviz.models import predict


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.delenv("JAXCONVVIZ_XLA_OPTIONS", raising=False)
    xla._reset()
    yield monkeypatch
    xla._reset()


def test_applied_on_cpu(fresh):
    assert jax.default_backend() == "cpu"
    fresh.setenv("XLA_FLAGS", "")
    assert xla.compiler_options() == xla.OPTIONS
    assert xla.STATUS["reason"] == "applied"


@pytest.mark.parametrize("env,value,reason", [
    ("JAXCONVVIZ_XLA_OPTIONS", "off", "JAXCONVVIZ_XLA_OPTIONS=off"),
    ("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=dot", "user's choice"),
])
def test_user_choice_wins(fresh, env, value, reason):
    fresh.setenv(env, value)
    assert xla.compiler_options() is None
    assert reason in xla.STATUS["reason"]


def test_unknown_option_is_skipped_with_reason(fresh):
    # what an older jaxlib without the YNNPACK fusions does
    fresh.setenv("XLA_FLAGS", "")
    fresh.setattr(xla, "OPTIONS", {"xla_no_such_option_anywhere": "1"})
    assert xla.compiler_options() is None
    assert "does not take the options" in xla.STATUS["reason"]


def test_jit_passes_options_and_keeps_values(fresh):
    fresh.setenv("XLA_FLAGS", "")
    seen = []
    real = jax.jit

    def spy(fun, **kw):
        seen.append(kw)
        return real(fun, **kw)

    fresh.setattr(xla.jax, "jit", spy)

    def f(x, n):
        return jnp.tanh(x @ x.T) * n

    g = xla.jit(f, static_argnames=("n",))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 7)), jnp.float32)
    np.testing.assert_array_equal(np.asarray(g(x, n=3)), np.asarray(real(
        f, static_argnames=("n",))(x, n=3)))
    assert seen[-1] == {"static_argnames": ("n",), "compiler_options": xla.OPTIONS}
    assert g.__name__ == "f" and g.__wrapped__ is f
    assert "tanh" in g.lower(x, n=3).as_text()  # attributes reach the jitted fn


def test_library_programs_use_it():
    for fn in (cams.cam_batch, gradients.attribution_batch, predict._predict,
               predict._activations):
        assert isinstance(fn, xla._LazyJit), fn
    assert any(isinstance(v, xla._LazyJit) for v in vars(metrics).values())


def test_cam_values_unchanged_by_options(fresh):
    """Eigen-CAM and Grad-CAM with and without the options agree to float32
    rounding (the options change which library runs an op, not the math)."""
    model = jcv.tiny_vgg16(include_top=True)
    params = model.init_params(jax.random.key(0))
    imgs = np.asarray(jax.random.uniform(jax.random.key(1), (2, *model.input_shape))
                      * 255.0)
    with_opts = {m: np.asarray(jcv.cam(params, imgs, model=model, method=m))
                 for m in ("gradcam", "eigencam")}
    fresh.setenv("JAXCONVVIZ_XLA_OPTIONS", "off")
    xla._reset()
    for m, v in with_opts.items():
        plain = jax.jit(cams.cam_batch.__wrapped__, static_argnames=(
            "model", "layer", "method", "use_top1", "size", "chunk"))
        ref, _, _ = plain(params, jnp.asarray(imgs, jnp.float32),
                          jnp.zeros(2, jnp.int32), model=model,
                          layer=model.default_layer, method=m, use_top1=True)
        np.testing.assert_allclose(v, np.asarray(ref), atol=2e-5)


def test_not_applied_off_the_cpu(fresh):
    fresh.setenv("XLA_FLAGS", "")
    fresh.setattr(xla.jax, "default_backend", lambda: "gpu")
    assert xla.compiler_options() is None
    assert xla.STATUS["reason"] == "default backend is gpu, not cpu"
