"""Geometry shared by the convolution algorithms of this subpackage: NHWC/HWIO
dimension numbers, explicit paddings, the kernel of a stride-1
convolution's input gradient, and the arguments a drop-in
``conv_general_dilated`` passes on to its fallback.

Imports jax only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: NHWC images, HWIO kernels, as ``lax.conv_general_dilated`` takes them.
NHWC = jax.lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1),
                                    out_spec=(0, 3, 1, 2))

def flip_io(w):
    """The kernel of a stride-1 convolution's input gradient: ``w`` flipped in
    space with input and output channels swapped (HWIO again)."""
    return jnp.flip(w, axis=(0, 1)).transpose(0, 1, 3, 2)


def grad_pads(kernel_hw, pads):
    """Padding of that input-gradient convolution: ``k - 1 - p`` per side."""
    (kh, kw), ((pt, pb), (pl, pr)) = kernel_hw, pads
    return ((kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr))


def xla_kernel_grad(x, w, pads, dy):
    """d/dw of a stride-1 NHWC/HWIO convolution by XLA's own transpose
    (removed by XLA when only the input gradient is used, as in ascent)."""
    _, vjp_w = jax.vjp(lambda k: jax.lax.conv_general_dilated(
        x, k, (1, 1), pads, dimension_numbers=NHWC), w)
    return vjp_w(dy)[0]


def explicit_pads(padding, kernel_hw):
    if isinstance(padding, str):
        if padding.upper() == "VALID":
            return ((0, 0), (0, 0))
        if padding.upper() == "SAME":
            # stride 1: total padding k - 1, the extra pixel at the end (as XLA)
            return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_hw)
        return None
    pads = tuple(tuple(int(p) for p in pair) for pair in padding)
    return pads if len(pads) == 2 and all(len(p) == 2 for p in pads) else None


def fallback_kwargs(lhs_dilation, rhs_dilation, dimension_numbers,
                    feature_group_count, precision, preferred_element_type) -> dict:
    """The keyword arguments a drop-in convolution passes on to its fallback
    (``preferred_element_type`` only when set, as ``nn.Conv`` calls it)."""
    kw = dict(lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
              dimension_numbers=dimension_numbers,
              feature_group_count=feature_group_count, precision=precision)
    if preferred_element_type is not None:
        kw["preferred_element_type"] = preferred_element_type
    return kw


def is_nhwc_hwio(dimension_numbers, lhs, rhs) -> bool:
    if dimension_numbers is None:  # lax's default is NCHW / OIHW
        return False
    dn = jax.lax.conv_dimension_numbers
    return (dn(lhs.shape, rhs.shape, dimension_numbers)
            == dn(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC")))



__all__ = ["NHWC", "explicit_pads", "fallback_kwargs", "flip_io", "grad_pads",
           "is_nhwc_hwio", "xla_kernel_grad"]
