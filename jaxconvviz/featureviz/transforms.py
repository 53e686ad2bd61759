"""Random image transforms applied at every optimisation step (lucid's robustness).

Each transform is a frozen (hashable) dataclass called on ONE image
``(h, w, c)`` in [0, 1] with its own PRNG key: ``t(key, image)``. They are
plain ``jnp`` / :func:`jax.scipy.ndimage.map_coordinates`, so they compile
inside the step and ``vmap`` over a batch with a different draw per image
(lucent draws one for the whole batch). :data:`STANDARD_TRANSFORMS` is
lucid/lucent's ``standard_transforms``: pad 12 (constant 0.5), jitter 8,
random scale from ``{1 + (i - 5) / 50}``, random rotation from -10..10
degrees (0 weighted x5 more), jitter 4.

Geometry: jitter is a translation by ``(dy, dx)`` drawn from ``0..d-1`` with
zero fill (kornia ``translate``, as lucent); scale and rotation resample
bilinearly about the image centre ``((h - 1) / 2, (w - 1) / 2)`` with zero
fill, keeping the shape (lucent's ``random_scale`` changes the shape by up to
10%; a fixed shape compiles once). Only :class:`Pad` changes the shape.
:func:`apply_transforms` composes consecutive geometric transforms into one
affine resample (:func:`affine_resample`).

Imports jax and numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from jaxconvviz.errors import InputError


def _choice(key, values: tuple):
    """One of ``values`` (uniform over the tuple's entries)."""
    i = jax.random.randint(key, (), 0, len(values))
    return jnp.asarray(values, jnp.float32)[i]


def affine_resample(image, m):
    """``out[p] = image(m @ (p_y, p_x, 1))``: bilinear, 0 outside the image.

    ``m`` is a 3x3 map from output to source pixel coordinates. Integer
    translations are exact copies (the fractional weights are 0). Four row
    gathers of the flattened ``(h * w, c)`` image: cheap to differentiate.
    """
    h, w, c = image.shape
    yy = jnp.arange(h, dtype=jnp.float32)[:, None] * jnp.ones((1, w), jnp.float32)
    xx = jnp.ones((h, 1), jnp.float32) * jnp.arange(w, dtype=jnp.float32)[None, :]
    sy = m[0, 0] * yy + m[0, 1] * xx + m[0, 2]
    sx = m[1, 0] * yy + m[1, 1] * xx + m[1, 2]
    y0, x0 = jnp.floor(sy), jnp.floor(sx)
    fy, fx = sy - y0, sx - x0
    y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
    flat = image.reshape(h * w, c)

    def corner(yi, xi, wgt):
        ok = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
        idx = jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)
        v = jnp.take(flat, idx.reshape(-1), axis=0).reshape(h, w, c)
        return v * jnp.where(ok, wgt, 0.0)[..., None]

    return (corner(y0, x0, (1 - fy) * (1 - fx)) + corner(y0, x0 + 1, (1 - fy) * fx)
            + corner(y0 + 1, x0, fy * (1 - fx)) + corner(y0 + 1, x0 + 1, fy * fx))


def _about_centre(a2, shape):
    """3x3 map ``src = c + a2 @ (p - c)``, ``c`` the image centre."""
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    c = jnp.asarray([cy, cx], jnp.float32)
    t = c - a2 @ c
    return jnp.concatenate([jnp.concatenate([a2, t[:, None]], axis=1),
                            jnp.asarray([[0.0, 0.0, 1.0]])], axis=0)


@dataclass(frozen=True)
class Pad:
    """Pad ``width`` pixels on every side with the constant ``value``."""

    width: int = 12
    value: float = 0.5
    geometric = False

    @property
    def margin(self) -> int:
        return 2 * self.width

    def __call__(self, key, image):
        del key
        w = self.width
        return jnp.pad(image, ((w, w), (w, w), (0, 0)), constant_values=self.value)


@dataclass(frozen=True)
class Jitter:
    """Translate by ``(dy, dx)``, each drawn uniformly from ``0..d-1``:
    ``out[y, x] = image[y - dy, x - dx]``, 0 where that is outside."""

    d: int = 8
    margin = 0
    geometric = True

    def offsets(self, key):
        """The ``(dy, dx)`` this key draws."""
        ky, kx = jax.random.split(key)
        return (jax.random.randint(ky, (), 0, self.d),
                jax.random.randint(kx, (), 0, self.d))

    def matrix(self, key, shape):
        dy, dx = self.offsets(key)
        return jnp.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
                           ) - jnp.zeros((3, 3)).at[0, 2].set(dy).at[1, 2].set(dx)

    def __call__(self, key, image):
        return affine_resample(image, self.matrix(key, image.shape))


@dataclass(frozen=True)
class RandomScale:
    """Zoom by a factor drawn from ``scales`` about the centre (same shape):
    ``out[p] = image(centre + (p - centre) / s)``."""

    scales: tuple = tuple(1 + (i - 5) / 50 for i in range(11))
    margin = 0
    geometric = True

    def matrix_for(self, s, shape):
        return _about_centre(jnp.eye(2, dtype=jnp.float32) / s, shape)

    def matrix(self, key, shape):
        return self.matrix_for(_choice(key, self.scales), shape)

    def apply(self, image, s):
        return affine_resample(image, self.matrix_for(s, image.shape))

    def __call__(self, key, image):
        return affine_resample(image, self.matrix(key, image.shape))


@dataclass(frozen=True)
class RandomRotate:
    """Rotate by an angle in degrees drawn from ``angles`` about the centre
    (same shape, bilinear, 0 outside); positive angles turn the picture
    counter-clockwise as displayed (kornia's convention): 90 is ``np.rot90``."""

    angles: tuple = tuple(range(-10, 11)) + (0,) * 5
    margin = 0
    geometric = True

    def matrix_for(self, degrees, shape):
        a = -degrees * (math.pi / 180)
        cos, sin = jnp.cos(a), jnp.sin(a)
        r = jnp.stack([jnp.stack([cos, -sin]), jnp.stack([sin, cos])])
        return _about_centre(r.astype(jnp.float32), shape)

    def matrix(self, key, shape):
        return self.matrix_for(_choice(key, self.angles), shape)

    def apply(self, image, degrees):
        return affine_resample(image, self.matrix_for(jnp.float32(degrees),
                                                      image.shape))

    def __call__(self, key, image):
        return affine_resample(image, self.matrix(key, image.shape))


#: lucid/lucent's ``standard_transforms``.
STANDARD_TRANSFORMS = (
    Pad(12, 0.5),
    Jitter(8),
    RandomScale(),
    RandomRotate(),
    Jitter(4),
)


def check_transforms(transforms) -> tuple:
    """``transforms`` as a tuple of transform objects (hashable)."""
    try:
        t = tuple(transforms)
    except TypeError:
        t = None
    if t is None or not all(callable(x) and hasattr(x, "margin") for x in t):
        raise InputError(
            f"transforms must be a sequence of jaxconvviz transforms (Pad, Jitter, "
            f"RandomScale, RandomRotate); got {transforms!r:.80}.")
    return t


def margin(transforms) -> int:
    """Pixels the transforms add to each side length."""
    return sum(int(t.margin) for t in transforms)


def apply_transforms(transforms, key, image):
    """Apply ``transforms`` in order to ONE image, each with its own subkey
    (``fold_in(key, position)``).

    Runs of geometric transforms (jitter, scale, rotation) are composed into
    one affine map and resampled once (one bilinear interpolation instead of
    one per transform; 0 outside the image the run starts from), which is
    what makes the lucid step cheap on CPU.
    """
    m = None
    for i, t in enumerate(transforms):
        k = jax.random.fold_in(key, i)
        if getattr(t, "geometric", False):
            a = t.matrix(k, image.shape)
            m = a if m is None else m @ a
            continue
        if m is not None:
            image, m = affine_resample(image, m), None
        image = t(k, image)
    return image if m is None else affine_resample(image, m)


__all__ = ["Pad", "Jitter", "RandomScale", "RandomRotate", "STANDARD_TRANSFORMS",
           "check_transforms", "margin", "apply_transforms", "affine_resample"]
