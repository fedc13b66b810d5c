"""LU-parameterised square matrices: ``W = P L (U + diag(sign * exp(log_scale)))``.

``P`` is a fixed permutation, ``L`` unit lower-triangular, ``U`` strictly upper-triangular. Then
``log|det W| = sum(log_scale)``: no determinant on the hot path, and the inverse
``W^-1 = (U + diag s)^-1 L^-1 P^T`` needs triangular solves on parameters only, which an
exporter can fold into a constant. Reference: Kingma & Dhariwal, Glow (arXiv:1807.03039), §3.2.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def lu_factor_numpy(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Factors ``w = p @ l @ u`` with partial pivoting (Doolittle); used once, at initialisation.

    Returns ``(p, l, u)``: ``p`` a permutation matrix, ``l`` unit lower-triangular, ``u`` upper.
    Raises ``ValueError`` if ``w`` is singular.
    """
    a = np.array(w, dtype=np.float64)
    n = a.shape[0]
    if a.shape != (n, n):
        raise ValueError(f"lu_factor_numpy expects a square matrix, got shape {a.shape}")
    perm = np.arange(n)
    lower = np.eye(n)
    for k in range(n):
        pivot = k + int(np.argmax(np.abs(a[k:, k])))
        if abs(a[pivot, k]) < 1e-12:
            raise ValueError("lu_factor_numpy: matrix is singular")
        if pivot != k:
            a[[k, pivot]] = a[[pivot, k]]
            perm[[k, pivot]] = perm[[pivot, k]]
            lower[[k, pivot], :k] = lower[[pivot, k], :k]
        lower[k + 1 :, k] = a[k + 1 :, k] / a[k, k]
        a[k + 1 :] -= np.outer(lower[k + 1 :, k], a[k])
    upper = np.triu(a)
    p = np.eye(n)[:, perm]  # w[perm] = l @ u  =>  w = p @ l @ u with p = I[:, perm]
    return p, lower, upper


def _triangles(lower_upper: tf.Tensor, sign):
    """``(L, U)`` from the packed parameters: ``L`` is the strictly lower triangle of
    ``lower_upper`` with a unit diagonal, ``U`` its strictly upper triangle with the diagonal
    ``sign * exp(diag(lower_upper))`` (the diagonal holds ``log|U_ii|``)."""
    log_scale = tf.linalg.diag_part(lower_upper)
    lower = tf.linalg.set_diag(tf.linalg.band_part(lower_upper, -1, 0), tf.ones_like(log_scale))
    upper = tf.linalg.set_diag(tf.linalg.band_part(lower_upper, 0, -1), sign * tf.exp(log_scale))
    return lower, upper


def pack_lower_upper(lower: np.ndarray, upper: np.ndarray, log_scale: np.ndarray) -> np.ndarray:
    """The packed ``n x n`` parameter of `lu_weight`: strictly lower triangle of ``lower``,
    strictly upper triangle of ``upper``, ``log_scale`` on the diagonal."""
    packed = np.tril(lower, -1) + np.triu(upper, 1)
    packed[np.diag_indices_from(packed)] = log_scale
    return packed


def lu_weight(perm, lower_upper, sign) -> tf.Tensor:
    """``W = P L U`` from the packed parameters (see `pack_lower_upper`)."""
    lower, upper = _triangles(lower_upper, sign)
    return perm @ lower @ upper


def lu_inverse_weight(perm, lower_upper, sign) -> tf.Tensor:
    """``W^-1 = U^-1 L^-1 P^T`` by two triangular solves on the parameters (never on data)."""
    lower, upper = _triangles(lower_upper, sign)
    lower_inv_pt = tf.linalg.triangular_solve(lower, tf.transpose(perm), lower=True)
    return tf.linalg.triangular_solve(upper, lower_inv_pt, lower=False)
