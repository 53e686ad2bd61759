"""Multi-step book-style ascent against an independent reference: a plain
``jax.grad`` loop over one image at a time, written here from the book's
listing (DLwP 5.32-5.38), sharing nothing with the library's ascent engine
but the network's forward pass.

Compared as ascent should be (it is chaotic): by the activation reached and
by single steps, not by final pixels after many steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconvviz as jcv


def _reference(params, model, layer, k, x0, *, steps, step_size,
               pre_activation):
    net = model.without_activation(layer) if pre_activation else model

    def objective(x):
        act = net.forward(params, x[None], stop=layer)[0]
        return act[..., k].mean()

    grad = jax.jit(jax.grad(objective))
    x = jnp.asarray(x0, jnp.float32)
    for _ in range(steps):
        g = grad(x)
        x = x + step_size * g / (jnp.sqrt(jnp.mean(g * g)) + 1e-5)
    return np.asarray(x), float(jax.jit(objective)(x))


def _start(n, size, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 1, (n, size, size, 3)) * 20 + 128).astype(np.float32)


@pytest.mark.parametrize("pre_activation", [False, True])
@pytest.mark.slow
def test_one_step_equals_the_reference(tiny_params, tiny_model, pre_activation):
    layer, filters = "block2_conv1", [0, 2, 3]
    x0 = _start(len(filters), 32)
    got = np.asarray(jcv.filter_patterns(
        tiny_params, layer, filters, init=x0, steps=1, size=32, model=tiny_model,
        style=jcv.Book(step_size=1.0, pre_activation=pre_activation)))
    for i, k in enumerate(filters):
        want, _ = _reference(tiny_params, tiny_model, layer, k, x0[i], steps=1,
                             step_size=1.0, pre_activation=pre_activation)
        np.testing.assert_allclose(got[i], want, rtol=0, atol=2e-4)


@pytest.mark.slow
def test_many_steps_reach_the_reference_activation(tiny_params, tiny_model):
    layer, filters, steps = "block3_conv1", [1, 4, 6], 12
    x0 = _start(len(filters), 32, seed=1)
    got = jcv.filter_patterns(tiny_params, layer, filters, init=x0, steps=steps,
                              size=32, model=tiny_model,
                              style=jcv.Book(step_size=1.0, pre_activation=True))
    reached = np.asarray(jcv.filter_activation(
        tiny_params, got, layer, filters, model=tiny_model.without_activation(
            layer)))
    for i, k in enumerate(filters):
        _, want = _reference(tiny_params, tiny_model, layer, k, x0[i],
                             steps=steps, step_size=1.0, pre_activation=True)
        assert reached[i] == pytest.approx(want, rel=1e-3, abs=1e-5)


@pytest.mark.slow
def test_real_weights_reach_the_reference_activation(hed_params):
    """The bundled HED VGG16, block2_conv1, 10 steps: batched engine and the
    reference loop reach the same activation."""
    model = jcv.VGG16(include_top=False)
    layer, filters, steps = "block2_conv1", [3, 17, 40], 10
    x0 = _start(len(filters), 40, seed=2)
    got = jcv.filter_patterns(hed_params, layer, filters, init=x0, steps=steps,
                              size=40, model=model,
                              style=jcv.Book(step_size=1.0, pre_activation=True))
    reached = np.asarray(jcv.filter_activation(
        hed_params, got, layer, filters, model=model.without_activation(layer)))
    for i, k in enumerate(filters):
        _, want = _reference(hed_params, model, layer, k, x0[i], steps=steps,
                             step_size=1.0, pre_activation=True)
        assert reached[i] == pytest.approx(want, rel=1e-3)
