"""A toy localization task with known answers: coloured squares on noise.

:func:`blob_images` draws one 8x8 square of a class colour (red, green, blue)
at a random place on grey noise; :func:`train_blob_net` trains a small CNN
(:func:`blob_model`) to name the colour. The
object's box is known, so a heatmap can be checked against it (the tests'
localization check and the demo's method-comparison figure).

Imports jax, numpy, optax and the package's compute modules only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxconvviz._types import Params, PRNGKey
from jaxconvviz.models.convnet import ConvNet, Layer

SIDE, BLOB = 32, 8
COLOURS = np.array([[230.0, 40, 40], [40, 200, 40], [40, 60, 230]], np.float32)
CLASS_NAMES = ("red", "green", "blue")


def blob_images(key: PRNGKey, n: int):
    """``(images (n, 32, 32, 3) RGB [0, 255], labels (n,), masks (n, 32, 32))``."""
    k1, k2, k3 = jax.random.split(key, 3)
    noise = jnp.clip(110 + 35 * jax.random.normal(k1, (n, SIDE, SIDE, 3)), 0, 255)
    y = jax.random.randint(k2, (n,), 0, 3)
    pos = jax.random.randint(k3, (n, 2), 0, SIDE - BLOB + 1)
    ii = jnp.arange(SIDE)
    rows = (ii[None] >= pos[:, :1]) & (ii[None] < pos[:, :1] + BLOB)
    cols = (ii[None] >= pos[:, 1:]) & (ii[None] < pos[:, 1:] + BLOB)
    mask = rows[:, :, None] & cols[:, None, :]
    x = jnp.where(mask[..., None], jnp.asarray(COLOURS)[y][:, None, None, :], noise)
    return x, y, mask


def blob_model() -> ConvNet:
    """conv(8, relu) -> 2x2 max pool -> conv(16, relu) ``c2`` -> GAP -> dense(3)."""
    return ConvNet(layers=(
        Layer.make("c1", "conv", features=8, kernel_size=3, activation="relu"),
        Layer.make("p1", "maxpool", pool_size=2),
        Layer.make("c2", "conv", features=16, kernel_size=3, activation="relu"),
        Layer.make("gap", "gap"),
        Layer.make("d", "dense", features=3, activation="softmax"),
    ), input_shape=(SIDE, SIDE, 3), preprocessing="scale01", name_="blob_net")


_OPT = optax.adam(1e-2)


@functools.partial(jax.jit, static_argnames=("model", "batch"))
def _train_step(params, state, k, *, model: ConvNet, batch: int):
    """One Adam step on a fresh batch (module level, so every call of
    :func:`train_blob_net` reuses one compiled program)."""
    x, y, _ = blob_images(k, batch)

    def loss(p):
        logits = model.logits(p, model.preprocess(x))
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.grad(loss)(params)
    updates, state = _OPT.update(grads, state, params)
    return optax.apply_updates(params, updates), state


def train_blob_net(*, key: PRNGKey, steps: int = 200, batch: int = 64
                   ) -> tuple[ConvNet, Params]:
    """Adam (1e-2) on fresh batches of blob images; 200 steps reach >= 95%
    accuracy (the step is compiled once per process)."""
    model = blob_model()
    kinit, kdata = jax.random.split(key)
    keys = jax.random.split(kinit, 3)
    shapes = {"c1": (3, 3, 3, 8), "c2": (3, 3, 8, 16), "d": (16, 3)}
    params = {
        name: {"kernel": jax.random.normal(k, shape) * np.sqrt(
            2.0 / np.prod(shape[:-1])), "bias": jnp.zeros(shape[-1])}
        for k, (name, shape) in zip(keys, shapes.items(), strict=True)
    }
    state = _OPT.init(params)
    for k in jax.random.split(kdata, steps):
        params, state = _train_step(params, state, k, model=model, batch=batch)
    return model, params


__all__ = ["blob_images", "blob_model", "train_blob_net", "CLASS_NAMES", "SIDE",
           "BLOB"]
