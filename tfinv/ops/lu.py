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


def _triangles(lower_raw: tf.Tensor, upper_raw: tf.Tensor, log_scale, sign):
    n = tf.shape(lower_raw)[0]
    eye = tf.eye(n, dtype=lower_raw.dtype)
    lower = tf.linalg.band_part(lower_raw, -1, 0) * (1.0 - eye) + eye
    upper = tf.linalg.band_part(upper_raw, 0, -1) * (1.0 - eye) + tf.linalg.diag(
        sign * tf.exp(log_scale)
    )
    return lower, upper


def lu_weight(perm, lower_raw, upper_raw, log_scale, sign) -> tf.Tensor:
    """``W = P L U`` from raw parameters (entries outside each triangle are ignored)."""
    lower, upper = _triangles(lower_raw, upper_raw, log_scale, sign)
    return perm @ lower @ upper


def lu_inverse_weight(perm, lower_raw, upper_raw, log_scale, sign) -> tf.Tensor:
    """``W^-1 = U^-1 L^-1 P^T`` by two triangular solves on the parameters (never on data)."""
    lower, upper = _triangles(lower_raw, upper_raw, log_scale, sign)
    lower_inv_pt = tf.linalg.triangular_solve(lower, tf.transpose(perm), lower=True)
    return tf.linalg.triangular_solve(upper, lower_inv_pt, lower=False)
