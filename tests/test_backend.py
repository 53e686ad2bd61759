"""jaxconvviz.backend: Backend validation, precedence (model field > process
default > "auto"), resolution for another platform, binding (a program built
under a process default is its own jit cache entry), and every algorithm's
values against the default's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconvviz as jcv
from jaxconvviz.backend import (
    CHOICES,
    Backend,
    backend,
    bind,
    default_backend,
    resolve,
    resolve_channel_only,
    resolve_stop_dead,
)
from jaxconvviz.errors import InputError
from jaxconvviz.models import predict as predict_module
from jaxconvviz.models.convnet import ConvNet, Layer

CPU = jax.default_backend() == "cpu"


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("field,bad", [
    ("conv", "cudnn"), ("conv3x3", "fast"), ("depthwise", "slice"),
    ("pointwise", "gemm"), ("conv_vjp", None), ("channel_only", "yes"),
    ("stop_dead", 1), ("loop", "while"),
])
def test_bad_field_values_name_the_field_the_value_and_the_choices(field, bad):
    with pytest.raises(InputError) as e:
        Backend(**{field: bad})
    msg = str(e.value)
    assert f"Backend.{field} must be one of" in msg and repr(bad) in msg
    assert all(repr(c) in msg for c in CHOICES[field])


def test_bad_platform_and_unknown_fields():
    with pytest.raises(InputError, match=r"Backend.platform must be None or one "
                       r"of 'cpu', 'gpu', 'tpu'; got 'cuda'"):
        Backend(platform="cuda")
    with pytest.raises(TypeError):
        Backend(conv_impl="xla")  # the 0.x name is not a field
    with pytest.raises(InputError, match="unknown Backend fields"):
        jcv.tiny_vgg16().with_backend(conv_impl="xla")
    with pytest.raises(InputError, match="backend must be a jaxconvviz Backend; "
                       "got dict"):
        ConvNet(layers=(), backend={"conv": "xla"})
    with pytest.raises(InputError, match="prefer_conv3x3 must be one of"):
        resolve(Backend(), prefer_conv3x3="auto")


def test_backend_is_hashable_and_a_model_field():
    b = Backend(conv3x3="winograd")
    assert hash(b) == hash(Backend(conv3x3="winograd")) and b != Backend()
    m = jcv.tiny_vgg16()
    assert m.backend == Backend()
    w = m.with_backend(conv3x3="winograd")
    assert w.backend == b and w != m and hash(w) != hash(m)
    assert w.with_backend(conv3x3="auto") == m  # "auto" unsets
    assert m.with_backend() is m and m.with_backend(Backend()) is m
    assert m.with_backend(b, depthwise="grouped").backend == Backend(
        conv3x3="winograd", depthwise="grouped")


# ---------------------------------------------------------------- precedence
def test_precedence_model_field_over_process_default_over_auto():
    m = jcv.tiny_vgg16()
    assert default_backend() == Backend()
    # auto: the platform's rule
    assert bind(m, library_gradients=False).backend.conv3x3 == "conv"
    with backend(conv3x3="winograd", depthwise="grouped"):
        assert default_backend() == Backend(conv3x3="winograd", depthwise="grouped")
        b = bind(m, library_gradients=False).backend
        assert (b.conv3x3, b.depthwise) == ("winograd", "grouped")
        # the model's own field wins
        b = bind(m.with_backend(conv3x3="conv"), library_gradients=False).backend
        assert (b.conv3x3, b.depthwise) == ("conv", "grouped")
        with backend(depthwise="slices"):  # nested blocks stack
            b = bind(m, library_gradients=False).backend
            assert (b.conv3x3, b.depthwise) == ("winograd", "slices")
        # a program's preference is only "auto"'s: the default wins over it
        b = bind(m, library_gradients=True, prefer_conv3x3="by_shape").backend
        assert b.conv3x3 == "winograd"
    assert default_backend() == Backend()
    # the preference applies where nothing is set
    b = bind(m, library_gradients=True, prefer_conv3x3="by_shape").backend
    assert b.conv3x3 == ("by_shape" if CPU else "conv")


def test_bind_is_idempotent_and_resolves_every_algorithm():
    m = jcv.tiny_vgg16()
    for lib in (False, True):
        bound = bind(m, library_gradients=lib)
        assert bind(bound, library_gradients=lib) is bound
        assert "auto" not in (bound.backend.conv, bound.backend.conv3x3,
                              bound.backend.depthwise, bound.backend.pointwise,
                              bound.backend.conv_vjp, bound.backend.loop)
        assert bound.backend.platform == ("cpu" if CPU else bound.backend.platform)
        # channel_only/stop_dead depend on the layer and the objective
        assert bound.backend.channel_only == bound.backend.stop_dead == "auto"


# ------------------------------------------------------ resolution per platform
def test_today_defaults_on_cpu():
    if not CPU:
        pytest.skip("the CPU rules")
    user = resolve(Backend())
    lib = resolve(Backend(), library_gradients=True)
    assert (user.conv, user.conv3x3, user.depthwise, user.pointwise, user.conv_vjp,
            user.loop) == ("xla", "conv", "slices", "dot", "jax", "fori")
    assert (lib.conv, lib.conv_vjp) == ("xla", "custom")  # float32


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_resolution_for_an_accelerator_on_any_host(platform):
    for lib in (False, True):
        for dtype in (jnp.float32, jnp.bfloat16):
            b = resolve(Backend(platform=platform), dtype=dtype,
                        library_gradients=lib, prefer_conv3x3="by_shape")
            assert (b.conv, b.conv3x3, b.depthwise, b.pointwise, b.conv_vjp,
                    b.loop, b.platform) == ("xla", "conv", "grouped", "conv", "jax",
                                            "fori", platform)
    # explicit choices are kept on every platform
    b = resolve(Backend(platform=platform, conv3x3="winograd", conv_vjp="custom"))
    assert (b.conv3x3, b.conv_vjp) == ("winograd", "custom")
    # channel_only: the whole layer off CPU
    assert not resolve_channel_only(Backend(platform=platform), "conv")
    assert resolve_channel_only(Backend(platform="cpu"), "conv")


def test_channel_only_and_stop_dead_rules():
    cpu = Backend(platform="cpu")
    assert not resolve_channel_only(cpu, "depthwise_conv")
    assert resolve_channel_only(cpu.replace(channel_only=True), "conv")
    assert not resolve_channel_only(cpu.replace(channel_only=False), "conv")
    with pytest.raises(InputError, match="channel_only=True needs a conv layer"):
        resolve_channel_only(cpu.replace(channel_only=True), "maxpool")
    assert resolve_stop_dead(cpu, pre_activation=False)
    assert not resolve_stop_dead(cpu, pre_activation=True)
    assert not resolve_stop_dead(cpu.replace(stop_dead=False), pre_activation=False)
    assert resolve_stop_dead(cpu.replace(stop_dead=True), pre_activation=True)


def test_a_gpu_program_built_on_this_host():
    """A model bound for the GPU traces its GPU algorithms here: grouped
    depthwise and 1x1 convolutions as lax convolutions, JAX's VJPs."""
    m = ConvNet(layers=(
        Layer.make("c", "conv", features=4, kernel_size=3),
        Layer.make("d", "depthwise_conv", kernel_size=3),
        Layer.make("p", "conv", features=3, kernel_size=1)), preprocessing="none")
    p = m.init_params(jax.random.key(0), hw=(8, 8))
    x = jnp.ones((1, 8, 8, 3))
    gpu = bind(m.with_backend(platform="gpu"), library_gradients=True)

    def convs(model):
        return str(jax.make_jaxpr(jax.grad(
            lambda z: model.forward(p, z).sum()))(x)).count("conv_general_dilated")

    # forward: 3 convolutions (depthwise as one grouped conv, 1x1 as a conv);
    # the input gradient: JAX's transpose of each, a convolution again
    assert convs(gpu) == 6
    if CPU:
        assert convs(bind(m, library_gradients=True)) < convs(gpu)
    np.testing.assert_allclose(jax.jit(gpu.forward)(p, x), jax.jit(m.forward)(p, x),
                               rtol=1e-5, atol=1e-6)


# ------------------------------------------------------- binding and the cache
def test_a_program_under_a_process_default_is_its_own_cache_entry():
    m = jcv.tiny_vgg16(include_top=False)
    p = m.init_params(jax.random.key(0), hw=(32, 32))
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3)) * 255
    layers = ("block1_conv2",)
    acts = predict_module._activations

    def hlo(model):
        return acts.lower(p, x, bind(model, library_gradients=False),
                          layers).as_text()

    before = acts._cache_size()
    a0 = jcv.activations(p, x, layers=layers, model=m)["block1_conv2"]
    with backend(conv3x3="winograd"):
        a1 = jcv.activations(p, x, layers=layers, model=m)["block1_conv2"]
        h1 = hlo(m)
    a2 = jcv.activations(p, x, layers=layers, model=m)["block1_conv2"]
    assert acts._cache_size() == before + 2  # two programs, the default reused
    h0 = hlo(m)
    assert h0 != h1 and "dot_general" in h1 and "dot_general" not in h0
    np.testing.assert_array_equal(a2, a0)  # the default, not the Winograd one
    np.testing.assert_allclose(a1, a0, rtol=1e-5, atol=1e-5 * float(a0.max()))
    # the model's own field wins over the default here too
    with backend(conv3x3="winograd"):
        a3 = jcv.activations(p, x, layers=layers,
                             model=m.with_backend(conv3x3="conv"))["block1_conv2"]
    np.testing.assert_array_equal(a3, a0)


def test_the_user_program_reads_only_the_model_field():
    """Under the user's own jit the process default does not apply (it would
    not be in that jit's cache key): the model's field does."""
    m = jcv.tiny_vgg16(include_top=False)
    p = m.init_params(jax.random.key(0), hw=(32, 32))
    x = jnp.ones((1, 32, 32, 3))
    fwd = jax.jit(lambda p, x: m.forward(p, x, stop="block1_conv2"))
    y0 = fwd(p, x)
    with backend(conv3x3="winograd"):
        text = jax.jit(lambda p, x: m.forward(p, x, stop="block1_conv2")).lower(
            p, x).as_text()
    assert text == fwd.lower(p, x).as_text()
    w = m.with_backend(conv3x3="winograd")
    assert jax.jit(lambda p, x: w.forward(p, x, stop="block1_conv2")).lower(
        p, x).as_text() != text
    np.testing.assert_array_equal(fwd(p, x), y0)


# ---------------------------------------------------- values of each algorithm
ALGORITHMS = [
    dict(conv3x3="winograd"), dict(conv3x3="by_shape"), dict(depthwise="grouped"),
    dict(depthwise="slices"), dict(pointwise="conv"), dict(pointwise="dot"),
    dict(conv_vjp="custom"), dict(conv_vjp="jax"), dict(conv="matmul"),
    dict(platform="gpu"),
]


def _mixed_net():
    return ConvNet(layers=(
        Layer.make("c1", "conv", features=32, kernel_size=3, activation="relu"),
        Layer.make("c2", "conv", features=32, kernel_size=3, activation="relu"),
        Layer.make("d", "depthwise_conv", kernel_size=3, strides=2,
                   activation="relu6"),
        Layer.make("s", "separable_conv", features=8, kernel_size=3),
        Layer.make("p", "conv", features=6, kernel_size=1),
    ), input_shape=(12, 12, 3), preprocessing="none")


@pytest.mark.parametrize("fields", ALGORITHMS, ids=lambda f: "-".join(
    f"{k}={v}" for k, v in f.items()))
def test_each_algorithm_equals_the_default_within_float32_rounding(fields):
    m = _mixed_net()
    p = m.init_params(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (2, 12, 12, 3))
    alt = bind(m.with_backend(**fields), library_gradients=True)
    ref = bind(m, library_gradients=True)

    def run(model):
        y = jax.jit(model.forward)(p, x)
        g = jax.jit(jax.grad(lambda z: model.forward(p, z)[..., 1].sum()))(x)
        return y, g

    (y0, g0), (y1, g1) = run(ref), run(alt)
    for a, b in ((y1, y0), (g1, g0)):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-6 * float(
            jnp.abs(b).max()) + 1e-7)


def test_jcv_backend_is_the_subpackage_and_the_context_manager():
    import jaxconvviz.backend.xla as xla_module

    assert jcv.backend.Backend is Backend and xla_module.jit is not None
    with jcv.backend(conv3x3="winograd", loop="python") as b:
        assert b == default_backend() == Backend(conv3x3="winograd", loop="python")
        with pytest.raises(InputError, match="Backend.loop must be one of"):
            with jcv.backend(loop="while"):
                pass
        assert default_backend() == b  # a failed block leaves the default alone
    assert default_backend() == Backend()
