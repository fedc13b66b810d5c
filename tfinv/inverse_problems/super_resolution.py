"""Super-resolution: ``y = avg_pool_f(x) + sigma * eps`` (average pooling by ``f``, then noise)."""

from __future__ import annotations

import numpy as np

from tfinv.inverse_problems import _checks


class SuperResolution:
    """``y = AvgPool_f(x) + sigma * eps``, ``eps ~ N(0, I)``: each ``f x f`` block averaged.

    Shapes: ``(N, H, W, C) -> (N, H / f, W / f, C)``; ``H`` and ``W`` divisible by ``f``.

    Args:
        noise_std: ``sigma > 0``.
        factor: ``f >= 1`` (2 by default).
    """

    def __init__(self, noise_std: float = 0.05, factor: int = 2):
        self.noise_std = _checks.noise_level(noise_std)
        if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
            raise ValueError(f"SuperResolution factor must be an int >= 1, got {factor!r}")
        self.factor = int(factor)

    def observation_shape(self, image_shape) -> tuple[int, int, int]:
        height, width, channels = (int(s) for s in image_shape)
        if height % self.factor or width % self.factor:
            raise ValueError(f"SuperResolution with factor {self.factor} needs H and W divisible by "
                             f"{self.factor}, got (H, W) = ({height}, {width})")
        return height // self.factor, width // self.factor, channels

    def apply(self, x) -> np.ndarray:
        """The noiseless operator ``AvgPool_f(x)``."""
        x = _checks.images(x, "SuperResolution")
        height, width, channels = self.observation_shape(x.shape[1:])
        f = self.factor
        return x.reshape(len(x), height, f, width, f, channels).mean(axis=(2, 4))

    def __call__(self, x, seed: int | None = None) -> np.ndarray:
        """A noisy observation ``y`` of every image of ``x``."""
        clean = self.apply(x)
        return (clean + self.noise_std * _checks.rng(seed).standard_normal(clean.shape)).astype(np.float32)

    def pairs(self, x, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` training pairs from an image set ``x`` of shape ``(N, H, W, C)``."""
        x = _checks.images(x, "SuperResolution")
        return x, self(x, seed)
