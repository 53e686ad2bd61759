"""Perturbation CAMs: channel weights from one forward pass per (image,
channel)::

    scorecam     w = softmax_c(y(x * up(A_c)))   (up: bilinear to the input
                 size, align-corners, min-max normalised; x in the model's
                 input domain)
    ablationcam  w_c = (y - y(A with channel c zeroed)) / y

``y`` is the explained score (the class logit, or the target's value).
Ablation-CAM zeroes the channel as the paper does (pytorch-grad-cam uses
``min - 1e7`` when the layer can be negative).

Both go through the ``n * c`` pairs in chunks of equal size
(``CamInputs.chunk``, sized so a chunk's activations fit
``Run.memory_budget``) inside one compiled program. Ablation-CAM runs only
the layers after the target layer when it is a cut node of the network
(every chain, and e.g. the last block of ResNet50); elsewhere the whole
network runs with the channel zeroed. Score-CAM's passes are whole-network
passes, many per image, so it prefers the ``"by_shape"`` 3x3 form
(Winograd where it pays), whose extra compilation one call repays.

Imports jax, numpy and the package's compute modules only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxconvviz.attribution._cam_common import resize_matrix
from jaxconvviz.attribution.cam_registry import (
    CamMethod,
    register_cam_method,
    weighted_sum,
)
from jaxconvviz.errors import InputError
from jaxconvviz.models.convnet import ConvNet

__all__ = ["ablation_scores", "ablationcam", "chunk_for", "masked_scores", "scorecam"]


def per_image_bytes(params, model: ConvNet, hw: tuple[int, int]) -> int:
    """Bytes of every layer's output for one image (the forward pass's
    working set; XLA keeps at most this much alive without gradients)."""
    x = jax.ShapeDtypeStruct((1, *hw, model.input_shape[2]), jnp.float32)
    _, cap = jax.eval_shape(lambda p, x: model.forward_with(
        p, x, capture=model.layer_names), params, x)
    item = jnp.dtype(model.dtype).itemsize
    return int(sum(np.prod(s.shape) * item for s in cap.values()))


def chunk_for(params, model, hw, memory_budget: int, total: int) -> int:
    """Forward passes per chunk: as many as ``memory_budget`` bytes hold,
    at least 1, at most ``total``."""
    per = max(1, per_image_bytes(params, model, hw))
    return int(max(1, min(total, memory_budget // per)))


def head_after(params, model: ConvNet, layer: str, act_shape):
    """``a -> class logits`` from ``layer``'s activation when ``layer`` is a
    cut node (every path to the output passes through it: any chain, and
    e.g. ResNet's last block); None otherwise."""
    try:
        jax.eval_shape(lambda a: model.logits(params, a, start=layer),
                       jax.ShapeDtypeStruct(act_shape, model.dtype))
    except InputError:
        return None
    return functools.partial(model.logits, params, start=layer)


def live_first(acts):
    """Score-CAM's pairs ``i * c + k`` (image ``i``, channel ``k``) with the
    live ones first, and how many are live: ``(order (n*c,), n_live)``.

    A channel whose map is exactly zero everywhere (a ReLU that never fired)
    gives Score-CAM an all-zero mask, ``(0 - 0) / (0 - 0 + 1e-8)``, so its
    masked input is the zero image for every such pair: one forward pass of
    a zero image scores them all, exactly."""
    n, h, w, c = acts.shape
    dead = jnp.all(acts.reshape(n, h * w, c) == 0, axis=1).reshape(-1)
    order = jnp.argsort(dead, stable=True)
    return order, (n * c - dead.sum()).astype(jnp.int32)


def ablation_scores(c):
    """``(n, ch)`` explained score with each channel of the layer zeroed."""
    n, _, _, ch = c.acts.shape
    total, chunk = n * ch, c.chunk
    steps = -(-total // chunk)
    head = head_after(c.params, c.model, c.layer, c.acts[:1].shape)

    def one_chunk(ids):
        i, k = ids // ch, ids % ch
        onehot = jax.nn.one_hot(k, ch, dtype=jnp.float32)
        delta = -c.acts[i] * onehot[:, None, None, :]
        if head is not None:
            out = head(c.acts[i] + delta)
        else:
            out, _ = c.model.forward_with(c.params, c.x[i],
                                          perturb={c.layer: delta}, logits=True)
        return c.score(out, i)

    idx = jnp.minimum(jnp.arange(steps * chunk), total - 1).reshape(steps, chunk)
    scores = jax.lax.map(one_chunk, idx).reshape(-1)[:total]
    return scores.reshape(n, ch)


def ablationcam(c):
    n = c.acts.shape[0]
    base = c.score(c.logits, jnp.arange(n))[:, None]
    return weighted_sum(c.acts, (base - ablation_scores(c)) / base)


def masked_scores(c):
    """``(n, ch)`` explained score of each image times each channel's
    upsampled, min-max normalised map: the live pairs in chunks (a while
    loop stops after the last live one), the dead ones from one forward
    pass of the zero image."""
    n, h, w, ch = c.acts.shape
    total, chunk = n * ch, c.chunk
    steps = -(-total // chunk)
    hh, ww = c.x.shape[1:3]
    rh = jnp.asarray(resize_matrix(h, hh, align_corners=True))
    rw = jnp.asarray(resize_matrix(w, ww, align_corners=True))

    def one_chunk(ids):
        i, k = ids // ch, ids % ch
        up = jnp.einsum("Hh,bhw,Ww->bHW", rh, c.acts[i, :, :, k], rw)
        lo = up.min(axis=(1, 2), keepdims=True)
        hi = up.max(axis=(1, 2), keepdims=True)
        up = (up - lo) / (hi - lo + 1e-8)
        out, _ = c.model.forward_with(c.params, c.x[i] * up[..., None], logits=True)
        return c.score(out, i)

    order, n_live = live_first(c.acts)
    padded = jnp.concatenate([order, jnp.full((steps * chunk - total,),
                                              order[-1])])

    def body(state):
        s, buf = state
        ids = jax.lax.dynamic_slice(padded, (s * chunk,), (chunk,))
        return s + 1, jax.lax.dynamic_update_slice(buf, one_chunk(ids), (s * chunk,))

    _, buf = jax.lax.while_loop(lambda st: st[0] * chunk < n_live, body,
                                (jnp.int32(0), jnp.zeros(steps * chunk, jnp.float32)))
    zero, _ = c.model.forward_with(c.params, jnp.zeros_like(c.x[:1]), logits=True)
    dead_score = c.score(jnp.repeat(zero, n, axis=0), jnp.arange(n))  # (n,)
    pos = jnp.arange(total)
    scores = jnp.zeros(total, jnp.float32).at[order].set(
        jnp.where(pos < n_live, buf[:total], dead_score[order // ch]))
    return scores.reshape(n, ch)


def scorecam(c):
    return weighted_sum(c.acts, jax.nn.softmax(masked_scores(c), axis=-1))


register_cam_method(CamMethod("scorecam", "Score-CAM", "perturbation", scorecam,
                              needs_gradient=False, perturbation=True,
                              conv3x3="by_shape"))
register_cam_method(CamMethod("ablationcam", "Ablation-CAM", "perturbation",
                              ablationcam, needs_gradient=False, perturbation=True))
