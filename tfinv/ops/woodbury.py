"""Low-rank updates of the identity, ``W = I_n + U V^T`` (``U, V`` of shape ``(n, r)``, ``r <= n``),
applied along one axis (or a group of adjacent axes, flattened) of a batched tensor.

* Woodbury identity: ``W^-1 = I_n - U (I_r + V^T U)^-1 V^T``.
* Sylvester's determinant identity: ``det W = det(I_r + V^T U)``.

Both reduce to the ``r x r`` "capacitance" matrix ``M = I_r + V^T U``, which depends on the
parameters only: ``M^-1`` (`tf.linalg.inv`) and ``log|det M|`` (through QR, because XLA rejects
``slogdet``/``det``/``lu``) are folded into constants at export. Applying ``W`` or ``W^-1`` to
data costs two thin matmuls, ``O(n r)`` per vector: linear in the size of the input.

``W`` is invertible iff ``M`` is. Nothing in the parameterisation forces that (as in the paper);
`assert_invertible` is the parameter-side check (exact ``cond(W)`` from a ``2r x 2r`` matrix).

Reference: Lu & Huang, "Woodbury Transformations for Deep Generative Flows", arXiv:2002.12229, §3.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import tensorflow as tf

#: Largest condition number of ``W = I + U V^T`` accepted by `assert_invertible`: beyond it a float32
#: inverse loses most of its digits (float32 machine epsilon is ~1.2e-7).
MAX_CONDITION = 1e6


def capacitance(u: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    """``M = I_r + V^T U``, the ``r x r`` matrix of both identities."""
    rank = u.shape[-1]
    return tf.eye(rank, dtype=u.dtype) + tf.matmul(v, u, transpose_a=True)


def log_abs_det(matrix: tf.Tensor) -> tf.Tensor:
    """``log|det A|`` of a small square matrix as ``sum(log|diag R|)`` of its QR factorisation.

    QR compiles and differentiates under XLA (``slogdet`` does not) and ``|det Q| = 1``.
    A singular ``A`` gives ``-inf``.
    """
    r = tf.linalg.qr(matrix, full_matrices=False)[1]
    return tf.reduce_sum(tf.math.log(tf.abs(tf.linalg.diag_part(r))))


def log_abs_det_update(u: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    """``log|det(I_n + U V^T)| = log|det(I_r + V^T U)|`` (Sylvester): an ``r x r`` computation."""
    return log_abs_det(capacitance(u, v))


def inverse_left_factor(u: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    """``U' = -U M^-1`` so that ``(I_n + U V^T)^-1 = I_n + U' V^T`` (Woodbury; parameters only)."""
    return -tf.matmul(u, tf.linalg.inv(capacitance(u, v)))


def apply_update(x: tf.Tensor, u: tf.Tensor, v: tf.Tensor, axes: Sequence[int]) -> tf.Tensor:
    """``x + U (V^T x)`` along the axes ``axes = (start, stop)`` of ``x``, flattened to length ``n``.

    Every axis of ``x`` after the first (the batch axis) must have a static size. Two thin
    matmuls with plain reshapes around them: no einsum, no transposes of the data.
    """
    start, stop = axes
    dims = [int(d) for d in x.shape[1:]]
    n = math.prod(dims[start - 1 : stop - 1])
    m = math.prod(dims[stop - 1 :])
    if m == 1:  # the updated axes are the last ones: rows of a 2-D view
        flat = tf.reshape(x, [-1, n])
        out = flat + tf.matmul(tf.matmul(flat, v), u, transpose_b=True)
    else:  # the updated axes sit in the middle: columns of an (A, n, m) view
        flat = tf.reshape(x, [-1, n, m])
        out = flat + tf.matmul(u, tf.matmul(v, flat, transpose_a=True))
    return tf.reshape(out, tf.shape(x))


def condition_number(u: np.ndarray, v: np.ndarray) -> float:
    """Condition number of ``W = I_n + U V^T`` (NumPy, float64), exactly, in ``O(n r^2)``.

    With ``Q`` an orthonormal basis of ``span[U, V]`` (``k <= 2r`` columns), ``W`` maps that span
    into itself as ``B = I_k + (Q^T U)(V^T Q)`` and is the identity on its complement, so the
    singular values of ``W`` are those of ``B`` plus ones. ``inf`` if ``W`` is singular.
    """
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    n = u.shape[0]
    q = np.linalg.qr(np.concatenate([u, v], axis=1))[0]
    singular = np.linalg.svd(np.eye(q.shape[1]) + (q.T @ u) @ (v.T @ q), compute_uv=False)
    largest, smallest = singular[0], singular[-1]
    if q.shape[1] < n:  # the complement contributes singular values equal to 1
        largest, smallest = max(largest, 1.0), min(smallest, 1.0)
    return float("inf") if smallest == 0 else float(largest / smallest)


def assert_invertible(u: np.ndarray, v: np.ndarray, what: str, max_condition: float = MAX_CONDITION) -> float:
    """Raises ``ValueError`` naming ``what`` if ``W = I + U V^T`` is singular or too ill-conditioned
    to invert in float32 (``cond(W) > max_condition``); returns ``cond(W)``."""
    cond = condition_number(u, v)
    if not cond <= max_condition:
        u64, v64 = np.asarray(u, np.float64), np.asarray(v, np.float64)
        det = np.linalg.det(np.eye(u64.shape[1]) + v64.T @ u64)
        raise ValueError(
            f"{what}: I + U V^T is not invertible in float32: its condition number is "
            f"{cond:.3g}, expected <= {max_condition:.0e} (det = det(I_r + V^T U) = {det:.3g}; "
            f"the weights drifted to a singular transform: re-initialise or lower the learning rate)"
        )
    return cond
