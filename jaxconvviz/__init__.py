"""jaxconvviz: see what convnets learn, in JAX.

Filter patterns by batched gradient ascent, Grad-CAM, activation and kernel
views for a Flax VGG16 with Keras layer names (and Keras CNNs you trained),
as pure functions of ``(params, images)``.

Typical use::

    import jax, jaxconvviz as jcv
    params = jcv.load_vgg16("hed")            # or "imagenet", or a .h5 path
    pats = jcv.filter_patterns(params, "block3_conv1", range(16),
                               key=jax.random.key(0))
    grid = jcv.atlas_grid(pats)                # uint8 (H, W, 3)

``import jaxconvviz`` loads only jax/flax/numpy; names that need Pillow,
h5py or matplotlib (file IO, weights, plotting) are imported on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from ._types import ImagesCaffe, ImagesRGB, ImagesU8, Params, PRNGKey  # noqa: E402
from .labels import decode_predictions, load_class_index  # noqa: E402
from .nets import (  # noqa: E402
    CONV_LAYERS,
    LAYER_NAMES,
    VGG16,
    ConvNet,
    Layer,
    forward,
    resolve_model,
    tiny_vgg16,
)
from .predict import activations, predict  # noqa: E402
from .preprocess import (  # noqa: E402
    CAFFE_MEAN_BGR,
    caffe_to_rgb,
    deprocess_image,
    preprocess_input,
)

# Public names whose modules import Pillow / h5py / matplotlib: loaded lazily
# (PEP 562) so compute-only users never import them. name -> module.
_LAZY = {
    "load_img": "images",
    "save_image": "images",
    "to_uint8": "images",
    "CAT_PHOTO": "images",
    "ELEPHANT_PHOTO": "images",
    "plotting": None,  # the jaxconvviz.plotting package
    # -- modules added by later work register lazy exports below this line --
    "load_vgg16": "weights",
    "load_params": "weights",
    "read_keras_weights": "weights",
    "fetch_imagenet": "weights",
    "imagenet_available": "weights",
    "overlay": "heatmaps",
    "load_keras_model": "keras_import",
    "save_keras_model": "keras_export",
}


def __getattr__(name: str):
    if name in _LAZY:
        mod = _LAZY[name]
        if mod is None:
            return importlib.import_module(f".{name}", __name__)
        return getattr(importlib.import_module(f".{mod}", __name__), name)
    raise AttributeError(f"module 'jaxconvviz' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


# -- eager exports added by later work go below this line --
from .activation_grids import (  # noqa: E402
    activation_grid,
    activation_grids,
    feature_map_grid,
    layer_activation_grids,
    standardize_channels,
    tile_channels,
)
from .atlas import LayerPlan, atlas_plan, filter_atlas  # noqa: E402
from .cpu import available_cores, use_cpu_cores  # noqa: E402
from .filters import filter_activation, filter_patterns  # noqa: E402
from .gradcam import grad_cam, grad_cam_with_scores  # noqa: E402
from .grids import atlas_grid, tile_grid  # noqa: E402
from .kernels import (  # noqa: E402
    KernelGrid,
    WeightHistogram,
    glorot_uniform_like,
    kernel_grid,
    weight_histogram,
)
