"""The streaming pass of :func:`~jaxconvviz.dataset_examples`: device state per unit.

For every unit (channel) of every requested layer the state holds, on the
device, the top-k ``(value, global image index, position)`` over the images
seen so far -- at most one position per image: its best allowed position --
and running statistics over every allowed position of every image (count,
mean, standard deviation, fraction > 0; the max is the top-1 value) plus a
fixed-bin histogram over images of each image's best value (the value that
ranks images for the top-k). One jitted program per batch (:func:`update`) runs the
model once (``forward_with(capture=...)``, ``stop=`` the deepest requested
layer, so only its ancestors are computed) and merges the batch into the
state; nothing comes back to the host until :func:`finalize`.

Exactness. Every merge is :func:`merge`, which is associative and
commutative: the top-k is a sort of ``(value, index)`` pairs (value
descending, ties by the smaller global image index; each image contributes
one pair per unit, its maximum over the allowed positions, at the first
such position in row-major order), so it does not depend on how the images
were cut into batches, devices or processes. Counts (positive positions,
histogram) are exact integers (two int32 words, :data:`WORD_BITS` bits
each). Mean and variance are merged with Chan et al.'s pairwise update from
per-image means and centred sums of squares, so they agree across batchings
to float32 rounding (~1e-6 relative).

Border. A position whose receptive field
(:func:`~jaxconvviz.models.receptive.receptive_field`) lies more than half
outside the input image is left out of the top-k and of the statistics when
``border="exclude"`` (the default): its response is mostly to the zero
padding. ``"keep"`` and ``"mark"`` keep every position (the result flags
border examples either way).

Compute only: imports jax and numpy.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxconvviz.backend import xla
from jaxconvviz.errors import InputError, InputWarning
from jaxconvviz.models.convnet import ConvNet
from jaxconvviz.models.receptive import receptive_field


class BorderWarning(InputWarning):
    """A layer has no position whose receptive field lies mostly inside the
    image; its most central positions are used (and flagged)."""


#: Border policies of :func:`geometry`.
BORDERS = ("exclude", "keep", "mark")

#: Interior edges of the fixed histogram: 0 and +-10**(j/2) for j = -4..8
#: (1e-2 ... 1e4, two per decade). Bin ``b`` of the result counts the images
#: whose best value (the max over the unit's allowed positions) lies in
#: ``[BIN_EDGES[b], BIN_EDGES[b + 1])``; the first and last edges are -inf
#: and +inf, so every image lands in exactly one of the 28 bins. (Images,
#: not positions: a histogram of every position costs 27 compares per
#: activation, which measured 2.5x the forward pass of VGG16 on a CPU.)
_POS_EDGES = 10.0 ** (np.arange(-4, 9) / 2.0)
INNER_EDGES = np.concatenate([-_POS_EDGES[::-1], [0.0], _POS_EDGES]).astype(np.float32)
BIN_EDGES = np.concatenate([[-np.inf], INNER_EDGES, [np.inf]]).astype(np.float32)
NBINS = len(BIN_EDGES) - 1

#: Bits of the low word of the exact two-word counters.
WORD_BITS = 30
_LOW = (1 << WORD_BITS) - 1
#: Index of an empty top-k slot while sorting (sorts after every image).
_NONE = np.iinfo(np.int32).max


class LayerGeometry(NamedTuple):
    """Static facts of one requested layer at the streamed input size.

    Attributes:
      name: the layer.
      hw: ``(h, w)`` of its feature map (``(1, 1)`` for a dense layer).
      channels: its units.
      allowed: ``(h, w)`` bool, the positions the pass reads (see ``border``).
      border: ``(h, w)`` bool, positions whose receptive field lies more than
        half outside the input (all False for dense layers).
    """

    name: str
    hw: tuple[int, int]
    channels: int
    allowed: np.ndarray
    border: np.ndarray


def border_map(model: ConvNet, layer: str, size: int) -> np.ndarray:
    """``(h, w)`` bool: positions of ``layer`` whose receptive field at a
    ``size`` x ``size`` input lies more than 50% outside the image (its
    area inside the image is below half the field's area)."""
    return inside_fraction(model, layer, size) < 0.5


def inside_fraction(model: ConvNet, layer: str, size: int) -> np.ndarray:
    """``(h, w)`` float: the fraction of each position's receptive field
    (at a ``size`` x ``size`` input) that lies inside the image."""
    rf = receptive_field(model, layer, (size, size))
    h, w = rf.output_hw

    def inside(n, start, jump, span, count):
        lo = start + np.arange(count) * jump
        return np.clip(np.minimum(lo + span, n) - np.maximum(lo, 0), 0, None) / span

    fy = inside(size, rf.start[0], rf.jump[0], rf.size[0], h)
    fx = inside(size, rf.start[1], rf.jump[1], rf.size[1], w)
    return fy[:, None] * fx[None, :]


def geometry(model: ConvNet, layers: Sequence[str], size: int, border: str
             ) -> tuple[LayerGeometry, ...]:
    """Per layer its :class:`LayerGeometry`; an InputError when ``border``
    is unknown. A layer none of whose positions has half its field inside
    the image (deep layers of small inputs: VGG16's block5 below ~200 px)
    keeps the positions with the largest fraction inside, flagged as border
    positions, with a :class:`BorderWarning`."""
    if border not in BORDERS:
        raise InputError(f"border must be one of {', '.join(BORDERS)}; got "
                         f"{border!r}.")
    out = []
    spatial = set(model.spatial_layers)
    for name in layers:
        shape = model.output_shape(name, (size, size))
        if len(shape) == 3 and min(shape[:2]) < 1:
            raise InputError(
                f"size {size} px is too small for layer {name!r}; it needs at "
                f"least {model.min_input_size(name)} px.")
        if len(shape) == 3 and name in spatial:
            hw = (int(shape[0]), int(shape[1]))
            frac = inside_fraction(model, name, size)
            edge = frac < 0.5
        elif len(shape) == 1:
            hw, edge = (1, 1), np.zeros((1, 1), bool)
        else:
            raise InputError(
                f"layers must be spatial layers (h, w, c) or dense layers (units,); "
                f"{name!r} has output shape {shape}.")
        allowed = ~edge if border == "exclude" else np.ones(hw, bool)
        if not allowed.any():
            allowed = frac >= frac.max() - 1e-9
            warnings.warn(
                f"layer {name!r} at {size} px: every position's receptive field "
                f"lies mostly outside the image (at most {frac.max():.0%} inside); "
                f"keeping the {int(allowed.sum())} most central positions "
                "(flagged as border examples). A larger size= shows image content.",
                BorderWarning, stacklevel=4)
        out.append(LayerGeometry(name, hw, int(shape[-1]), allowed, edge))
    return tuple(out)


# ------------------------------------------------------------------ state
def init_state(geoms: Sequence[LayerGeometry], k: int) -> dict:
    """The empty state: ``{layer: {...}}`` of NumPy arrays (see :func:`merge`)."""
    out = {}
    for g in geoms:
        c = g.channels
        out[g.name] = {
            "value": np.full((c, k), -np.inf, np.float32),
            "index": np.full((c, k), _NONE, np.int32),
            "position": np.full((c, k), -1, np.int32),
            "n": np.zeros((), np.int32),
            "mean": np.zeros((c,), np.float32),
            "m2": np.zeros((c,), np.float32),
            "pos": np.zeros((c, 2), np.int32),
            "cum": np.zeros((c, len(INNER_EDGES), 2), np.int32),
        }
    return out


def _carry(c):
    lo, hi = c[..., 0], c[..., 1]
    return jnp.stack([lo & _LOW, hi + (lo >> WORD_BITS)], axis=-1)


def _merge_layer(a: dict, b: dict, k: int, positions: int) -> dict:
    """Merge two states of one layer (associative and commutative up to
    float rounding of the mean/variance; exact for the rest)."""
    neg = jnp.concatenate([-a["value"], -b["value"]], axis=1)
    idx = jnp.concatenate([a["index"], b["index"]], axis=1)
    pos = jnp.concatenate([a["position"], b["position"]], axis=1)
    neg, idx, pos = jax.lax.sort((neg, idx, pos), dimension=1, num_keys=2)
    na, nb = a["n"], b["n"]
    n = na + nb
    fa = na.astype(jnp.float32)
    fb = nb.astype(jnp.float32)
    fn = jnp.maximum(n, 1).astype(jnp.float32)
    delta = b["mean"] - a["mean"]
    mean = a["mean"] + delta * (fb / fn)
    m2 = a["m2"] + b["m2"] + delta * delta * (fa * fb / fn * positions)
    return {"value": -neg[:, :k], "index": idx[:, :k], "position": pos[:, :k],
            "n": n, "mean": mean, "m2": m2,
            "pos": _carry(a["pos"] + b["pos"]),
            "cum": _carry(a["cum"] + b["cum"])}


def merge(a: dict, b: dict, geoms: Sequence[LayerGeometry], k: int) -> dict:
    """The state of the union of two disjoint sets of images.

    Per layer: ``value``/``index``/``position`` ``(C, k)`` (value
    descending, ties by the smaller index; empty slots ``-inf`` with index
    ``2**31 - 1``), ``n`` images, per unit ``mean`` and ``m2`` (sum of
    squared deviations) over the allowed positions, ``pos`` (positions > 0)
    and ``cum`` (images whose best value is >= each of
    :data:`INNER_EDGES`) as exact
    two-word counters ``(..., 2)``: ``low + high * 2**WORD_BITS``.
    """
    return {g.name: _merge_layer(a[g.name], b[g.name], k, int(g.allowed.sum()))
            for g in geoms}


def _batch_layer(y, index, allowed):
    """One batch's state of one layer from its activation ``y`` (B, h, w, C).

    Every pass over ``y`` is a plain reduction (XLA:CPU runs those near
    memory speed): the best position is found per row first, then within
    the best row (the first maximum in row-major order, as ``argmax``
    would give, at a tenth of a variadic ``argmax``'s cost), and the mean
    and variance come from shifted sums (shift: the image's value at its
    first allowed position, so near-constant maps do not cancel).
    """
    b, h, w, c = y.shape
    valid = index >= 0
    y = y.astype(jnp.float32)
    ok = jnp.asarray(allowed.reshape(1, h, w, 1))
    positions = int(allowed.sum())
    p0 = int(np.flatnonzero(allowed.reshape(-1))[0])
    shift = y[:, p0 // w, p0 % w, :]  # (B, C)
    d = jnp.where(ok, y - shift[:, None, None, :], 0.0)
    # four reductions over the same axis of the same input: XLA fuses them
    # into one pass over the activation (per row; the rows are summed after)
    rowmax = jnp.where(ok, y, -jnp.inf).max(axis=2)  # (B, h, C)
    r1 = d.sum(axis=2)
    r2 = (d * d).sum(axis=2)
    rpos = jnp.where(ok & (y > 0), 1.0, 0.0).sum(axis=2)  # exact: < 2**24
    best = rowmax.max(axis=1)  # (B, C)
    best = jnp.where(best == 0, 0.0, best)  # -0.0 -> 0.0: one order for zeros
    r = jnp.argmax(rowmax, axis=1)  # (B, C): the first row holding the max
    row = jnp.take_along_axis(y, r[:, None, None, :], axis=1)[:, 0]  # (B, w, C)
    row_ok = jnp.asarray(allowed)[r].transpose(0, 2, 1)  # (B, w, C)
    at = (r * w + jnp.argmax(jnp.where(row_ok, row, -jnp.inf), axis=1)
          ).astype(jnp.int32)
    best = jnp.where(valid[:, None], best, -jnp.inf)
    s1, s2 = r1.sum(axis=1), r2.sum(axis=1)
    per_img = shift + s1 / positions  # (B, C)
    m2_img = jnp.maximum(s2 - s1 * s1 / positions, 0.0)
    vmask = valid[:, None]
    nv = valid.sum().astype(jnp.int32)
    fv = jnp.maximum(nv, 1).astype(jnp.float32)
    mean = jnp.where(vmask, per_img, 0.0).sum(axis=0) / fv
    spread = jnp.where(vmask, per_img - mean[None, :], 0.0)
    m2 = jnp.where(vmask, m2_img, 0.0).sum(axis=0) + positions * (
        spread * spread).sum(axis=0)
    pos = jnp.round(rpos.sum(axis=1)).astype(jnp.int32)  # (B, C)
    pos = jnp.where(vmask, pos, 0).sum(axis=0)
    edges = jnp.asarray(INNER_EDGES).reshape(1, 1, -1)
    cum = jnp.sum(vmask[..., None] & (best[..., None] >= edges), axis=0,
                  dtype=jnp.int32)  # (C, E): images whose best >= edge
    mine_index = jnp.where(valid, index, _NONE).astype(jnp.int32)
    zero = jnp.zeros_like
    return {"value": best.T, "index": jnp.broadcast_to(mine_index[None, :], (c, b)),
            "position": at.T, "n": nv, "mean": mean, "m2": m2,
            "pos": jnp.stack([pos, zero(pos)], axis=-1),
            "cum": jnp.stack([cum, zero(cum)], axis=-1)}


def capture_stop(model: ConvNet, layers: Sequence[str]) -> str | None:
    """The ``stop`` of the one forward pass: the deepest requested layer
    when every other requested layer is among its ancestors, else None."""
    from jaxconvviz.models.graph import ancestors

    deepest = max(layers, key=model.layer_index)
    need = ancestors(model.sources, model.layer_index(deepest))
    if all(model.layer_index(n) in need for n in layers):
        return deepest
    return None


class Program(NamedTuple):
    """The static part of :func:`update` (hashable: the jit cache key)."""

    model: ConvNet
    layers: tuple[str, ...]
    stop: str | None
    k: int
    geoms: tuple  # of (name, hw, channels, allowed bytes)
    sharding: object  # a NamedSharding for the replicated state, or None


def make_program(model: ConvNet, geoms: Sequence[LayerGeometry], k: int,
                 sharding=None) -> Program:
    layers = tuple(g.name for g in geoms)
    static = tuple((g.name, g.hw, g.channels, g.allowed.tobytes()) for g in geoms)
    return Program(model, layers, capture_stop(model, layers), int(k), static,
                   sharding)


def _geoms_of(program: Program) -> list[LayerGeometry]:
    out = []
    for name, hw, c, raw in program.geoms:
        allowed = np.frombuffer(raw, bool).reshape(hw)
        out.append(LayerGeometry(name, hw, c, allowed, ~allowed))
    return out


@functools.partial(xla.jit, static_argnames=("program",))
def update(params, state: dict, images_u8, index, *, program: Program) -> dict:
    """Merge one batch into ``state`` (one compiled program per batch shape).

    Args:
      params: the model's weights.
      state: as :func:`init_state` / :func:`merge` (not donated: a
        Ctrl-C during the call leaves it intact for the checkpoint).
      images_u8: uint8 RGB ``(B, s, s, 3)``.
      index: int32 ``(B,)`` global image indices; ``-1`` rows (padding,
        undecodable files) are ignored.
      program: :func:`make_program`'s static description.
    """
    model = program.model
    x = model.preprocess(images_u8.astype(jnp.float32))
    _, acts = model.forward_with(params, x, capture=program.layers, stop=program.stop)
    batch = {}
    geoms = _geoms_of(program)
    for g in geoms:
        y = acts[g.name]
        batch[g.name] = _batch_layer(y[:, None, None, :] if y.ndim == 2 else y,
                                     index, g.allowed)
    out = merge(state, batch, geoms, program.k)
    if program.sharding is not None:
        out = jax.lax.with_sharding_constraint(out, program.sharding)
    return out


@functools.partial(jax.jit, static_argnames=("program",))
def _merge_jit(a, b, *, program: Program):
    return merge(a, b, _geoms_of(program), program.k)


def merge_states(states: Sequence[dict], program: Program) -> dict:
    """Fold :func:`merge` over host states (e.g. one per process), in order."""
    out = states[0]
    for s in states[1:]:
        out = _merge_jit(out, s, program=program)
    return jax.tree.map(np.asarray, out)


def counter_value(c: np.ndarray) -> np.ndarray:
    """int64 value of a two-word counter ``(..., 2)``."""
    c = np.asarray(c, np.int64)
    return c[..., 0] + (c[..., 1] << WORD_BITS)


def finalize(state: dict, geoms: Sequence[LayerGeometry]) -> dict:
    """Host arrays per layer: ``value`` (C, k) float32 (NaN where empty),
    ``index`` (C, k) int32 (-1 where empty), ``position`` (C, k, 2) int32
    (row, col), ``border`` (C, k) bool, ``count`` (positions per unit),
    ``images``, ``mean``, ``std``, ``max``, ``frac_pos`` (C,) float32,
    ``hist`` (C, NBINS) int64 (images per bin of their best value)."""
    out = {}
    for g in geoms:
        s = jax.tree.map(np.asarray, state[g.name])
        n = int(s["n"])
        count = n * int(g.allowed.sum())
        index = s["index"].astype(np.int32)
        empty = (index == _NONE) | ~np.isfinite(s["value"])
        flat = s["position"]
        w = g.hw[1]
        position = np.stack([flat // w, flat % w], axis=-1).astype(np.int32)
        position[empty] = -1
        border = np.where(empty, False, g.border.reshape(-1)[np.clip(flat, 0, None)])
        cum = counter_value(s["cum"])  # (C, E): images whose best >= edge
        full = np.concatenate([np.full((cum.shape[0], 1), n, np.int64), cum,
                               np.zeros((cum.shape[0], 1), np.int64)], axis=1)
        hist = full[:, :-1] - full[:, 1:]
        denom = max(count, 1)
        var = np.maximum(s["m2"].astype(np.float64) / denom, 0.0)
        value = np.where(empty, np.nan, s["value"]).astype(np.float32)
        out[g.name] = {
            "value": value, "index": np.where(empty, -1, index).astype(np.int32),
            "position": position, "border": border.astype(bool),
            "count": count, "images": n,
            "mean": s["mean"].astype(np.float32),
            "std": np.sqrt(var).astype(np.float32),
            "max": value[:, 0] if value.shape[1] else np.full(len(value), np.nan),
            "frac_pos": (counter_value(s["pos"]) / denom).astype(np.float32),
            "hist": hist,
        }
    return out


__all__ = ["BIN_EDGES", "BORDERS", "INNER_EDGES", "NBINS", "BorderWarning",
           "LayerGeometry", "Program", "border_map", "capture_stop", "counter_value",
           "finalize", "geometry", "init_state", "inside_fraction", "make_program",
           "merge", "merge_states", "update"]
