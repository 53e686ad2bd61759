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

# Eager exports, one sorted import per module. ``attribution`` the function
# shadows the subpackage of that name as an attribute (``from
# jaxconvviz.attribution.x import y`` still works); ``backend`` is the
# subpackage itself, callable as the process-default context manager
# (``with jcv.backend(conv3x3="winograd"): ...``).
from jaxconvviz._types import ImagesCaffe, ImagesRGB, ImagesU8, Params, PRNGKey
from jaxconvviz._version import __version__
from jaxconvviz.attribution.cam_registry import (
    CamInputs,
    CamMethod,
    cam_method,
    cam_methods,
    register_cam_method,
    unregister_cam_method,
)
from jaxconvviz.attribution.cams import CamResult, cam, cam_layers, cam_with_scores
from jaxconvviz.attribution.explain import explain_methods
from jaxconvviz.attribution.gradcam import grad_cam, grad_cam_with_scores
from jaxconvviz.attribution.gradients import (
    ATTRIBUTION_METHODS,
    attribution,
)
from jaxconvviz.attribution.metrics import (
    confidence_change,
    deletion,
    insertion,
    mass_in_mask,
    pointing_game,
    road,
)
from jaxconvviz.attribution.sanity import (
    cascading_randomization,
    label_randomization,
)
from jaxconvviz.backend import Backend
from jaxconvviz.backend.compile_cache import use_compile_cache
from jaxconvviz.backend.cpu import available_cores, use_cpu_cores
from jaxconvviz.directions.activation_atlas import ActivationAtlas, activation_atlas
from jaxconvviz.directions.factorize import Factorization, factorize_activations
from jaxconvviz.featureviz import objectives, transforms
from jaxconvviz.featureviz.atlas import LayerPlan, atlas_plan, filter_atlas
from jaxconvviz.featureviz.filters import filter_activation
from jaxconvviz.featureviz.progress import (
    DeadFilterWarning,
    Progress,
    SlowOnCPUWarning,
)
from jaxconvviz.featureviz.render import filter_patterns, render
from jaxconvviz.featureviz.styles import Book, Lucid
from jaxconvviz.models.convnet import ConvNet, Layer
from jaxconvviz.models.labels import class_label, decode_predictions, load_class_index
from jaxconvviz.models.predict import activations, predict
from jaxconvviz.models.preprocess import (
    CAFFE_MEAN_BGR,
    caffe_to_rgb,
    deprocess_image,
    preprocess_input,
)
from jaxconvviz.models.vgg import (
    CONV_LAYERS,
    LAYER_NAMES,
    VGG16,
    forward,
    resolve_model,
    tiny_vgg16,
)
from jaxconvviz.run import Run
from jaxconvviz.views.activation_grids import (
    activation_grid,
    activation_grids,
    feature_map_grid,
    layer_activation_grids,
    standardize_channels,
    tile_channels,
)
from jaxconvviz.views.grids import atlas_grid, tile_grid
from jaxconvviz.views.kernels import (
    KernelGrid,
    WeightHistogram,
    glorot_uniform_like,
    kernel_grid,
    weight_histogram,
)

# Public names whose modules import Pillow / h5py / matplotlib: loaded lazily
# (PEP 562) so compute-only users never import them. name -> module.
_LAZY = {
    "CAT_PHOTO": "images",
    "ELEPHANT_PHOTO": "images",
    "load_img": "images",
    "save_image": "images",
    "to_uint8": "images",
    "save_keras_model": "models.keras_export",
    "load_keras_model": "models.keras_import",
    "fetch_imagenet": "models.weights",
    "imagenet_available": "models.weights",
    "load_params": "models.weights",
    "load_vgg16": "models.weights",
    "read_keras_weights": "models.weights",
    "APPLICATIONS": "models.zoo",
    "DatasetExamples": "dataset.result",
    "dataset_examples": "dataset.examples",
    "load_application": "models.zoo",
    "plotting": None,  # the jaxconvviz.plotting package
    "overlay": "views.heatmaps",
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


#: Every public name: the eager ones above and the lazy ones of ``_LAZY``.
__all__ = sorted(
    {n for n, v in globals().items()
     if not n.startswith("_") and n != "annotations"
     and not isinstance(v, type(importlib))}
    | set(_LAZY) | {"backend"}  # the callable subpackage
)
