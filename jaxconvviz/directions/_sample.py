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


def activations_and_grad(params, images, *, model, layer, class_index):
    """``(a, g)``, float32 ``(B, h', w', C)`` each: ``layer``'s activations of
    RGB [0, 255] ``images`` and the gradient of ``class_index``'s logit
    with respect to them (None for ``class_index`` None: only the layers up
    to ``layer`` run)."""
    x = model.preprocess(images)
    if class_index is None:
        _, caps = model.forward_with(params, x, capture=(layer,), stop=layer)
        return caps[layer].astype(jnp.float32), None
    shape = (x.shape[0], *model.output_shape(layer, tuple(x.shape[1:3])))

    def logit(delta):
        out, caps = model.forward_with(params, x, capture=(layer,),
                                       perturb={layer: delta}, logits=True)
        return out[:, class_index].astype(jnp.float32).sum(), caps[layer]

    g, a = jax.grad(logit, has_aux=True)(jnp.zeros(shape, x.dtype))
    return a.astype(jnp.float32), g.astype(jnp.float32)


def _activations_and_weights(params, images, *, model, layer, class_index):
    """``(a (B, h', w', C), w (B, h', w'))``: the activations and each
    vector's weight (1, or its attribution ``a . g`` to ``class_index``'s
    logit, clipped at 0)."""
    a, g = activations_and_grad(params, images, model=model, layer=layer,
                                class_index=class_index)
    if g is None:
        return a, jnp.ones(a.shape[:3], jnp.float32)
    return a, jnp.maximum((a * g).sum(-1), 0.0)


@functools.partial(xla.jit, static_argnames=("model", "layer", "class_index",
                                             "impl", "border"),
                   donate_argnums=(4,))
def _update(params, images, index, kd, state, *, model, layer, class_index, impl,
            border=0):
    """The reservoir after one batch (on device, fixed shapes).

    ``state``: ``prio (S,)`` (-inf: empty), ``img (S,)``, ``pos (S,)``,
    ``vec (S, C)``, ``w (S,)``. The batch's positions are appended and the
    ``S`` first in the order (priority descending, image, position) kept:
    a total order, so the result does not depend on how the dataset was cut
    into batches.
    """
    a, w = _activations_and_weights(params, images, model=model, layer=layer,
                                    class_index=class_index)
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
    img = jnp.broadcast_to(index[:, None], (b, h * wd)).reshape(-1)
    pos = jnp.broadcast_to(jnp.arange(h * wd, dtype=jnp.int32)[None], (b, h * wd))
    n = state["prio"].shape[0]
    allp = jnp.concatenate([state["prio"], prio.reshape(-1)])
    alli = jnp.concatenate([state["img"], jnp.where(prio.reshape(-1) > -jnp.inf, img,
                                                    jnp.iinfo(jnp.int32).max)])
    allq = jnp.concatenate([state["pos"], pos.reshape(-1)])
    order = jnp.arange(allp.shape[0], dtype=jnp.int32)
    _, _, _, order = jax.lax.sort((-allp, alli, allq, order), num_keys=3)
    keep = order[:n]
    allv = jnp.concatenate([state["vec"], a.reshape(-1, c)])
    allw = jnp.concatenate([state["w"], w.reshape(-1)])
    return {"prio": allp[keep], "img": alli[keep], "pos": allq[keep],
            "vec": allv[keep], "w": allw[keep]}


def sample_vectors(params, src, layer: str, *, key, samples: int, model, size: int,
                   batch_size: int, class_index: int | None, border: int = 0,
                   progress=None):
    """Stream ``src`` through ``model`` and keep the reservoir (on device).

    ``border``: positions within that many rows/columns of the map's edge
    are never drawn.

    Returns ``(vectors (N, C) float32, image_index (N,) int32, position (N, 2)
    int32 (row, col) in the layer's map, weight (N,) float32, map_hw)`` in
    priority order, ``N = min(samples, drawable positions)`` (None for the
    arrays when nothing could be drawn).
    """
    m = bind(model, library_gradients=False)
    kd = np.asarray(jax.random.key_data(key))
    impl = str(jax.random.key_impl(key))
    shape = model.output_shape(layer, (size, size))
    hw, c = (int(shape[0]), int(shape[1])), int(shape[2])
    s = int(samples)
    state = {"prio": jnp.full((s,), -jnp.inf, jnp.float32),
             "img": jnp.full((s,), jnp.iinfo(jnp.int32).max, jnp.int32),
             "pos": jnp.zeros((s,), jnp.int32), "vec": jnp.zeros((s, c), jnp.float32),
             "w": jnp.zeros((s,), jnp.float32)}
    t0, done = time.perf_counter(), 0
    for batch in src.batches(size, batch_size):
        state = _update(params, jnp.asarray(batch.images), jnp.asarray(batch.index),
                        kd, state, model=m, layer=layer, class_index=class_index,
                        impl=impl, border=int(border))
        done += int((batch.index >= 0).sum())
        if progress is not None:
            progress(done, src.n, time.perf_counter() - t0)
    prio = np.asarray(state["prio"])
    n = int(np.isfinite(prio).sum())
    if n == 0:
        return None, None, None, None, hw
    pos = np.asarray(state["pos"][:n])
    return (np.asarray(state["vec"][:n], np.float32),
            np.asarray(state["img"][:n], np.int32),
            np.stack([pos // hw[1], pos % hw[1]], 1).astype(np.int32),
            np.asarray(state["w"][:n], np.float32), hw)
