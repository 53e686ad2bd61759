"""Per-filter device memory of one ascent step, calibrated per platform and dtype.

The ascent planner cuts a layer's filters into chunks that fit a per-device
budget from an estimate of the bytes one filter adds to a compiled step
(:func:`filter_memory_bytes`). The estimate is analytic (nothing is
compiled): the activations XLA keeps for the backward pass (the outputs of
the convolutions and pools up to the target layer, :func:`stored_elements`)
for one image, in the compute dtype, times a factor fitted to XLA's own buffer
assignment (``compiled.memory_analysis()``: argument + output + temp bytes of
the step, less the parameters, per filter) for that platform and dtype, plus
the float32 image and its gradient; on GPU a margin for cuDNN workspaces,
which the compile-only fit cannot see (XLA picks them when it autotunes on a
real device).

Fit (``scripts/aot_check.py --gpu``, docs/roofline.md): every VGG16 conv layer
at 128 px and four layers each of ResNet50 and MobileNetV2, float32 and
bfloat16, XLA:GPU for an H100; the factor is the largest ratio observed, so
the planned chunk never exceeds the budget, and the estimate stays within 2x
of the compiled bytes for every layer fitted. TPU v5e (``--tpu``): three
VGG16 layers, the same rule with its own factor. XLA:CPU keeps the library's
original rule (:data:`CPU_ACTIVATION_FACTOR` x the float32 activations, from
``memory_analysis()`` on XLA:CPU, docs/design-notes.md).

The feature-visualization planner (``featureviz._plan.filter_memory_bytes``,
used by its ``check_fits`` and ``_engine.plan_layers``) calls
:func:`filter_memory_bytes` with the platform of the devices it plans and the
compute dtype: this module holds the one rule for every platform.

Imports numpy only (jax for dtypes).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxconvviz.errors import InputError

PLATFORMS = ("cpu", "gpu", "tpu")
#: XLA:CPU: multiplier on the float32 activation bytes of every layer (the
#: library's original ``ACTIVATION_FACTOR``: 2x-4x measured, 5 for headroom).
CPU_ACTIVATION_FACTOR = 5.0
#: Layer kinds whose outputs XLA:GPU keeps for the backward pass. Batch norms
#: (inference), activations, adds and pads are elementwise and fuse into
#: their neighbours, so they add no stored buffer of their own.
STORED_KINDS = ("conv", "depthwise_conv", "separable_conv", "dense", "maxpool",
                "avgpool", "layernorm")
#: XLA:GPU: multiplier on the stored activation bytes in the compute dtype,
#: per dtype: the largest ratio of XLA's buffer assignment to them over the
#: fitted layers (docs/roofline.md), rounded up.
ACTIVATION_FACTOR = {"float32": 1.35, "bfloat16": 1.35, "float16": 1.35}
#: The weight of the target layer's own output when nothing before it is
#: stored (the first conv reads the image): its input gradient needs no
#: forward values, only the cotangent, and XLA holds about half of it.
FIRST_LAYER_WEIGHT = 0.5
#: TPU v5e: multiplier on the stored activation bytes without the target
#: layer's own output (:func:`stored_elements` with ``own=False``), per dtype,
#: fitted to XLA:TPU's buffer assignment of the VGG16 step at block1_conv2,
#: block3_conv1 and block5_conv3 at 128 px (docs/roofline.md): the largest
#: ratio, rounded up. Fewer layers than the GPU fit: a first estimate.
TPU_ACTIVATION_FACTOR = {"float32": 1.7, "bfloat16": 2.25, "float16": 2.25}
#: float32 copies of the image per filter: the state, the update, its gradient
#: and the normalised step.
IMAGE_COPIES = 4
#: GPU: fraction added per filter for cuDNN workspaces, which a compile-only
#: buffer assignment omits (XLA picks the algorithms, and their scratch, when
#: it autotunes on a real device). 15 %, on top of the planner's own headroom
#: (``ACCELERATOR_MEMORY_FRACTION``: 20 % of the device's free memory).
CUDNN_WORKSPACE_MARGIN = 0.15


def activation_elements(model, layer: str, size: int, *,
                        kinds: tuple[str, ...] | None = None) -> int:
    """Elements of the outputs up to and including ``layer`` for one ``size``
    x ``size`` image: of every layer (``kinds=None``), or of the layers of
    those kinds only."""
    elems = 0
    for spec in model.layers[: model.layer_index(layer) + 1]:
        if kinds is None or spec.kind in kinds:
            elems += int(np.prod(model.output_shape(spec.name, (size, size))))
    return elems


def stored_elements(model, layer: str, size: int, *, own: bool = True) -> float:
    """Elements of the outputs of :data:`STORED_KINDS` layers up to and
    including ``layer`` (the target layer's own output is its cotangent in
    the backward pass), the target weighted by :data:`FIRST_LAYER_WEIGHT`
    when no stored layer precedes it; ``own=False``: without the target's
    output (XLA:TPU fuses the cotangent into the backward convolution)."""
    before = activation_elements(model, layer, size, kinds=STORED_KINDS)
    out = int(np.prod(model.output_shape(layer, (size, size))))
    if model.layer(layer).kind in STORED_KINDS:
        before -= out
    if not own:
        return before
    return before + out * (FIRST_LAYER_WEIGHT if before == 0 else 1.0)


def _dtype_name(dtype) -> str:
    try:
        return jnp.dtype(dtype).name
    except TypeError as e:
        raise InputError(f"dtype must be a float dtype such as 'float32' or "
                         f"'bfloat16'; got {dtype!r}.") from e


def filter_memory_bytes(model, layer: str, size: int, *, platform: str,
                        dtype="float32") -> int:
    """Estimated device bytes one filter adds to an ascent step at ``layer``.

    Args:
      model: the network (:class:`~jaxconvviz.ConvNet`).
      layer: the target layer.
      size: image side in pixels (what the network sees, transforms' margin
        included).
      platform: ``"cpu"``, ``"gpu"`` or ``"tpu"``: the platform the step is
        compiled for.
      dtype: the compute dtype (``"float32"``, ``"bfloat16"``, ``"float16"``).

    Returns:
      Bytes per filter: on XLA:CPU :data:`CPU_ACTIVATION_FACTOR` x the float32
      activations (the dtype is ignored, as before); on GPU
      ``ACTIVATION_FACTOR[dtype]`` x the stored activations
      (:func:`stored_elements`) in ``dtype`` plus :data:`IMAGE_COPIES`
      float32 images, times ``1 +``
      :data:`CUDNN_WORKSPACE_MARGIN`; on TPU ``TPU_ACTIVATION_FACTOR[dtype]``
      x the stored activations without the target's own output, plus the
      images.
    """
    if platform not in PLATFORMS:
        raise InputError(f"platform must be one of {', '.join(map(repr, PLATFORMS))}; "
                         f"got {platform!r}.")
    name = _dtype_name(dtype)
    image = size * size * int(model.input_shape[2])
    if platform == "cpu":
        elems = activation_elements(model, layer, size)
        return int(CPU_ACTIVATION_FACTOR * 4 * elems + IMAGE_COPIES * 4 * image)
    factor = ACTIVATION_FACTOR.get(name)
    if factor is None:
        raise InputError(f"dtype must be one of {', '.join(ACTIVATION_FACTOR)}; got "
                         f"{dtype!r}.")
    item = jnp.dtype(name).itemsize
    images = IMAGE_COPIES * 4 * image
    if platform == "tpu":
        return int(TPU_ACTIVATION_FACTOR[name] * item
                   * stored_elements(model, layer, size, own=False) + images)
    per = factor * item * stored_elements(model, layer, size) + images
    return int(per * (1 + CUDNN_WORKSPACE_MARGIN))


__all__ = ["filter_memory_bytes", "activation_elements", "stored_elements",
           "ACTIVATION_FACTOR", "CPU_ACTIVATION_FACTOR", "CUDNN_WORKSPACE_MARGIN",
           "FIRST_LAYER_WEIGHT", "IMAGE_COPIES", "STORED_KINDS",
           "TPU_ACTIVATION_FACTOR", "PLATFORMS"]
