"""Gradient CAMs: maps from the activation ``A`` and ``G = d y / d A``.

Definitions follow pytorch-grad-cam (jacobgil/pytorch-grad-cam, read at
``084273b3f3``), per image, sums over ``(i, j)`` = over ``(h, w)``::

    gradcam              w_c = mean_ij G_ijc;           cam = sum_c w_c A_c
    gradcam++            a_ijc = G^2 / (2 G^2 + sum_ij(A_c) G^3 + 1e-6)
                         (0 where G = 0); w_c = sum_ij relu(G) a_ijc
    xgradcam             w_c = sum_ij G_ijc A_ijc / (sum_ij A_ijc + 1e-7)
    hirescam             cam = sum_c G_c * A_c
    gradcam_elementwise  cam = sum_c relu(G_c * A_c)
    layercam             cam = sum_c relu(G_c) * A_c

Each function maps a :class:`~jaxconvviz.attribution.cam_registry.CamInputs`
to the un-normalised ``(n, h, w)`` map; the engine applies ``relu / max``.

Imports jax and the package's compute modules only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxconvviz.attribution.cam_registry import (
    CamMethod,
    register_cam_method,
    weighted_sum,
)

__all__ = ["gradcam", "gradcam_elementwise", "gradcam_map", "gradcam_pp", "hirescam",
           "layercam", "xgradcam"]


def gradcam_map(a, g):
    """Grad-CAM from ``(A, G)``: the channel weights are ``G`` averaged
    over ``(h, w)`` of each image."""
    return weighted_sum(a, g.mean(axis=(1, 2)))


def gradcam(c):
    return gradcam_map(c.acts, c.grads)


def gradcam_pp(c):
    a, g = c.acts, c.grads
    g2 = g * g
    g3 = g2 * g
    sum_a = a.sum(axis=(1, 2), keepdims=True)
    aij = g2 / (2.0 * g2 + sum_a * g3 + 1e-6)
    aij = jnp.where(g != 0, aij, 0.0)
    return weighted_sum(a, (jax.nn.relu(g) * aij).sum(axis=(1, 2)))


def xgradcam(c):
    a, g = c.acts, c.grads
    sum_a = a.sum(axis=(1, 2), keepdims=True)
    return weighted_sum(a, (g * a / (sum_a + 1e-7)).sum(axis=(1, 2)))


def hirescam(c):
    return (c.grads * c.acts).sum(axis=-1)


def gradcam_elementwise(c):
    return jax.nn.relu(c.grads * c.acts).sum(axis=-1)


def layercam(c):
    return (jax.nn.relu(c.grads) * c.acts).sum(axis=-1)


for _record in (
    CamMethod("gradcam", "Grad-CAM", "gradient", gradcam),
    CamMethod("gradcam++", "Grad-CAM++", "gradient", gradcam_pp),
    CamMethod("xgradcam", "XGrad-CAM", "gradient", xgradcam),
    CamMethod("hirescam", "HiRes-CAM", "gradient", hirescam),
    CamMethod("layercam", "LayerCAM", "gradient", layercam),
    CamMethod("gradcam_elementwise", "Grad-CAM elementwise", "gradient",
              gradcam_elementwise),
):
    register_cam_method(_record)
