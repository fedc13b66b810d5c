"""Gaussianization math: monotone piecewise-linear marginal maps, entropy and multi-information
estimates, and the nearest orthogonal circular convolution.

Marginal map. For knots ``x_0 < ... < x_{K-1}`` and ``z_0 < ... < z_{K-1}`` the map
``g(x) = z_i + a_i (x - x_i)`` on segment ``i`` (``a_i = (z_{i+1} - z_i) / (x_{i+1} - x_i)``; the
first and last segments extend to -inf and +inf) is continuous, strictly increasing, exactly
invertible (``x = x_i + (z - z_i) / a_i`` on the same segment) and ``log g'(x) = log a_i``. The
segment is found by counting the interior knots below the input (no search, no gather: a
comparison, a sum and a one-hot selection, all standard ONNX and XLA ops), and the one-hot
selection picks each knot exactly (no cancellation between segments).

Fitted to data (`fit_marginal_knots`) with ``x_i`` the empirical quantiles at levels
``p_i = (i + 1/2) / K`` and ``z_i = Phi^-1(p_i)``, ``g`` Gaussianizes the margin: the density
estimate it implies is ``phi(g(x)) g'(x)`` and its CDF ``Phi(g(x))`` interpolates the empirical
CDF at the knots, with Gaussian tails beyond them.

Entropy: the histogram (plug-in) estimate with the Miller-Madow bias correction
``(m - 1) / (2N)`` (``m`` occupied bins), in nats.

References: Laparra, Camps-Valls & Malo, "Iterative Gaussianization: from ICA to Random
Rotations", IEEE TNN 2011 (arXiv:1602.00229); Miller (1955), "Note on the bias of information
estimates"; Higham (1986), "Computing the polar decomposition" (nearest orthogonal matrix).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

__all__ = ["piecewise_linear", "fit_marginal_knots", "histogram_entropy", "gaussian_entropy",
           "gaussian_multi_information", "nearest_orthogonal_circular_kernel", "centred_to_cyclic_kernel"]


def piecewise_linear(x: tf.Tensor, knots_in: tf.Tensor, knots_out: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(g(x), log g'(x))`` elementwise, knots ``(..., K)`` broadcasting against ``x[..., None]``
    (see the module docstring); swap the knots for the inverse."""
    interior = knots_in[..., 1:-1]
    segment = tf.reduce_sum(tf.cast(x[..., None] > interior, tf.int32), axis=-1)
    pick = tf.one_hot(segment, knots_in.shape[-1] - 1, dtype=x.dtype)
    slopes = (knots_out[..., 1:] - knots_out[..., :-1]) / (knots_in[..., 1:] - knots_in[..., :-1])
    start_in = tf.reduce_sum(pick * knots_in[..., :-1], axis=-1)
    start_out = tf.reduce_sum(pick * knots_out[..., :-1], axis=-1)
    slope = tf.reduce_sum(pick * slopes, axis=-1)
    return start_out + slope * (x - start_in), tf.math.log(slope)


def fit_marginal_knots(samples: np.ndarray, num_knots: int, min_gap: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """``(knots_in, knots_out)``, each ``(D, K)``, Gaussianizing each column of ``samples (N, D)``.

    ``knots_in`` are the empirical quantiles at ``p_i = (i + 1/2) / K``, pushed apart to at least
    ``min_gap`` times the column's spread (a column with ties or no spread stays invertible);
    ``knots_out = Phi^-1(p_i)``.
    """
    samples = np.asarray(samples, np.float64)
    if samples.ndim != 2 or samples.shape[0] < 2:
        raise ValueError(f"fitting marginals needs samples (N >= 2, D), got shape {samples.shape}")
    if num_knots < 3:
        raise ValueError(f"a piecewise-linear marginal needs num_knots >= 3, got {num_knots}")
    levels = (np.arange(num_knots) + 0.5) / num_knots
    knots = np.quantile(samples, levels, axis=0).T  # (D, K)
    spread = np.maximum(samples.std(axis=0), 1e-3)[:, None]
    gaps = np.maximum(np.diff(knots, axis=1), min_gap * spread)
    knots = np.concatenate([knots[:, :1], knots[:, :1] + np.cumsum(gaps, axis=1)], axis=1)
    out = tf.math.ndtri(tf.constant(levels, tf.float64)).numpy()
    return knots, np.broadcast_to(out, knots.shape).copy()


def histogram_entropy(samples: np.ndarray, bins: int | None = None) -> np.ndarray:
    """Differential entropy (nats) of each column of ``samples (N, D)``: histogram plug-in estimate
    with ``bins`` equal-width bins (default ``ceil(sqrt(N))``) plus the Miller-Madow correction."""
    samples = np.asarray(samples, np.float64)
    n = samples.shape[0]
    bins = int(bins or math.ceil(math.sqrt(n)))
    out = np.empty(samples.shape[1])
    for d in range(samples.shape[1]):
        counts, edges = np.histogram(samples[:, d], bins=bins)
        width = edges[1] - edges[0]
        p = counts[counts > 0] / n
        out[d] = -np.sum(p * np.log(p)) + math.log(width) + (len(p) - 1) / (2.0 * n)
    return out


def gaussian_entropy(variance: float | np.ndarray = 1.0) -> np.ndarray:
    """``1/2 log(2 pi e variance)``: the entropy of a normal variable, nats."""
    return 0.5 * np.log(2.0 * math.pi * math.e * np.asarray(variance, np.float64))


def gaussian_multi_information(covariance: np.ndarray) -> float:
    """The closed form ``I = -1/2 log det(R)`` (nats) of a Gaussian with covariance ``covariance``,
    ``R`` its correlation matrix."""
    covariance = np.asarray(covariance, np.float64)
    std = np.sqrt(np.diag(covariance))
    return float(-0.5 * np.linalg.slogdet(covariance / np.outer(std, std))[1])


def centred_to_cyclic_kernel(kernel: np.ndarray, height: int, width: int) -> np.ndarray:
    """A ``(k, k, C_in, C_out)`` kernel with centred taps (offsets ``i - (k - 1) // 2``, as a
    ``SAME`` convolution) as the equivalent ``(H, W, C_in, C_out)`` kernel of taps ``0 .. H-1``
    on an ``H x W`` circular image (taps that wrap onto the same pixel add up)."""
    kh, kw = kernel.shape[:2]
    full = np.zeros((height, width) + kernel.shape[2:], np.float64)
    for i in range(kh):
        for j in range(kw):
            full[(i - (kh - 1) // 2) % height, (j - (kw - 1) // 2) % width] += kernel[i, j]
    return full


def nearest_orthogonal_circular_kernel(kernel: np.ndarray) -> tuple[np.ndarray, float]:
    """The orthogonal circular convolution nearest (Frobenius norm of the whole ``HWC x HWC``
    matrix) to the one of ``kernel`` (``(H, W, C, C)``, cyclic taps, an ``H x W`` image), and
    ``max |sigma - 1|`` over the singular values of the original (its distance from orthonormal).

    The DFT block-diagonalises both, so the nearest one replaces every frequency block ``B`` by
    its polar factor ``U V^H`` (``B = U S V^H``); conjugate blocks stay conjugate, so the kernel
    stays real. The result generally has full ``H x W`` support.
    """
    from tfinv.ops.eco import block_spectrum

    height, width = kernel.shape[:2]
    blocks = block_spectrum(kernel)  # (H, W, C_out, C_in)
    u, s, vh = np.linalg.svd(blocks)
    polar = u @ vh
    theta = 2.0 * np.pi * (np.arange(height)[:, None, None, None] * np.arange(height)[None, None, :, None] / height
                           + np.arange(width)[None, :, None, None] * np.arange(width)[None, None, None, :] / width)
    projected = np.einsum("uvst,uvoi->stio", np.exp(-1j * theta), polar) / (height * width)
    return np.real(projected), float(np.abs(s - 1.0).max())
