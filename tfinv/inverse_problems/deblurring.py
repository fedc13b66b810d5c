"""Deblurring: ``y = k * x + sigma * eps`` with a known Gaussian kernel ``k``."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfinv.inverse_problems import _checks


def gaussian_kernel(size: int, blur_std: float) -> np.ndarray:
    """A normalised ``size x size`` Gaussian kernel of standard deviation ``blur_std`` (pixels)."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
    profile = np.exp(-0.5 * (offsets / blur_std) ** 2)
    kernel = np.outer(profile, profile)
    return (kernel / kernel.sum()).astype(np.float32)


class Deblurring:
    """``y = k * x + sigma * eps``: every channel convolved with the Gaussian kernel ``k``
    (``kernel_size`` odd, standard deviation ``blur_std``; zero padding, same size), then noise.

    Shapes: ``(N, H, W, C) -> (N, H, W, C)``.

    Args:
        noise_std: ``sigma > 0``.
        blur_std: standard deviation of the blur, in pixels (> 0).
        kernel_size: odd side of the kernel.
    """

    def __init__(self, noise_std: float = 0.05, blur_std: float = 1.0, kernel_size: int = 5):
        self.noise_std = _checks.noise_level(noise_std)
        self.blur_std = _checks.noise_level(blur_std, "blur_std")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, np.integer)) \
                or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"Deblurring kernel_size must be an odd int >= 1, got {kernel_size!r}")
        self.kernel_size = int(kernel_size)
        self.kernel = gaussian_kernel(self.kernel_size, self.blur_std)

    def observation_shape(self, image_shape) -> tuple[int, int, int]:
        return tuple(int(s) for s in image_shape)

    def apply(self, x) -> np.ndarray:
        """The noiseless blur ``k * x``."""
        x = _checks.images(x, "Deblurring")
        channels = x.shape[-1]
        kernel = np.tile(self.kernel[:, :, None, None], (1, 1, channels, 1))
        return tf.nn.depthwise_conv2d(x, kernel, strides=[1, 1, 1, 1], padding="SAME").numpy()

    def __call__(self, x, seed: int | None = None) -> np.ndarray:
        clean = self.apply(x)
        return (clean + self.noise_std * _checks.rng(seed).standard_normal(clean.shape)).astype(np.float32)

    def pairs(self, x, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` training pairs from an image set ``x`` of shape ``(N, H, W, C)``."""
        x = _checks.images(x, "Deblurring")
        return x, self(x, seed)
