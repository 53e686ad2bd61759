"""Pixel-domain conversions: the only home of the caffe mean pixel and RGB<->BGR.

Keras ``keras.applications.vgg16.preprocess_input`` uses ``mode="caffe"``:
flip RGB to BGR, subtract the ImageNet mean pixel in BGR order, no scaling.
This module reproduces it bit for bit for float32 input, but never mutates
its argument (Keras' NumPy path writes over float input in place).

Imports jax and numpy only.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxconvviz._types import ImagesCaffe, ImagesRGB
from jaxconvviz.errors import InputError

#: ImageNet mean pixel in **BGR** order; Keras ``imagenet_utils``, caffe mode.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
#: ImageNet mean and std in **RGB** order on [0, 1]; Keras ``imagenet_utils``,
#: torch mode.
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)
#: Input pixel domains :func:`preprocess_mode` knows (a ConvNet's
#: ``preprocessing``).
PREPROCESS_MODES = ("caffe", "tf", "torch", "scale01", "none")


def _check_channels_last(x, name: str) -> None:
    if x.ndim < 1 or x.shape[-1] != 3:
        raise InputError(
            f"{name} must have 3 channels in its last axis (..., h, w, 3); "
            f"got shape {tuple(x.shape)}."
        )


def _mean(ndim: int):
    # explicit rank: stays valid under jax_numpy_rank_promotion="raise"
    return jnp.asarray(CAFFE_MEAN_BGR, jnp.float32).reshape((1,) * (ndim - 1) + (3,))


def preprocess_input(images_rgb: ImagesRGB) -> ImagesCaffe:
    """Keras' VGG16 ``preprocess_input`` (caffe mode), as a pure function.

    Args:
      images_rgb: RGB in [0, 255], shape ``(..., h, w, 3)``; any real dtype
        (cast to float32 first, so uint8 input does not wrap around).

    Returns:
      float32 array of the same shape, channels BGR, mean pixel subtracted.
      ``RGB (10, 20, 30)`` becomes ``(-73.939, -96.779, -113.68)``.

    Raises:
      ValueError: if the last axis is not 3.
    """
    x = jnp.asarray(images_rgb)
    _check_channels_last(x, "images_rgb")
    x = x.astype(jnp.float32)
    return x[..., ::-1] - _mean(x.ndim)


def preprocess_mode(images_rgb: ImagesRGB, mode: str):
    """RGB [0, 255] images in the pixel domain ``mode`` (float32, new array).

    The modes of Keras ``imagenet_utils.preprocess_input``: ``"caffe"``
    (:func:`preprocess_input`: BGR, mean pixel subtracted), ``"tf"``
    (``x / 127.5 - 1``, [-1, 1]), ``"torch"`` (``(x / 255 - mean) / std``,
    ImageNet RGB statistics); plus ``"scale01"`` (``x / 255``) and
    ``"none"`` (as is, float32).

    Raises:
      ValueError: an unknown ``mode`` (lists them), before any compute.
    """
    if mode not in PREPROCESS_MODES:
        raise InputError(
            f"preprocessing mode must be one of {PREPROCESS_MODES}; got {mode!r}.")
    if mode == "caffe":
        return preprocess_input(images_rgb)
    x = jnp.asarray(images_rgb).astype(jnp.float32)
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "torch":
        _check_channels_last(x, "images_rgb")
        shape = (1,) * (x.ndim - 1) + (3,)
        mean = jnp.asarray(TORCH_MEAN_RGB, jnp.float32).reshape(shape)
        std = jnp.asarray(TORCH_STD_RGB, jnp.float32).reshape(shape)
        return (x / 255.0 - mean) / std
    if mode == "scale01":
        return x / 255.0
    return x


def caffe_to_rgb(images_caffe: ImagesCaffe) -> ImagesRGB:
    """Inverse of :func:`preprocess_input`: add the mean back, BGR -> RGB."""
    x = jnp.asarray(images_caffe, jnp.float32)
    _check_channels_last(x, "images_caffe")
    return (x + _mean(x.ndim))[..., ::-1]


def deprocess_image(x, *, contrast: float = 0.1) -> np.ndarray:
    """The book's display mapping (DLwP listing 5.37), safe and non-mutating.

    Per image: subtract the mean, divide by ``std + 1e-5``, multiply by
    ``contrast`` (0.1 in the book), add 0.5, clip to [0, 1], times 255, uint8.
    A constant image (std 0) maps to flat mid-grey, never NaN.

    Args:
      x: one image ``(h, w, c)`` or a batch ``(n, h, w, c)``, any domain.
      contrast: standard deviations per half range; the book's 0.1.

    Returns:
      uint8 NumPy array of the same shape. Statistics are taken per image.
    """
    a = np.array(x, dtype=np.float32)  # copy: never touch the caller's array
    if a.ndim not in (3, 4):
        raise InputError(
            f"x must be an image (h, w, c) or a batch (n, h, w, c); "
            f"got shape {a.shape}."
        )
    axes = (-3, -2, -1)
    a = a - a.mean(axis=axes, keepdims=True)
    a = a / (a.std(axis=axes, keepdims=True) + 1e-5)
    a = a * contrast + 0.5
    a = np.clip(a, 0.0, 1.0) * 255.0
    return a.astype(np.uint8)


__all__ = ["CAFFE_MEAN_BGR", "TORCH_MEAN_RGB", "TORCH_STD_RGB",
           "PREPROCESS_MODES", "preprocess_mode", "preprocess_input",
           "caffe_to_rgb", "deprocess_image"]
