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

__all__ = ["skew_symmetric", "cayley", "skew_exponential", "householder", "orthogonal_matrix",
           "haar_matrix", "squeeze_matrix", "mix_channels", "haar_butterfly"]

#: the parameterisations of `orthogonal_matrix`
METHODS = ("cayley", "exp", "householder")


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


def skew_exponential(raw: tf.Tensor, terms: int = 12, squarings: int = 4) -> tf.Tensor:
    """Orthogonal ``Q = exp(A)`` (``det Q = +1``) with ``A = skew_symmetric(raw)``; ``raw = 0``
    gives ``I``.

    Scaling and squaring with a fixed-length Taylor series: ``exp(A) = (sum_{k<terms}
    (A / 2^s)^k / k!)^(2^s)`` with ``s = squarings``. Fixed, so it compiles under XLA and
    differentiates there (unlike ``tf.linalg.expm``'s gradient); for ``||A|| / 2^s <= 1`` the
    truncation error is below ``1 / terms!`` (~2e-9 at 12 terms).
    """
    a = skew_symmetric(raw) / (2.0**squarings)
    eye = tf.eye(tf.shape(a)[-1], batch_shape=tf.shape(a)[:-2], dtype=a.dtype)
    total, term = eye, eye
    for k in range(1, terms):
        term = tf.linalg.matmul(term, a) / float(k)
        total = total + term
    for _ in range(squarings):
        total = tf.linalg.matmul(total, total)
    return total


def householder(vectors: tf.Tensor, eps: float = 1e-6) -> tf.Tensor:
    """Orthogonal ``Q = H_1 H_2 ... H_m`` with reflections ``H_i = I - 2 v_i v_i^T / |v_i|^2``;
    ``vectors (..., m, n)`` holds the ``v_i`` as rows. ``m = n`` reflections reach every
    orthogonal ``n x n`` matrix; ``det Q = (-1)^m``. A vector with ``|v|^2 <= eps`` gives the
    identity instead of a reflection (so ``Q`` stays finite and orthogonal at ``v = 0``).
    """
    n = vectors.shape[-1]
    q = tf.eye(n, batch_shape=tf.shape(vectors)[:-2], dtype=vectors.dtype)
    for i in range(vectors.shape[-2]):
        v = vectors[..., i, :]
        norm2 = tf.reduce_sum(v * v, axis=-1, keepdims=True)
        live = norm2 > eps
        scale = tf.where(live, 2.0 / tf.where(live, norm2, tf.ones_like(norm2)), tf.zeros_like(norm2))
        # Q H = Q - (Q v) (2 v^T / |v|^2)
        qv = tf.linalg.matvec(q, v)
        q = q - (qv * scale)[..., :, None] * v[..., None, :]
    return q


def orthogonal_matrix(raw: tf.Tensor, method: str) -> tf.Tensor:
    """The orthogonal matrix of the parameters ``raw (..., n, n)`` under ``method``: ``"cayley"``
    (`cayley`), ``"exp"`` (`skew_exponential`) or ``"householder"`` (`householder`, the rows of
    ``raw`` as reflection vectors)."""
    if method == "cayley":
        return cayley(raw)
    if method == "exp":
        return skew_exponential(raw)
    if method == "householder":
        return householder(raw)
    raise ValueError(f"orthogonal parameterisation must be one of {METHODS}, got {method!r}")


def haar_matrix(factor: int) -> "np.ndarray":
    """The ``f^2 x f^2`` orthonormal Haar-like matrix of a ``f x f`` pixel block in row-major
    order: the Kronecker square of the ``f``-point Haar basis (``f = 2``: the 2x2 Haar wavelet
    transform of `haar_butterfly`, low-pass first; larger ``f``: the normalised Walsh-Hadamard /
    Haar basis from recursive averages and differences, ``f`` a power of 2)."""
    import numpy as np

    if factor < 2 or factor & (factor - 1):
        raise ValueError(f"a Haar initialisation needs a factor that is a power of 2, got {factor}")
    basis = np.array([[1.0]])
    while basis.shape[0] < factor:
        m = basis.shape[0]
        # Haar recursion: averages of the coarser basis, then differences of unit impulses
        top = np.kron(basis, [1.0, 1.0])
        bottom = np.kron(np.eye(m), [1.0, -1.0])
        basis = np.concatenate([top, bottom], axis=0)
        basis = basis / np.linalg.norm(basis, axis=1, keepdims=True)
    return np.kron(basis, basis)


def squeeze_matrix(factor: int) -> "np.ndarray":
    """The ``f^2 x f^2`` identity: pixel shuffle / space-to-depth, i-RevNet's fixed downsampling."""
    import numpy as np

    return np.eye(factor * factor)


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
