"""Posterior statistics from ``K`` posterior samples: mean, std, credible intervals, calibration.

Samples have shape ``(K, N, ...)``: ``K`` draws for each of ``N`` observations.
"""

from __future__ import annotations

import numpy as np

DEFAULT_LEVELS = tuple(np.round(np.arange(1, 10) / 10, 1))


def _samples(samples) -> np.ndarray:
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim < 2 or samples.shape[0] < 2:
        raise ValueError(f"posterior statistics need samples of shape (K, N, ...) with K >= 2, got {samples.shape}")
    return samples


def posterior_mean(samples) -> np.ndarray:
    """Mean over the ``K`` samples, shape ``(N, ...)``."""
    return _samples(samples).mean(axis=0)


def posterior_std(samples) -> np.ndarray:
    """Per-entry (per-pixel) standard deviation over the samples (``ddof=1``), shape ``(N, ...)``."""
    return _samples(samples).std(axis=0, ddof=1)


def credible_interval(samples, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Central ``level`` interval per entry: the ``(1 - level)/2`` and ``(1 + level)/2`` empirical quantiles."""
    level = float(level)
    if not 0 < level < 1:
        raise ValueError(f"credible_interval needs a level in (0, 1), got {level}")
    samples = _samples(samples)
    low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return low, high


def calibration(samples, truth, levels=DEFAULT_LEVELS) -> dict:
    """Coverage of the central credible intervals: for each level ``q``, the fraction of true
    entries inside the central ``q``-interval of the samples; a calibrated posterior has coverage
    ``q``. Returns ``{"levels", "coverage", "error"}`` with ``error`` the mean ``|coverage - q|``
    (and ``"max_error"``, the largest).
    """
    samples = _samples(samples)
    truth = np.asarray(truth, dtype=np.float64)
    if truth.shape != samples.shape[1:]:
        raise ValueError(f"calibration needs truth of shape {samples.shape[1:]} (the samples' (N, ...)), "
                         f"got {truth.shape}")
    levels = [float(q) for q in levels]
    coverage = []
    for q in levels:
        low, high = credible_interval(samples, q)
        coverage.append(float(np.mean((truth >= low) & (truth <= high))))
    gaps = np.abs(np.array(coverage) - np.array(levels))
    return {"levels": levels, "coverage": coverage, "error": float(gaps.mean()), "max_error": float(gaps.max())}


def psnr(estimate, truth, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(range^2 / MSE)`` over all entries."""
    mse = float(np.mean((np.asarray(estimate, np.float64) - np.asarray(truth, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))
