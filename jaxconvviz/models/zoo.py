"""The model zoo: ``keras.applications`` networks without Keras.

:func:`load_application` returns ``(model, params)`` for the networks of
:data:`APPLICATIONS`. The architecture is a Keras functional config shipped
in the package (``models/zoo_configs/<name>_{top,notop}.json.gz``, generated
once from Keras 3.15.1 by ``scripts/gen_zoo_configs.py`` exactly as
``weights="imagenet"`` builds the model) and translated by
:func:`~jaxconvviz.models.keras_import.convnet_from_keras_config`. The
weights are the official Keras files (:data:`~jaxconvviz.models.weights.
files.KERAS_FILES`: the Keras cache ``~/.keras/models`` when they are
there, else the jaxconvviz store; downloaded only when asked, size- then
hash-checked, atomically), random with a seed, or a file.

Each model carries its own input preprocessing as Keras does it, so every
technique takes RGB images in [0, 255]: ``"caffe"`` (VGG16/19, ResNet50: BGR
minus the ImageNet mean), ``"tf"`` (ResNet50V2, MobileNetV2, Xception,
InceptionV3: ``x / 127.5 - 1``), ``"torch"`` (DenseNet121: ``x / 255``, then
the ImageNet mean and std) or ``"none"`` where the network starts with its
own Rescaling/Normalization layers (MobileNetV3Small, EfficientNetB0,
ConvNeXtTiny).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from jaxconvviz.errors import InputError, InputTypeError

CONFIG_DIR = Path(__file__).resolve().parent / "zoo_configs"


@dataclasses.dataclass(frozen=True)
class Application:
    """One network of the zoo.

    Attributes:
      name: the zoo name (``"resnet50"``).
      keras_name: the ``keras.applications`` constructor (``"ResNet50"``).
      preprocessing: the :class:`~jaxconvviz.models.convnet.ConvNet` input
        preprocessing Keras' ``preprocess_input`` does for it (``"caffe"``,
        ``"tf"``, ``"torch"``; ``"none"``: built into the network).
      default_size: the ImageNet input size (the only one with the classifier,
        except MobileNetV3, whose classifier is convolutional).
      min_size: the smallest input Keras accepts without the classifier.
      top_any_size: the classifier works at any input size (MobileNetV3).
    """

    name: str
    keras_name: str
    preprocessing: str
    default_size: int = 224
    min_size: int = 32
    top_any_size: bool = False


#: The zoo: name -> :class:`Application`, in the order of the docs.
APPLICATIONS: Mapping[str, Application] = MappingProxyType({
    a.name: a for a in (
        Application("resnet50", "ResNet50", "caffe"),
        Application("resnet50v2", "ResNet50V2", "tf"),
        Application("mobilenet_v2", "MobileNetV2", "tf"),
        Application("mobilenet_v3_small", "MobileNetV3Small", "none",
                    top_any_size=True),
        Application("efficientnet_b0", "EfficientNetB0", "none"),
        Application("densenet121", "DenseNet121", "torch"),
        Application("xception", "Xception", "tf", 299, 71),
        Application("inception_v3", "InceptionV3", "tf", 299, 75),
        Application("vgg16", "VGG16", "caffe"),
        Application("vgg19", "VGG19", "caffe"),
        Application("convnext_tiny", "ConvNeXtTiny", "none"),
    )
})


def config_path(name: str, include_top: bool) -> Path:
    """The shipped config file of application ``name``."""
    return CONFIG_DIR / f"{name}_{'top' if include_top else 'notop'}.json.gz"


def application_config(name: str, include_top: bool = True) -> dict:
    """The Keras functional config of application ``name`` (a fresh dict:
    ``{"class_name": "Functional", "config": ..., "keras_version": ...}``)."""
    _check_name(name)
    return json.loads(gzip.decompress(config_path(name, include_top).read_bytes()))


def _check_name(name: Any) -> Application:
    from jaxconvviz.models.weights.download import did_you_mean

    if not isinstance(name, str) or name not in APPLICATIONS:
        hint = did_you_mean(name, APPLICATIONS) if isinstance(name, str) else ""
        raise InputError(
            f"name must be one of {', '.join(APPLICATIONS)}; got {name!r}"
            f"{hint or '.'}"
        )
    return APPLICATIONS[name]


def _input_hw(app: Application, include_top: bool, input_size
              ) -> tuple[int, int] | None:
    """``input_size`` checked and as ``(h, w)``; None keeps the config's."""
    if input_size is None:
        return None
    if isinstance(input_size, bool):
        raise InputTypeError(f"input_size must be an int or (height, width); got "
                             f"{input_size!r}.")
    if isinstance(input_size, int):
        hw = (input_size, input_size)
    elif (isinstance(input_size, tuple | list) and len(input_size) == 2
          and all(isinstance(v, int) and not isinstance(v, bool)
                  for v in input_size)):
        hw = (int(input_size[0]), int(input_size[1]))
    else:
        raise InputTypeError(f"input_size must be an int or (height, width); got "
                             f"{input_size!r}.")
    if min(hw) < app.min_size:
        raise InputError(
            f"input_size must be at least {app.min_size} for {app.name} (as in "
            f"Keras); got {input_size!r}."
        )
    if include_top and not app.top_any_size and hw != (app.default_size,) * 2:
        raise InputError(
            f"input_size must be {app.default_size} for {app.name} with "
            f"include_top=True (the classifier's input is fixed); got "
            f"{input_size!r}. Use include_top=False for other sizes."
        )
    return hw


def _with_input(config: dict, hw: tuple[int, int]) -> dict:
    inp = config["config"]["layers"][0]
    if inp.get("class_name") != "InputLayer":  # pragma: no cover -- shipped files
        raise InputError(f"{config['config'].get('name')}: the first layer is not "
                         "the InputLayer.")
    shape = list(inp["config"]["batch_shape"])
    inp["config"]["batch_shape"] = [shape[0], hw[0], hw[1], shape[-1]]
    return config


def build_application(name: str, *, include_top: bool = True, input_size=None):
    """The :class:`~jaxconvviz.models.convnet.ConvNet` of application ``name``
    (no weights): Keras' architecture, layer names and preprocessing.

    Args:
      name: a key of :data:`APPLICATIONS`.
      include_top: with the ImageNet classifier (1000 classes, softmax).
      input_size: ``int`` or ``(height, width)``; None keeps Keras' default
        (the ImageNet size with the classifier, any size without).

    Raises:
      ValueError: unknown name (the nearest one is suggested), an input size
        below the model's minimum, or a size the classifier cannot take.
    """
    from jaxconvviz.models.keras_import import convnet_from_keras_config

    app = _check_name(name)
    hw = _input_hw(app, bool(include_top), input_size)
    config = application_config(name, bool(include_top))
    if hw is not None:
        config = _with_input(config, hw)
    return convnet_from_keras_config(config, preprocessing=app.preprocessing,
                                     source=f"{name} (zoo config)")


def params_from_file(model, path: str | os.PathLike) -> dict:
    """Load a weights file into ``model``; shape-checked.

    A converted store ``.npz`` and Keras files are matched by Keras layer
    name. When names do not match (the official files name some layers as
    the Keras of their day auto-named them, e.g. ConvNeXt's last
    LayerNormalization), a Keras weights file is paired with the model in
    order, as Keras itself loads ``.h5`` weight files
    (``legacy_h5_format.load_weights_from_hdf5_group``: layers with weights,
    in order) -- only if every array's shape then matches; otherwise the
    by-name error is raised.
    """
    import jax

    from jaxconvviz.models.keras_import import params_from_keras_weights
    from jaxconvviz.models.weights.store import assemble_params, read_any

    kind, data, label = read_any(path)
    if kind == "params":
        return assemble_params(kind, data, label, model)
    try:
        return params_from_keras_weights(model, data, source=label)
    except InputError as by_name:
        arrays = [a for layer in data.values() for a in layer]
        slots = [(s.name, p) for s in model.layers for p in s.param_names]
        if len(arrays) != len(slots):
            raise by_name from None
        shapes = jax.eval_shape(model.init_params, jax.random.key(0))
        if any(tuple(a.shape) != tuple(shapes[layer][p].shape)
               for a, (layer, p) in zip(arrays, slots, strict=True)):
            raise by_name from None
        ordered: dict[str, list] = {}
        for a, (layer, _) in zip(arrays, slots, strict=True):
            ordered.setdefault(layer, []).append(a)
        return params_from_keras_weights(model, ordered, source=label)


def load_application(name: str, *, include_top: bool = True,
                     weights: str | os.PathLike | None = "imagenet",
                     input_size=None, seed: int = 0, progress: bool = True,
                     download: bool = True):
    """A ``keras.applications`` network as ``(model, params)``, without Keras.

    Args:
      name: one of :data:`APPLICATIONS` -- ``"resnet50"``, ``"resnet50v2"``,
        ``"mobilenet_v2"``, ``"mobilenet_v3_small"``, ``"efficientnet_b0"``,
        ``"densenet121"``, ``"xception"``, ``"inception_v3"``, ``"vgg16"``,
        ``"vgg19"``, ``"convnext_tiny"``. A misspelt name gets the nearest one
        suggested.
      include_top: with the ImageNet classifier (then the input size is the
        ImageNet one: 224, or 299 for Xception/InceptionV3).
      weights: ``"imagenet"`` -- the official Keras file, from the Keras cache
        (``~/.keras/models``) or the store, else downloaded once (progress
        bar, size then published hash checked, atomic); ``None`` -- random
        params from ``seed`` (Keras-like initialisers of
        :meth:`ConvNet.init_params`); or a path to a Keras weights file
        (``.h5``/``.weights.h5``/``.keras``, keyed by Keras layer names) or a
        converted ``.npz``.
      input_size: ``int`` or ``(height, width)`` without the classifier; None
        keeps Keras' default.
      seed: the seed of the random params (``weights=None``).
      progress: download progress bar on stderr.
      download: ``False`` never downloads: missing ImageNet weights raise
        ``FileNotFoundError`` saying the command that fetches them
        (``jaxconvviz weights fetch NAME``).

    Returns:
      ``(model, params)``: a :class:`~jaxconvviz.models.convnet.ConvNet` with
      Keras' layer names whose ``preprocessing`` is the network's own (feed
      RGB in [0, 255]), and its float32 params.

    Raises:
      ValueError: bad name, size or weights value (raised before any download
        or compute); a weights file that does not fit the model.
      FileNotFoundError: a missing weights file, or ImageNet weights not
        downloaded with ``download=False``.
      OSError: a failed download (the message says how to fetch the file).
    """
    import jax

    from jaxconvviz.models.weights.download import application_weights_path

    _check_name(name)
    if weights is not None and not isinstance(weights, str | os.PathLike):
        raise InputTypeError(
            "weights must be 'imagenet', None or a path; got "
            f"{type(weights).__name__}."
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputTypeError(f"seed must be an int; got {seed!r}.")
    if isinstance(weights, str) and weights != "imagenet" and not Path(
            weights).exists():
        from jaxconvviz.models.weights.download import did_you_mean
        from jaxconvviz.models.weights.keras_files import check_weights_path

        hint = did_you_mean(weights, ("imagenet",))
        if hint:
            raise InputError(f"weights must be 'imagenet', None or a weights "
                             f"file; got {weights!r}{hint}")
        check_weights_path(Path(weights), weights)
    model = build_application(name, include_top=include_top, input_size=input_size)
    if weights is None:
        return model, model.init_params(jax.random.key(seed))
    if weights == "imagenet":
        path = application_weights_path(name, bool(include_top), progress=progress,
                                        download=download)
    else:
        path = Path(weights)
    return model, params_from_file(model, path)


__all__ = [
    "load_application",
    "build_application",
    "application_config",
    "params_from_file",
    "config_path",
    "Application",
    "APPLICATIONS",
    "CONFIG_DIR",
]
