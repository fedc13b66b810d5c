"""Input checks shared by the forward operators (clear errors naming what was expected)."""

from __future__ import annotations

import math

import numpy as np


def noise_level(value, name: str = "noise_std") -> float:
    """``value`` as a finite float > 0, else ``ValueError``."""
    try:
        level = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}") from None
    if not math.isfinite(level) or level <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return level


def images(x, who: str) -> np.ndarray:
    """``x`` as a float32 array of shape ``(N, H, W, C)``, else ``ValueError``."""
    array = np.asarray(x)
    if array.ndim != 4 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{who} needs images of shape (N, H, W, C) with real values, got shape {array.shape} "
                         f"and dtype {array.dtype}")
    return array.astype(np.float32, copy=False)


def rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)
