"""Eigen-CAMs: the first principal component of a ``(hw, c)`` matrix::

    eigencam       cam = first principal component of A (hw x c, centred
                   over locations) projected on A
    eigengradcam   the same for G * A

The SVD's sign is arbitrary (pytorch-grad-cam's ``get_2d_projection``
leaves it to LAPACK); here the projection's entry of largest magnitude is
made positive (scikit-learn's ``svd_flip`` rule), so the most extreme
location is the one highlighted. Eigen-CAM needs no class: it is headless
(:func:`~jaxconvviz.cam` runs the network only up to the layer).

Imports jax and the package's compute modules only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxconvviz.attribution._cam_common import TINY
from jaxconvviz.attribution.cam_registry import CamMethod, register_cam_method

__all__ = ["eigencam", "eigengradcam", "principal_projection"]


def _top_eigenvector(sym, squarings: int = 12):
    """Unit top eigenvector of each symmetric PSD ``(n, k, k)`` matrix: the
    largest column of ``sym^(2^squarings)`` (normalised at every step)."""
    hi = jax.lax.Precision.HIGHEST

    def square(b, _):
        b = jnp.einsum("nij,njk->nik", b, b, precision=hi)
        return b / jnp.maximum(jnp.abs(b).max(axis=(1, 2), keepdims=True), TINY), None

    b = sym / jnp.maximum(jnp.abs(sym).max(axis=(1, 2), keepdims=True), TINY)
    b, _ = jax.lax.scan(square, b, None, length=squarings)
    norms = jnp.sqrt((b * b).sum(axis=1))  # (n, k) column norms
    col = jnp.take_along_axis(b, norms.argmax(axis=1)[:, None, None], axis=2)[..., 0]
    return col / jnp.maximum(jnp.sqrt((col * col).sum(axis=1, keepdims=True)), TINY)


def principal_projection(m):
    """``(n, h, w, c)`` -> ``(n, h, w)``: each image's locations (rows of the
    ``hw x c`` matrix, centred over locations) projected on its first right
    singular vector, signed so that the largest-magnitude entry is
    positive."""
    n, h, w, c = m.shape
    flat = m.reshape(n, h * w, c)
    centred = flat - flat.mean(axis=1, keepdims=True)
    hi = jax.lax.Precision.HIGHEST
    # The first right singular vector v through the smaller symmetric matrix
    # S (M M^T u = s^2 u gives M v = s u; M^T M v = s^2 v gives M v), its top
    # eigenvector by repeated squaring: S^(2^12) is u u^T up to scale for any
    # eigengap above ~1e-3, with matrix products only (no SVD or eigh).
    gram_route = h * w <= c
    if gram_route:
        sym = jnp.einsum("npc,nqc->npq", centred, centred, precision=hi)
    else:
        sym = jnp.einsum("npc,npd->ncd", centred, centred, precision=hi)
    top = _top_eigenvector(sym)
    if gram_route:
        lam = jnp.einsum("np,npq,nq->n", top, sym, top, precision=hi)
        proj = top * jnp.sqrt(jnp.maximum(lam, 0.0))[:, None]
    else:
        proj = jnp.einsum("npc,nc->np", centred, top, precision=hi)
    extreme = jnp.take_along_axis(proj, jnp.abs(proj).argmax(axis=1)[:, None],
                                  axis=1)
    proj = proj * jnp.where(extreme < 0, -1.0, 1.0)
    return proj.reshape(n, h, w)


def eigencam(c):
    return principal_projection(c.acts)


def eigengradcam(c):
    return principal_projection(c.grads * c.acts)


register_cam_method(CamMethod("eigencam", "Eigen-CAM", "eigen", eigencam,
                              needs_gradient=False, headless=True))
register_cam_method(CamMethod("eigengradcam", "Eigen-Grad-CAM", "eigen", eigengradcam))
