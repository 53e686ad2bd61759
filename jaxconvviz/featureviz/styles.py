"""The two feature-visualization styles: :class:`Book` and :class:`Lucid`.

A style is *what* an optimisation does besides its target: the image
parameterization, the random transforms, the optimizer and its step, the
default objective (pre- or post-activation channel mean) and its own
default ``steps`` and ``size``. Styles are frozen and hashable (a static
argument of the compiled programs). :func:`~jaxconvviz.render`,
:func:`~jaxconvviz.filter_patterns` and :func:`~jaxconvviz.filter_atlas` take
one as ``style=`` and run it the same way.

Pixel domain of the results (the same for every entry point):
:meth:`Book.domain` / :meth:`Lucid.domain` name it for a model, and
``style.to_rgb(images, model)`` maps results to display RGB [0, 255].

* :class:`Book` -- DLwP listing 5.38: pixels of the network input (or RGB
  [0, 255] through the model's preprocessing with ``preprocess=True``),
  start ``uniform * 20 + 128``, steps ``x += step_size * g / (rms(g) +
  1e-5)``, no transforms. Results: the optimised images, raw.
* :class:`Lucid` -- lucid/lucent's ``render_vis``: a decorrelated Fourier
  image (:class:`~jaxconvviz.featureviz.param.FourierParam`) through a
  sigmoid to RGB [0, 1], times 255, through ``model.preprocess``; the
  standard random transforms at every step, drawn per image; Adam.
  Results: RGB [0, 255].

Imports jax and numpy only.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import jax.numpy as jnp

from jaxconvviz.errors import InputError
from jaxconvviz.featureviz.objectives import Objective
from jaxconvviz.featureviz.param import FourierParam
from jaxconvviz.featureviz.transforms import (
    STANDARD_TRANSFORMS,
    check_transforms,
    margin,
)
from jaxconvviz.models.preprocess import caffe_to_rgb

#: Book constants (DLwP listings 5.34 and 5.36): gradient RMS epsilon, start
#: image ``uniform(0, 1) * 20 + 128``, display contrast.
GRAD_EPS = 1e-5
START_SCALE = 20.0
START_OFFSET = 128.0
BOOK_CONTRAST = 0.1
#: Image storage dtypes of the book style (:attr:`Book.image_dtype`).
IMAGE_DTYPES = ("float32", "bfloat16")

#: The model's input domain by ``ConvNet.preprocessing``.
_INPUT_DOMAINS = {"caffe": "caffe BGR (the model input)",
                  "tf": "RGB in [-1, 1] (the model input)",
                  "torch": "torch-normalised RGB (the model input)",
                  "scale01": "RGB in [0, 1] (the model input)",
                  "none": "RGB [0, 255] (the model input)"}


def _finite(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if isinstance(value, bool) or not math.isfinite(v):
        raise InputError(f"{name} must be a finite number; got {value!r}.")
    return v


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be an integer >= 1; got {value!r}.")
    return int(value)


def _bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True or False; got {value!r}.")
    return value


def _common(style) -> None:
    cls = type(style).__name__
    _positive_int(style.steps, f"{cls}.steps")
    _positive_int(style.size, f"{cls}.size")
    _bool(style.pre_activation, "pre_activation")
    if style.objective is not None and not isinstance(style.objective, Objective):
        raise InputError(
            f"{cls}.objective must be None (the channel mean of each filter) or a "
            f"jaxconvviz objective (jcv.objectives.Channel, ...); got "
            f"{style.objective!r:.80}.")


def book_display(x, model, preprocess: bool):
    """Book images as display RGB in [0, 255] (float32): to RGB
    (``caffe_to_rgb`` for a caffe model's input domain), then per image
    ``clip((x - mean) / (std + 1e-5) * 0.1 + 0.5, 0, 1) * 255``."""
    x = jnp.asarray(x, jnp.float32)
    if not preprocess:
        if model.preprocessing == "caffe":
            x = caffe_to_rgb(x)
        elif model.preprocessing == "scale01":
            x = x * 255.0
    m = x.mean(axis=(-3, -2, -1), keepdims=True)
    s = x.std(axis=(-3, -2, -1), keepdims=True)
    return jnp.clip((x - m) / (s + GRAD_EPS) * BOOK_CONTRAST + 0.5, 0, 1) * 255.0


@dataclass(frozen=True)
class Book:
    """The book's gradient ascent (DLwP 5.38).

    Attributes:
      steps: ascent steps (book: 40).
      size: side of the square images in pixels (book: 150).
      step_size: step along the RMS-normalised gradient (book: 1.0).
      preprocess: False (the book): optimise the network input (VGG16:
        caffe BGR). True: optimise RGB [0, 255] fed through
        ``model.preprocess``.
      image_dtype: images stored between steps as ``"float32"`` (the book)
        or ``"bfloat16"`` (each step's update computed in float32 from the
        stored image and rounded once; half the image bytes).
      pre_activation: True (default): maximise each filter's response
        before its ReLU (filters silent on the start image still move);
        False: after it, as the book.
      objective: None (default): the mean of each image's filter channel of
        the target layer; or an objective of
        :mod:`jaxconvviz.featureviz.objectives`.
    """

    steps: int = 40
    size: int = 150
    step_size: float = 1.0
    preprocess: bool = False
    image_dtype: str = "float32"
    pre_activation: bool = True
    objective: Objective | None = None

    name = "book"

    def __post_init__(self):
        _common(self)
        object.__setattr__(self, "step_size", _finite(self.step_size, "step_size"))
        _bool(self.preprocess, "preprocess")
        try:
            dt = jnp.dtype(self.image_dtype).name
        except TypeError:
            dt = None
        if dt not in IMAGE_DTYPES:
            raise InputError(f"image_dtype must be one of {', '.join(IMAGE_DTYPES)}; "
                             f"got {self.image_dtype!r}.")
        object.__setattr__(self, "image_dtype", dt)

    def replace(self, **changes) -> Book:
        return dataclasses.replace(self, **changes)

    @property
    def margin(self) -> int:
        """Pixels the transforms add (none)."""
        return 0

    def domain(self, model) -> str:
        """The pixel domain of this style's results for ``model``: RGB
        [0, 255] with ``preprocess``, else the model's input domain."""
        if self.preprocess:
            return "RGB [0, 255]"
        return _INPUT_DOMAINS.get(model.preprocessing, "the model input")

    def to_rgb(self, images, model):
        """Results as display RGB [0, 255], float32: the book's contrast
        mapping (``deprocess_image`` as floats), per image."""
        return book_display(images, model, self.preprocess)


@dataclass(frozen=True)
class Lucid:
    """Lucid's rendering (``render_vis`` with its defaults).

    Attributes:
      steps: optimisation steps (lucid: 512).
      size: side of the square images in pixels (lucid: 128; the model
        sees ``size + margin`` after the transforms' padding).
      learning_rate: Adam's learning rate (lucid: 0.05).
      param: the image parameterization (lucid: decorrelated Fourier).
      transforms: random transforms at every step, per image.
      pre_activation, objective: as :class:`Book`.
    """

    steps: int = 512
    size: int = 128
    learning_rate: float = 0.05
    param: FourierParam = field(default_factory=FourierParam)
    transforms: tuple = STANDARD_TRANSFORMS
    pre_activation: bool = True
    objective: Objective | None = None

    name = "lucid"

    def __post_init__(self):
        _common(self)
        lr = _finite(self.learning_rate, "learning_rate")
        if lr <= 0:
            raise InputError(f"learning_rate must be > 0; got {self.learning_rate!r}.")
        object.__setattr__(self, "learning_rate", lr)
        if not isinstance(self.param, FourierParam):
            raise InputError(f"param must be a FourierParam; got {self.param!r:.80}.")
        _finite(self.param.decay_power, "decay_power")
        object.__setattr__(self, "transforms", check_transforms(self.transforms))

    def replace(self, **changes) -> Lucid:
        return dataclasses.replace(self, **changes)

    @property
    def margin(self) -> int:
        """Pixels the transforms add to each side length."""
        return margin(self.transforms)

    def domain(self, model) -> str:
        """The pixel domain of this style's results: RGB [0, 255]."""
        del model
        return "RGB [0, 255]"

    def to_rgb(self, images, model):
        """Results as display RGB [0, 255], float32 (they already are)."""
        del model
        return jnp.asarray(images, jnp.float32)


#: The style classes.
STYLES = (Book, Lucid)
#: The default styles (module-level instances, used as argument defaults).
BOOK = Book()
LUCID = Lucid()


def check_style(style) -> Book | Lucid:
    if not isinstance(style, STYLES):
        raise InputError(f"style must be jcv.Book(...) or jcv.Lucid(...); got "
                         f"{style!r:.80}.")
    return style


__all__ = ["Book", "Lucid", "STYLES", "GRAD_EPS", "START_SCALE", "START_OFFSET",
           "BOOK_CONTRAST", "IMAGE_DTYPES", "BOOK", "LUCID", "book_display",
           "check_style"]
