"""Gaussianization math: monotone piecewise-linear marginal maps, entropy and multi-information
estimates, and the nearest orthogonal circular convolution.

Marginal map. For knots ``x_0 < ... < x_{K-1}`` and ``z_0 < ... < z_{K-1}`` the map
``g(x) = z_i + a_i (x - x_i)`` on segment ``i`` (``a_i = (z_{i+1} - z_i) / (x_{i+1} - x_i)``; the
first and last segments extend to -inf and +inf) is continuous, strictly increasing, exactly
invertible (``x = x_i + (z - z_i) / a_i`` on the same segment) and ``log g'(x) = log a_i``. The
segment is found by counting the interior knots below the input (no search, no gather: a
comparison, a sum and a one-hot selection, all standard ONNX and XLA ops), and the one-hot
selection picks each knot exactly (no cancellation between segments).

Fitted to data (`fit_marginal_knots`) with ``z_i`` evenly spaced over the range a sample of
``N`` normal values covers (``|z| <= Phi^-1(1 - 1/(2N))``) and ``x_i`` the empirical quantiles
at the levels ``p_i = Phi(z_i)``, ``g`` Gaussianizes the margin: the density
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

    Inside: ``K - 2`` values ``knots_out`` evenly spaced from ``Phi^-1(1 / (2N))`` to
    ``-Phi^-1(1 / (2N))`` and ``knots_in`` the empirical quantiles at the levels
    ``p_i = Phi(knots_out_i)``, pushed apart to at least ``min_gap`` times the column's spread (a
    column with ties or no spread stays invertible). Outside: one knot on each side, a knot range
    away, on the line of the range's mean slope, so the tails are Gaussian with that slope.
    """
    samples = np.asarray(samples, np.float64)
    if samples.ndim != 2 or samples.shape[0] < 2:
        raise ValueError(f"fitting marginals needs samples (N >= 2, D), got shape {samples.shape}")
    if num_knots < 4:
        raise ValueError(f"a fitted piecewise-linear marginal needs num_knots >= 4, got {num_knots}")
    # output knots evenly spaced in z up to the most extreme sample's level 1/(2N): every fitted
    # sample lands between knots (a rare outlier gets its own segment, not a steep tail's far end)
    edge = float(tf.math.ndtri(tf.constant(0.5 / samples.shape[0], tf.float64)))
    out = np.linspace(edge, -edge, num_knots - 2)
    levels = 0.5 * tf.math.erfc(-tf.constant(out) / math.sqrt(2.0)).numpy()  # Phi
    knots = np.quantile(samples, levels, axis=0).T  # (D, K)
    spread = np.maximum(samples.std(axis=0), 1e-3)[:, None]
    gaps = np.maximum(np.diff(knots, axis=1), min_gap * spread)
    knots = np.concatenate([knots[:, :1], knots[:, :1] + np.cumsum(gaps, axis=1)], axis=1)
    # tails: one more knot a knot-range away on each side, at the mean slope of the range (the
    # end segments' slopes can be steep, and far test points would land at huge |z|)
    width = knots[:, -1:] - knots[:, :1]
    tail = (out[-1] - out[0]) / width
    knots = np.concatenate([knots[:, :1] - width, knots, knots[:, -1:] + width], axis=1)
    out = np.concatenate([np.broadcast_to(out[0], tail.shape) - tail * width,
                          np.broadcast_to(out, (len(knots), len(out))),
                          np.broadcast_to(out[-1], tail.shape) + tail * width], axis=1)
    return knots, out


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
