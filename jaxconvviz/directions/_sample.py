"""The reservoir of spatial activation vectors (private).

Priority sampling: every spatial position ``p`` of image ``i`` (its global
index in the dataset) gets ``u = uniform(fold_in(fold_in(key, i), p))`` and
the priority ``log(u) / w`` (Efraimidis-Spirakis weighted sampling, ``w``
the vector's weight: 1, or its attribution to a class logit clipped at 0,
and a weight of 0 is never drawn). The reservoir keeps the ``samples``
highest priorities, ties by ``(i, p)``, so the sample depends on the key and
the dataset only, never on the batch size, the order of batches or how
they are split over devices and processes.

Imports jax and numpy only.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxconvviz.backend import bind, xla


@functools.partial(xla.jit, static_argnames=("model", "layer", "k", "class_index",
                                             "impl", "border"))
def _candidates(params, images, index, kd, *, model, layer, k, class_index, impl,
                border=0):
    """The ``k`` best candidates of one batch: priority ``(k,)``, flat
    position ``(k,)`` in ``(B * h' * w')``, vectors ``(k, C)``, weights ``(k,)``."""
    x = model.preprocess(images)
    if class_index is None:
        _, caps = model.forward_with(params, x, capture=(layer,), stop=layer)
        a = caps[layer].astype(jnp.float32)
        w = jnp.ones(a.shape[:3], jnp.float32)
    else:
        shape = (x.shape[0], *model.output_shape(layer, tuple(x.shape[1:3])))

        def logit(delta):
            out, caps = model.forward_with(params, x, capture=(layer,),
                                           perturb={layer: delta}, logits=True)
            return out[:, class_index].astype(jnp.float32).sum(), caps[layer]

        g, a = jax.grad(logit, has_aux=True)(jnp.zeros(shape, x.dtype))
        a = a.astype(jnp.float32)
        w = jnp.maximum((a * g.astype(jnp.float32)).sum(-1), 0.0)
    b, h, wd, c = a.shape
    key = jax.random.wrap_key_data(kd, impl=impl)

    def row(i):
        ki = jax.random.fold_in(key, i)
        return jax.vmap(lambda p: jax.random.uniform(
            jax.random.fold_in(ki, p), (), jnp.float32, 1e-30, 1.0))(
                jnp.arange(h * wd, dtype=jnp.int32))

    u = jax.vmap(row)(jnp.maximum(index, 0)).reshape(b, h, wd)
    ok = (index >= 0)[:, None, None] & (w > 0)
    if border:
        r = jnp.arange(h)[:, None]
        q = jnp.arange(wd)[None, :]
        inner = (r >= border) & (r < h - border) & (q >= border) & (q < wd - border)
        ok = ok & inner[None]
    prio = jnp.where(ok, jnp.log(u) / jnp.where(w > 0, w, 1.0), -jnp.inf)
    flat = prio.reshape(-1)
    kk = min(k, flat.shape[0])
    top, where = jax.lax.top_k(flat, kk)
    return top, where, a.reshape(-1, c)[where], w.reshape(-1)[where]


class Reservoir:
    """Host-side merge of the batches' candidates (the ``samples`` highest
    priorities, ties by ``(image, position)``)."""

    def __init__(self, samples: int):
        self.samples = int(samples)
        self.prio = np.empty(0, np.float32)
        self.gid = np.empty(0, np.int64)
        self.vec = None
        self.weight = np.empty(0, np.float32)
        self.hw = None

    def add(self, prio, gid, vec, weight):
        keep = np.isfinite(prio)
        prio, gid, vec, weight = prio[keep], gid[keep], vec[keep], weight[keep]
        if self.vec is None:
            self.vec = np.empty((0, vec.shape[1]), np.float32)
        p = np.concatenate([self.prio, prio])
        g = np.concatenate([self.gid, gid])
        order = np.lexsort((g, -p))[:self.samples]
        v = np.concatenate([self.vec, vec])
        w = np.concatenate([self.weight, weight])
        self.prio, self.gid = p[order], g[order]
        self.vec, self.weight = v[order], w[order]


def sample_vectors(params, src, layer: str, *, key, samples: int, model, size: int,
                   batch_size: int, class_index: int | None, border: int = 0,
                   progress=None):
    """Stream ``src`` through ``model`` and keep the reservoir.

    ``border``: positions within that many rows/columns of the map's edge
    are never drawn.

    Returns ``(vectors (N, C) float32, image_index (N,) int32, position (N, 2)
    int32 (row, col) in the layer's map, weight (N,) float32, map_hw)`` in
    priority order, ``N = min(samples, drawable positions)``.
    """
    m = bind(model, library_gradients=False)
    kd = np.asarray(jax.random.key_data(key))
    impl = str(jax.random.key_impl(key))
    res = Reservoir(samples)
    t0, done = time.perf_counter(), 0
    for batch in src.batches(size, batch_size):
        top, where, vec, w = _candidates(
            params, jnp.asarray(batch.images), jnp.asarray(batch.index), kd,
            model=m, layer=layer, k=res.samples, class_index=class_index, impl=impl,
            border=int(border))
        shape = model.output_shape(layer, batch.images.shape[1:3])
        hw = (int(shape[0]), int(shape[1]))
        res.hw = hw
        where = np.asarray(where).astype(np.int64)
        per = hw[0] * hw[1]
        img = batch.index[where // per].astype(np.int64)
        gid = img * per + where % per
        res.add(np.asarray(top), gid, np.asarray(vec), np.asarray(w))
        done += int((batch.index >= 0).sum())
        if progress is not None:
            progress(done, src.n, time.perf_counter() - t0)
    if res.vec is None:
        return None, None, None, None, res.hw
    per = res.hw[0] * res.hw[1]
    pos = res.gid % per
    return (res.vec.astype(np.float32), (res.gid // per).astype(np.int32),
            np.stack([pos // res.hw[1], pos % res.hw[1]], 1).astype(np.int32),
            res.weight.astype(np.float32), res.hw)
