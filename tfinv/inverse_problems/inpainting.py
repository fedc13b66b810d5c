"""Inpainting: observe a masked image, ``y = [m * (x + sigma * eps), m]``."""

from __future__ import annotations

import numpy as np

from tfinv.inverse_problems import _checks


class Inpainting:
    """``y = [m * (x + sigma * eps), m]``: the observed pixels (noisy, zero where missing) and
    the binary mask ``m`` (1 = observed) as one more channel, so a conditioning network knows
    which zeros are missing pixels.

    Masks: a fixed ``mask`` of shape ``(H, W)`` (values exactly 0 or 1) used for every image, or
    (``mask=None``) a random mask per image: a random axis-aligned square of side ``hole``
    hidden, the rest observed.
    Shapes: ``(N, H, W, C) -> (N, H, W, C + 1)``.

    Args:
        noise_std: ``sigma > 0``.
        mask: fixed binary mask ``(H, W)`` or ``None`` for random masks.
        hole: side of the random square hole (random masks only).
    """

    def __init__(self, noise_std: float = 0.05, mask=None, hole: int = 4):
        self.noise_std = _checks.noise_level(noise_std)
        if mask is not None:
            mask = np.asarray(mask)
            if mask.ndim != 2:
                raise ValueError(f"Inpainting mask must have shape (H, W), got {mask.shape}")
            if not np.all((mask == 0) | (mask == 1)):
                raise ValueError("Inpainting mask must be binary (every value 0 or 1), got values "
                                 f"{np.unique(mask)[:5].tolist()}")
            mask = mask.astype(np.float32)
        self.mask = mask
        if isinstance(hole, bool) or not isinstance(hole, (int, np.integer)) or hole < 1:
            raise ValueError(f"Inpainting hole must be an int >= 1, got {hole!r}")
        self.hole = int(hole)

    def observation_shape(self, image_shape) -> tuple[int, int, int]:
        height, width, channels = (int(s) for s in image_shape)
        self._check_size(height, width)
        return height, width, channels + 1

    def _check_size(self, height: int, width: int) -> None:
        if self.mask is not None and self.mask.shape != (height, width):
            raise ValueError(f"Inpainting mask has shape {self.mask.shape} but the images are "
                             f"(H, W) = ({height}, {width})")
        if self.mask is None and (self.hole > height or self.hole > width):
            raise ValueError(f"Inpainting hole {self.hole} is larger than the images ({height}, {width})")

    def masks(self, n: int, height: int, width: int, seed: int | None = None) -> np.ndarray:
        """``n`` binary masks ``(n, H, W)`` (the fixed one repeated, or random holes)."""
        self._check_size(height, width)
        if self.mask is not None:
            return np.broadcast_to(self.mask, (n, height, width)).copy()
        rng = _checks.rng(seed)
        masks = np.ones((n, height, width), np.float32)
        top = rng.integers(0, height - self.hole + 1, n)
        left = rng.integers(0, width - self.hole + 1, n)
        for i in range(n):
            masks[i, top[i]:top[i] + self.hole, left[i]:left[i] + self.hole] = 0.0
        return masks

    def __call__(self, x, seed: int | None = None) -> np.ndarray:
        x = _checks.images(x, "Inpainting")
        rng = _checks.rng(seed)
        m = self.masks(len(x), x.shape[1], x.shape[2], seed=rng.integers(2**31))[..., None]
        noisy = x + self.noise_std * rng.standard_normal(x.shape)
        return np.concatenate([m * noisy, m], axis=-1).astype(np.float32)

    def pairs(self, x, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` training pairs from an image set ``x`` of shape ``(N, H, W, C)``."""
        x = _checks.images(x, "Inpainting")
        return x, self(x, seed)
