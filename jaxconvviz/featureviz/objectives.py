"""Objectives for feature visualization: pure, hashable, composable.

An objective maps a :class:`Context` (the activations of the layers it
reads, the class logits if it needs them, the optimised images and each
image's filter index) to one value per image, float32 ``(n,)``; the
rendering engine *maximises* the sum. Objectives combine with ``+``, ``-``,
unary ``-`` and scalar ``*``:

    obj = Channel("block4_conv1") - 1e-3 * TotalVariation()

Penalties (:class:`TotalVariation`, :class:`L1`, :class:`Blur`) are positive
costs: subtract them. ``channel=None`` in :class:`Channel`/:class:`Neuron`
means "the filter index of each image" (the ``filter_indices`` passed to
:func:`~jaxconvviz.render`).

Imports jax and numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp

from jaxconvviz.errors import InputError


@dataclass(frozen=True)
class Context:
    """What an objective sees for a batch of ``n`` images.

    Attributes:
      acts: ``{layer: float32 (n, h', w', c)}`` for every layer in
        ``objective.layers``.
      logits: float32 ``(n, classes)`` class logits, or None.
      images: ``(n, h, w, c)``, the optimised images before the random
        transforms (lucid style: RGB in [0, 1]; book style: the optimised
        domain).
      filters: int ``(n,)``, each image's filter index.
    """

    acts: dict
    logits: Any
    images: Any
    filters: Any


class Objective:
    """Base class: ``obj(ctx) -> (n,)``; composes with ``+ - *``."""

    #: layers whose activations the objective reads
    layers: frozenset = frozenset()
    #: whether it reads the class logits (needs a model with a top)
    needs_logits: bool = False
    #: whether an image's value depends on other images of the batch
    couples_images: bool = False

    def __call__(self, ctx: Context):  # pragma: no cover - abstract
        raise NotImplementedError

    def __add__(self, other):
        if isinstance(other, (int, float)) and other == 0:
            return self
        return Sum((self, _as_objective(other)))

    __radd__ = __add__

    def __sub__(self, other):
        return Sum((self, Scaled(_as_objective(other), -1.0)))

    def __rsub__(self, other):
        return Sum((_as_objective(other), Scaled(self, -1.0)))

    def __neg__(self):
        return Scaled(self, -1.0)

    def __mul__(self, c):
        if isinstance(c, bool) or not isinstance(c, (int, float)):
            raise InputError(f"an objective can be multiplied by a number only; "
                             f"got {c!r:.60}.")
        return Scaled(self, float(c))

    __rmul__ = __mul__


def _as_objective(o) -> Objective:
    if not isinstance(o, Objective):
        raise InputError(f"objectives combine with objectives (Channel, Neuron, "
                         f"...); got {o!r:.60}.")
    return o


@dataclass(frozen=True)
class Sum(Objective):
    """Sum of objectives."""

    terms: tuple

    @property
    def layers(self):
        return frozenset().union(*(t.layers for t in self.terms))

    @property
    def needs_logits(self):
        return any(t.needs_logits for t in self.terms)

    @property
    def couples_images(self):
        return any(t.couples_images for t in self.terms)

    def __call__(self, ctx):
        out = self.terms[0](ctx)
        for t in self.terms[1:]:
            out = out + t(ctx)
        return out


@dataclass(frozen=True)
class Scaled(Objective):
    """``weight * objective``."""

    objective: Objective
    weight: float

    @property
    def layers(self):
        return self.objective.layers

    @property
    def needs_logits(self):
        return self.objective.needs_logits

    @property
    def couples_images(self):
        return self.objective.couples_images

    def __call__(self, ctx):
        return self.weight * self.objective(ctx)


def _channel(ctx, layer, channel):
    """``(n, h', w')``: channel ``channel`` (None: each image's filter)."""
    a = ctx.acts[layer]
    if channel is None:
        k = jnp.arange(a.shape[-1])[None, None, None, :]
        return jnp.where(k == ctx.filters[:, None, None, None], a, 0.0).sum(-1)
    return a[..., channel]


@dataclass(frozen=True)
class Channel(Objective):
    """Mean over positions of one channel of ``layer``: lucid's ``channel``."""

    layer: str
    channel: int | None = None

    @property
    def layers(self):
        return frozenset((self.layer,))

    def __call__(self, ctx):
        return _channel(ctx, self.layer, self.channel).mean(axis=(1, 2))


@dataclass(frozen=True)
class Neuron(Objective):
    """One unit of a channel: at ``(y, x)``, default the centre
    ``(h' // 2, w' // 2)`` (lucid's ``neuron``)."""

    layer: str
    channel: int | None = None
    y: int | None = None
    x: int | None = None

    @property
    def layers(self):
        return frozenset((self.layer,))

    def __call__(self, ctx):
        a = _channel(ctx, self.layer, self.channel)
        y = a.shape[1] // 2 if self.y is None else self.y
        x = a.shape[2] // 2 if self.x is None else self.x
        return a[:, y, x]


@dataclass(frozen=True)
class Direction(Objective):
    """Mean over positions of ``act . vector`` (lucid's ``direction``);
    ``vector`` has one entry per channel of ``layer`` (a tuple, so hashable)."""

    layer: str
    vector: tuple = field(default=())

    def __post_init__(self):
        object.__setattr__(self, "vector", tuple(float(v) for v in self.vector))

    @property
    def layers(self):
        return frozenset((self.layer,))

    def __call__(self, ctx):
        a = ctx.acts[self.layer]
        if a.shape[-1] != len(self.vector):
            raise InputError(
                f"Direction vector must have one entry per channel of "
                f"{self.layer!r} ({a.shape[-1]}); got {len(self.vector)}.")
        return (a @ jnp.asarray(self.vector, jnp.float32)).mean(axis=(1, 2))


@dataclass(frozen=True)
class CosineDirection(Objective):
    """Activation-atlas objective (Carter et al. 2019, lucid's
    ``direction_neuron_cossim``): ``dot * max(cos, 0.1) ** cossim_pow`` at one
    position, with ``dot = a . v`` and ``cos`` the cosine similarity of the
    activation vector ``a`` (C,) and the direction ``v``.

    ``vectors`` is a tuple of directions, each one entry per channel of
    ``layer``: image ``i`` is scored against ``vectors[filters[i]]`` (the
    filter index passed to :func:`~jaxconvviz.render` picks the row), or
    against ``vectors[0]`` when there is only one. Rows are read as one table,
    so an image's value does not depend on which other rows the batch holds.
    ``center=True`` scores the centre position ``(h' // 2, w' // 2)`` (the
    paper's neuron objective); False: the mean of the score over positions.
    """

    layer: str
    vectors: tuple = field(default=())
    cossim_pow: float = 4.0
    center: bool = True

    def __post_init__(self):
        rows = self.vectors
        if rows and not isinstance(rows[0], (tuple, list)) and not hasattr(
                rows[0], "__len__"):
            rows = (rows,)
        rows = tuple(tuple(float(v) for v in r) for r in rows)
        if not rows or len({len(r) for r in rows}) != 1 or not rows[0]:
            raise InputError(
                f"CosineDirection vectors must be one or more equal-length "
                f"directions (C,) of {self.layer!r}; got {len(rows)} rows.")
        object.__setattr__(self, "vectors", rows)
        object.__setattr__(self, "cossim_pow", float(self.cossim_pow))

    @property
    def layers(self):
        return frozenset((self.layer,))

    def __call__(self, ctx):
        a = ctx.acts[self.layer]
        table = jnp.asarray(self.vectors, jnp.float32)
        if a.shape[-1] != table.shape[1]:
            raise InputError(
                f"CosineDirection vectors must have one entry per channel of "
                f"{self.layer!r} ({a.shape[-1]}); got {table.shape[1]}.")
        if table.shape[0] == 1:
            v = jnp.broadcast_to(table, (a.shape[0], table.shape[1]))
        else:
            v = table[jnp.clip(ctx.filters, 0, table.shape[0] - 1)]
        if self.center:
            a = a[:, a.shape[1] // 2:a.shape[1] // 2 + 1,
                  a.shape[2] // 2:a.shape[2] // 2 + 1]
        dot = jnp.einsum("nhwc,nc->nhw", a, v)
        mag = jnp.sqrt(jnp.sum(jnp.square(a), axis=-1)) * jnp.linalg.norm(
            v, axis=-1)[:, None, None]
        cos = jnp.maximum(dot / (mag + 1e-4), 0.1)
        return (dot * cos ** self.cossim_pow).mean(axis=(1, 2))


@dataclass(frozen=True)
class ClassLogit(Objective):
    """The logit of class ``cls`` (a model with a top)."""

    cls: int
    needs_logits = True

    def __call__(self, ctx):
        return ctx.logits[:, self.cls]


@dataclass(frozen=True)
class ClassProbability(Objective):
    """The softmax probability of class ``cls`` (a model with a top)."""

    cls: int
    needs_logits = True

    def __call__(self, ctx):
        return jax.nn.softmax(ctx.logits, axis=-1)[:, self.cls]


@dataclass(frozen=True)
class Diversity(Objective):
    """Lucid's diversity term, within each group of images of the same filter.

    For image ``i``: ``-sum_{j != i, same filter} <G_i, G_j> / m`` with
    ``G`` the Gram matrix of ``layer``'s activations (over positions),
    L2-normalised, and ``m`` the group size. Request a filter several times
    (``filter_indices=[k, k, k, k]``) in one chunk (``batch_size``) and add
    ``weight * Diversity(layer)`` to get different images of one filter.
    """

    layer: str
    couples_images = True

    @property
    def layers(self):
        return frozenset((self.layer,))

    def __call__(self, ctx):
        a = ctx.acts[self.layer]
        n, h, w, c = a.shape
        flat = a.reshape(n, h * w, c)
        g = jnp.einsum("npc,npd->ncd", flat, flat).reshape(n, c * c)
        g = g / jnp.maximum(jnp.linalg.norm(g, axis=1, keepdims=True), 1e-10)
        sim = g @ g.T
        same = ctx.filters[:, None] == ctx.filters[None, :]
        other = same & ~jnp.eye(n, dtype=bool)
        m = same.sum(axis=1).astype(jnp.float32)
        return -jnp.where(other, sim, 0.0).sum(axis=1) / m


@dataclass(frozen=True)
class TotalVariation(Objective):
    """Penalty: sum of absolute differences of neighbouring pixels (as
    ``tf.image.total_variation``); subtract it."""

    def __call__(self, ctx):
        x = ctx.images
        dy = jnp.abs(x[:, 1:] - x[:, :-1]).sum(axis=(1, 2, 3))
        dx = jnp.abs(x[:, :, 1:] - x[:, :, :-1]).sum(axis=(1, 2, 3))
        return dy + dx


@dataclass(frozen=True)
class L1(Objective):
    """Penalty: ``sum |image - constant|`` (lucid's ``L1``); subtract it."""

    constant: float = 0.5

    def __call__(self, ctx):
        return jnp.abs(ctx.images - self.constant).sum(axis=(1, 2, 3))


@dataclass(frozen=True)
class Blur(Objective):
    """Penalty: ``0.5 * sum (image - stop_gradient(blur(image)))^2`` with a
    3x3 box blur (edge-normalised), lucid's ``blur_input_each_step``;
    subtract it to pull each image towards its blur."""

    def __call__(self, ctx):
        x = ctx.images
        ones = jnp.ones_like(x[..., :1])
        k = jnp.ones((3, 3), jnp.float32)

        def box(v):
            p = jnp.pad(v, ((0, 0), (1, 1), (1, 1), (0, 0)))
            h, w = v.shape[1:3]
            return sum(p[:, i:i + h, j:j + w] * k[i, j]
                       for i in range(3) for j in range(3))

        blurred = jax.lax.stop_gradient(box(x) / box(ones))
        return 0.5 * jnp.square(x - blurred).sum(axis=(1, 2, 3))


__all__ = ["Context", "Objective", "Sum", "Scaled", "Channel", "Neuron",
           "Direction", "CosineDirection", "ClassLogit", "ClassProbability",
           "Diversity", "TotalVariation", "L1", "Blur"]
