"""Orthogonal channel mixing: the Cayley transform and the 2x2 Haar wavelet transform.

Cayley transform: for a skew-symmetric ``A`` (``A^T = -A``),

    Q = (I - A)(I + A)^-1 = (I + A)^-1 (I - A)

is orthogonal with ``det Q = +1`` (the factors commute; ``I + A`` is always invertible since the
eigenvalues of ``A`` are imaginary). Every rotation without eigenvalue -1 is reached. ``Q`` is a
function of the parameters only, so an exporter folds it (and ``Q^T = Q^-1``) into a constant;
the solve compiles under XLA and is differentiable, unlike ``expm``'s gradient.

Haar transform of a 2x2 block ``[[a, b], [c, d]]`` (orthonormal: the matrix is symmetric and
orthogonal, hence its own inverse)::

    low        = (a + b + c + d) / 2
    horizontal = (a - b + c - d) / 2     # differences along W
    vertical   = (a + b - c - d) / 2     # differences along H
    diagonal   = (a - b - c + d) / 2

References: Cayley (1846); Haar (1910); Ardizzone et al., "Guided Image Generation with
Conditional Invertible Neural Networks", arXiv:1907.02392 (Haar downsampling in INNs).
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["skew_symmetric", "cayley", "mix_channels", "haar_butterfly"]


def skew_symmetric(raw: tf.Tensor) -> tf.Tensor:
    """``(raw - raw^T) / 2``: every entry of the square ``raw`` matters, and the result is skew."""
    return 0.5 * (raw - tf.linalg.matrix_transpose(raw))


def cayley(raw: tf.Tensor) -> tf.Tensor:
    """Orthogonal ``Q = (I + A)^-1 (I - A)`` with ``A = skew_symmetric(raw)``; ``raw = 0`` gives ``I``.

    One linear solve on parameters only (an exporter folds ``Q`` into a constant).
    """
    a = skew_symmetric(raw)
    eye = tf.eye(tf.shape(a)[-1], dtype=a.dtype)
    return tf.linalg.solve(eye + a, eye - a)


def mix_channels(x: tf.Tensor, matrix: tf.Tensor) -> tf.Tensor:
    """``y[..., i] = sum_j matrix[i, j] x[..., j]`` at every pixel of ``(B, H, W, C)``: a 1x1 conv."""
    kernel = tf.reshape(tf.transpose(matrix), [1, 1, matrix.shape[1], matrix.shape[0]])
    return tf.nn.conv2d(x, kernel, strides=1, padding="VALID")


def haar_butterfly(a, b, c, d):
    """The orthonormal 4-point Haar transform of the block entries (see the module docstring).

    Returns ``(low, horizontal, vertical, diagonal)``. The transform is its own inverse: passing
    the four sub-bands back returns ``(a, b, c, d)``.
    """
    sum_top, diff_top = a + b, a - b
    sum_bottom, diff_bottom = c + d, c - d
    return (
        0.5 * (sum_top + sum_bottom),
        0.5 * (diff_top + diff_bottom),
        0.5 * (sum_top - sum_bottom),
        0.5 * (diff_top - diff_bottom),
    )
