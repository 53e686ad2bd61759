"""The CAM methods as a registry: one :class:`CamMethod` record per method.

A record names the method, its display label, its family (``"gradient"``,
``"eigen"``, ``"perturbation"``), the one function that builds its
un-normalised map from a :class:`CamInputs`, and what the engine must
provide for it: the layer's gradient (``needs_gradient``), chunked
forward passes per channel (``perturbation``), no classifier head at all
(``headless``), and the 3x3 convolution form it prefers (``conv3x3``:
``"conv"``, or ``"by_shape"`` -- Winograd where it pays -- for methods of
many whole-network forward passes, whose compilation cost is repaid within
one call).

A new method is one function and one record::

    def gradient_magnitude(c):  # c: CamInputs
        return jnp.abs(c.grads).sum(axis=-1)

    jcv.register_cam_method(jcv.CamMethod(
        "gradmag", "Gradient magnitude", "gradient", gradient_magnitude))

after which ``jcv.cam(..., method="gradmag")``, ``jaxconvviz explain
--methods gradmag`` and the report accept it. The engine applies
``relu(map) / max`` per image afterwards.

Imports jax only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from jaxconvviz.errors import InputError

FAMILIES = ("gradient", "eigen", "perturbation")
CONV3X3_PREFERENCES = ("conv", "by_shape")


@dataclasses.dataclass(frozen=True)
class CamInputs:
    """What a method's function sees for a batch of ``n`` images.

    Attributes:
      acts: ``(n, h, w, c)`` float32 activation ``A`` of the layer.
      grads: ``(n, h, w, c)`` float32 ``G = d score / d A`` (None when the
        method does not need the gradient).
      logits: ``(n, classes)`` float32 pre-softmax logits (``(n, 0)`` when
        headless).
      classes: ``(n,)`` int32 explained classes (-1 for a target callable).
      x: ``(n, H, W, C)`` the images in the model's input domain.
      params, model, layer: the network and the CAM layer.
      chunk: forward passes per chunk that fit the memory budget
        (perturbation methods).
      target: None (the class logit) or the target callable.
    """

    acts: Any
    grads: Any
    logits: Any
    classes: Any
    x: Any
    params: Any
    model: Any
    layer: str
    chunk: int = 1
    target: Any = None

    def score(self, out, images):
        """``(m,)`` float32 explained score of each row of ``out`` (``(m,
        classes)`` model outputs), row ``r`` belonging to image
        ``images[r]``: its class logit, or the target's value."""
        out = out.astype(jnp.float32)
        if self.target is not None:
            from jaxconvviz.attribution._cam_common import target_values

            return target_values(self.target, out)
        return jnp.take_along_axis(out, self.classes[images][:, None], axis=-1)[:, 0]


@dataclasses.dataclass(frozen=True)
class CamMethod:
    """One CAM method (frozen, hashable: a static argument of the compiled
    program).

    Attributes:
      name: the ``method=`` string.
      label: display name (figures, CLI output).
      family: one of :data:`FAMILIES`.
      fn: ``fn(CamInputs) -> (n, h, w)`` un-normalised map (traced inside
        the compiled program: JAX operations only).
      needs_gradient: whether ``fn`` reads ``grads`` (else no backward pass).
      perturbation: one forward pass per (image, channel), chunked by
        ``Run.memory_budget``.
      headless: the map depends on no class, so :func:`~jaxconvviz.cam`
        runs the network only up to the layer (and takes models without a
        top).
      conv3x3: the 3x3 convolution form the method prefers when neither the
        model nor the process default sets one: ``"conv"`` or
        ``"by_shape"``.
    """

    name: str
    label: str
    family: str
    fn: Callable[[CamInputs], Any]
    needs_gradient: bool = True
    perturbation: bool = False
    headless: bool = False
    conv3x3: str = "conv"

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or "," in self.name:
            raise InputError(f"CamMethod.name must be a non-empty string without "
                             f"commas; got {self.name!r}.")
        if self.family not in FAMILIES:
            raise InputError(f"CamMethod.family must be one of {', '.join(FAMILIES)}"
                             f"; got {self.family!r}.")
        if not callable(self.fn):
            raise InputError(f"CamMethod.fn must be callable; got {self.fn!r:.60}.")
        if self.conv3x3 not in CONV3X3_PREFERENCES:
            raise InputError(f"CamMethod.conv3x3 must be one of "
                             f"{', '.join(CONV3X3_PREFERENCES)}; got {self.conv3x3!r}.")
        if self.headless and self.needs_gradient:
            raise InputError(f"CamMethod {self.name!r}: a headless method cannot "
                             f"need the gradient of a class score.")


_REGISTRY: dict[str, CamMethod] = {}


def register_cam_method(record: CamMethod, *, replace: bool = False) -> CamMethod:
    """Add ``record`` to the registry (shown after its family's methods).

    ``replace=True`` swaps an existing record of the same name; otherwise a
    taken name is an error. Returns the record."""
    if not isinstance(record, CamMethod):
        raise InputError(f"register_cam_method takes a CamMethod; got {record!r:.60}.")
    from jaxconvviz.attribution._cam_common import ATTRIBUTION_METHODS

    if record.name in ATTRIBUTION_METHODS:
        raise InputError(f"CamMethod.name {record.name!r} is an attribution "
                         f"method's name; choose another.")
    if record.name in _REGISTRY and not replace:
        raise InputError(f"CAM method {record.name!r} is already registered; pass "
                         f"replace=True to swap it.")
    _REGISTRY[record.name] = record
    return record


def unregister_cam_method(name: str) -> None:
    """Remove a registered method (tests, experiments)."""
    cam_method(name)
    del _REGISTRY[name]


def cam_methods(*, family: str | None = None) -> tuple[str, ...]:
    """Names of the registered CAM methods (optionally of one family), in
    display order: by family (:data:`FAMILIES` order), then in order of
    registration."""
    ordered = sorted(_REGISTRY.values(), key=lambda r: FAMILIES.index(r.family))
    return tuple(r.name for r in ordered if family in (None, r.family))


def cam_method(name) -> CamMethod:
    """The record of a method name; an InputError lists the valid ones."""
    record = _REGISTRY.get(name) if isinstance(name, str) else None
    if record is None:
        raise InputError(f"method must be one of {', '.join(cam_methods())}; got "
                         f"{name!r}.")
    return record


def weighted_sum(a, weights):
    """``sum_c weights[n, c] * a[n, :, :, c]``: a map from channel weights."""
    return jnp.einsum("nhwc,nc->nhw", a, weights)


__all__ = ["CamInputs", "CamMethod", "FAMILIES", "cam_method", "cam_methods",
           "register_cam_method", "unregister_cam_method", "weighted_sum"]
