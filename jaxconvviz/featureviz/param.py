"""Image parameterizations: lucid's decorrelated Fourier image.

:class:`FourierParam` is lucid/lucent's ``fft_image`` + ``to_valid_rgb``:
a complex spectrum (``irfft2``, orthonormal) scaled by
``1 / max(f, 1 / max(h, w)) ** decay_power``, initial std 0.01, divided by
4 (lucid's "magic" constant), then -- for 3-channel images -- the ImageNet
colour correlation (the square root of its covariance, lucid's
``color_correlation_svd_sqrt``, columns normalised to max norm 1), then a
sigmoid to [0, 1]. Gradient steps on the spectrum then move low spatial
frequencies and natural colour directions more than pixel noise.

Imports jax and numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

#: lucid's ``color_correlation_svd_sqrt`` (RGB), ImageNet statistics.
COLOR_CORRELATION_SVD_SQRT = np.asarray([[0.26, 0.09, 0.02],
                                         [0.27, 0.00, -0.05],
                                         [0.27, -0.09, 0.03]], np.float32)
#: Normalised so its largest column has norm 1 (lucid's
#: ``color_correlation_normalized``).
COLOR_CORRELATION_NORMALIZED = COLOR_CORRELATION_SVD_SQRT / np.max(
    np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0))


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """Frequency magnitude ``sqrt(fx^2 + fy^2)`` of each ``rfft2`` bin,
    ``(h, w // 2 + 1)`` (``+ 2`` columns for odd ``w``, as lucid)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + (2 if w % 2 else 1)]
    return np.sqrt(fx * fx + fy * fy)


@dataclass(frozen=True)
class FourierParam:
    """Lucid's decorrelated Fourier parameterization of one image.

    Attributes:
      decay_power: spectrum scale ``1 / f ** decay_power`` (lucid: 1).
      std: standard deviation of the initial spectrum (lucid: 0.01).
      decorrelate: apply the ImageNet colour correlation (3 channels only).
      magic: the image is divided by this (lucid: 4).
    """

    decay_power: float = 1.0
    std: float = 0.01
    decorrelate: bool = True
    magic: float = 4.0

    def shape(self, size: int, channels: int) -> tuple[int, ...]:
        """Shape of one image's parameters: ``(c, h, w_f, 2)`` (re, im)."""
        return (channels, *rfft2d_freqs(size, size).shape, 2)

    def init(self, key, size: int, channels: int):
        """``normal * std`` of :meth:`shape`, float32."""
        return jax.random.normal(key, self.shape(size, channels),
                                 jnp.float32) * self.std

    def scale(self, size: int) -> np.ndarray:
        """``(h, w_f)`` spectrum scale ``1 / max(f, 1 / size) ** decay_power``."""
        f = rfft2d_freqs(size, size)
        return (1.0 / np.maximum(f, 1.0 / size) ** self.decay_power).astype(
            np.float32)

    def to_linear(self, z, size: int):
        """Pre-sigmoid image ``(h, w, c)`` of one parameter set ``z``."""
        s = jnp.asarray(self.scale(size))[None, :, :]
        spec = (z[..., 0] + 1j * z[..., 1]) * s  # (c, h, w_f) complex
        img = jnp.fft.irfft2(spec, s=(size, size), norm="ortho")  # (c, h, w)
        img = jnp.transpose(img, (1, 2, 0)) / self.magic
        if self.decorrelate and img.shape[-1] == 3:
            img = img @ jnp.asarray(COLOR_CORRELATION_NORMALIZED.T)
        return img

    def to_image(self, z, size: int):
        """One image ``(h, w, c)`` in [0, 1]: sigmoid of :meth:`to_linear`."""
        return jax.nn.sigmoid(self.to_linear(z, size))


__all__ = ["FourierParam", "rfft2d_freqs", "COLOR_CORRELATION_SVD_SQRT",
           "COLOR_CORRELATION_NORMALIZED"]
