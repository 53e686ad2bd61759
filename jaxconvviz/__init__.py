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

from jaxconvviz._types import ImagesCaffe, ImagesRGB, ImagesU8, Params, PRNGKey  # noqa: E402
from jaxconvviz.models.convnet import (  # noqa: E402
    CONV_LAYERS,
    LAYER_NAMES,
    VGG16,
    ConvNet,
    Layer,
    forward,
    resolve_model,
    tiny_vgg16,
)
from jaxconvviz.models.labels import decode_predictions, load_class_index  # noqa: E402
from jaxconvviz.models.predict import activations, predict  # noqa: E402
from jaxconvviz.models.preprocess import (  # noqa: E402
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
    "load_vgg16": "models.weights",
    "load_params": "models.weights",
    "read_keras_weights": "models.weights",
    "fetch_imagenet": "models.weights",
    "imagenet_available": "models.weights",
    "overlay": "views.heatmaps",
    "load_keras_model": "models.keras_import",
    "save_keras_model": "models.keras_export",
    # -- models (graph import, zoo): lazy exports --
    "load_application": "models.zoo",
    "APPLICATIONS": "models.zoo",
    # -- end models --
    # -- report: lazy exports --
    # -- end report --
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


# -- eager exports; each area adds its names inside its own block --
# -- featureviz (render engine) --
# -- end featureviz --
# -- attribution (CAM family, gradients, metrics) --
from jaxconvviz.attribution.cams import (  # noqa: E402
    CAM_METHODS,
    CamResult,
    cam,
    cam_with_scores,
)

# -- end attribution --
from jaxconvviz.attribution.gradcam import grad_cam, grad_cam_with_scores  # noqa: E402

# ``attribution`` the function shadows the ``jaxconvviz.attribution``
# subpackage as an attribute (``from jaxconvviz.attribution.x import y`` works).
from jaxconvviz.attribution.gradients import (  # noqa: E402
    ATTRIBUTION_METHODS,
    attribution,
)
from jaxconvviz.attribution.metrics import (  # noqa: E402
    confidence_change,
    deletion,
    insertion,
    mass_in_mask,
    pointing_game,
    road,
)
from jaxconvviz.attribution.sanity import (  # noqa: E402
    cascading_randomization,
    label_randomization,
)
from jaxconvviz.compile_cache import use_compile_cache  # noqa: E402
from jaxconvviz.cpu import available_cores, use_cpu_cores  # noqa: E402
from jaxconvviz.featureviz import objectives, transforms  # noqa: E402, F401
from jaxconvviz.featureviz.atlas import LayerPlan, atlas_plan, filter_atlas  # noqa: E402
from jaxconvviz.featureviz.filters import filter_activation  # noqa: E402
from jaxconvviz.featureviz.progress import (  # noqa: E402
    DeadFilterWarning,
    Progress,
    SlowOnCPUWarning,
)
from jaxconvviz.featureviz.render import filter_patterns, render  # noqa: E402
from jaxconvviz.featureviz.styles import Book, Lucid  # noqa: E402
from jaxconvviz.views.activation_grids import (  # noqa: E402
    activation_grid,
    activation_grids,
    feature_map_grid,
    layer_activation_grids,
    standardize_channels,
    tile_channels,
)
from jaxconvviz.views.grids import atlas_grid, tile_grid  # noqa: E402
from jaxconvviz.views.kernels import (  # noqa: E402
    KernelGrid,
    WeightHistogram,
    glorot_uniform_like,
    kernel_grid,
    weight_histogram,
)

#: Every public name: the eager ones above and the lazy ones of ``_LAZY``.
__all__ = sorted(
    {n for n, v in globals().items()
     if not n.startswith("_") and n != "annotations"
     and not isinstance(v, type(importlib))}
    | set(_LAZY)
)
