"""The exploding-inverse stress test: reconstruction error ``|f^-1(f(x)) - x|`` off the data.

An invertible network is invertible in exact arithmetic, but its inverse can be so badly
conditioned that ``f^-1(f(x))`` in floating point is far from ``x`` (or not finite) — on the data,
and more often off it: Behrmann et al. show such failures of common architectures on in- and
out-of-distribution data. This module builds the test sets and measures the error per example:

* ``in_distribution``: the data batch itself;
* ``interpolation``: ``(1 - t) x_i + t x_j`` for random pairs and ``t ~ U(0, 1)``;
* ``uniform_noise``: uniform in the model's input domain (in ``[min, max]`` of the data when the
  domain is unbounded);
* ``scaled_xS``: ``c + S (x - c)`` for each scale ``S`` with ``c`` the domain's midpoint (the data
  mean when unbounded), clipped to the domain (so a bounded preprocessing layer still sees valid
  input; at large ``S`` the images saturate at the domain's edges).

Our variant: the paper's out-of-distribution inputs are other datasets; with only digits embedded
we generate the sets above (noise and contrast-scaled digits) instead.

References: Behrmann et al., "Understanding and Mitigating Exploding Inverses in Invertible
Neural Networks", arXiv:2006.09347, §4–5.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

__all__ = ["reconstruction_errors", "stress_sets", "error_summary"]


def reconstruction_errors(forward: Callable, inverse: Callable, x: tf.Tensor) -> dict[str, np.ndarray]:
    """Per-example ``|f^-1(f(x)) - x|_2`` (``"absolute"``) and that over ``|x|_2`` (``"relative"``);
    non-finite reconstructions give ``inf``."""
    x = tf.convert_to_tensor(x)
    reconstruction = inverse(forward(x))
    flat_x = tf.reshape(x, [tf.shape(x)[0], -1]).numpy().astype(np.float64)
    flat_r = tf.reshape(reconstruction, [tf.shape(x)[0], -1]).numpy().astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        absolute = np.linalg.norm(flat_r - flat_x, axis=1)
    absolute[~np.isfinite(absolute)] = np.inf
    scale = np.linalg.norm(flat_x, axis=1)
    relative = absolute / np.where(scale > 0, scale, 1.0)
    return {"absolute": absolute, "relative": relative}


def error_summary(errors: dict[str, np.ndarray]) -> dict[str, float | int]:
    """Max / median / mean (over finite values) of both errors, and the count of non-finite ones."""
    absolute, relative = errors["absolute"], errors["relative"]
    finite = np.isfinite(absolute)
    return {
        "max": float(absolute.max()),
        "median": float(np.median(absolute)),
        "mean_finite": float(absolute[finite].mean()) if finite.any() else float("nan"),
        "relative_max": float(relative.max()),
        "relative_median": float(np.median(relative)),
        "nonfinite": int((~finite).sum()),
        "count": int(absolute.size),
    }


def stress_sets(x: np.ndarray, domain: tuple[float, float] | None = None, scales: Sequence[float] = (2.0, 4.0),
                seed: int = 0) -> dict[str, np.ndarray]:
    """The test sets (see the module docstring), each of ``len(x)`` examples of ``x``'s shape.

    Args:
        x: a batch of data ``(B, ...)``, ``B >= 2``.
        domain: ``(low, high)`` of valid inputs (e.g. ``(0, L)`` for `LogitPreprocess`), or ``None``.
        scales: the ``S`` of the ``scaled_xS`` sets.
        seed: seed of the pairs, interpolation weights and noise.

    Raises:
        ValueError: fewer than two examples, or a domain with ``low >= high``.
    """
    x = np.asarray(x)
    if x.ndim < 2 or len(x) < 2:
        raise ValueError(f"stress_sets needs a batch of at least 2 examples, got shape {x.shape}")
    if domain is not None and not float(domain[0]) < float(domain[1]):
        raise ValueError(f"stress_sets needs a domain (low, high) with low < high, got {domain}")
    rng = np.random.default_rng(seed)
    n = len(x)
    first = rng.integers(0, n, n)
    second = (first + rng.integers(1, n, n)) % n  # a different example
    t = rng.uniform(0.0, 1.0, (n,) + (1,) * (x.ndim - 1))
    if domain is None:
        low, high, center = float(x.min()), float(x.max()), x.mean(axis=0, keepdims=True)
    else:
        low, high = float(domain[0]), float(domain[1])
        center = 0.5 * (low + high)
    sets = {
        "in_distribution": x,
        "interpolation": (1.0 - t) * x[first] + t * x[second],
        "uniform_noise": rng.uniform(low, high, x.shape),
    }
    for scale in scales:
        scaled = center + float(scale) * (x - center)
        sets[f"scaled_x{float(scale):g}"] = scaled if domain is None else np.clip(scaled, low, high)
    return {name: value.astype(x.dtype) for name, value in sets.items()}
