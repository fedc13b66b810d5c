"""Math of invertible residual maps ``y = x + g(x)`` with ``Lip(g) <= c < 1``.

Inverse by fixed-point iteration (Banach): ``x_{k+1} = y - g(x_k)``, ``x_0 = y``; the error after a
step of size ``d`` is at most ``c d / (1 - c)`` (i-ResNet, arXiv:1811.00995, Alg. 1).

Log-det by the power series ``log det(I + J) = sum_{k>=1} (-1)^{k+1} tr(J^k) / k`` (converges for
``||J|| < 1``) with Hutchinson's estimator ``tr(A) = E[v^T A v]`` (``E[v v^T] = I``). Truncated at
``n`` terms it is biased (i-ResNet, §3.1); with a random number of terms ``N`` and every term
reweighted by ``1 / P(N >= k)`` it is unbiased — the Russian-roulette estimator of Residual Flows
(arXiv:1906.02735, §3.1). Here ``N = n_exact + M`` with ``M`` geometric, ``P(M >= m) = q^m``.

Neumann-series gradient (Residual Flows, §3.2): ``d log det(I + J) = tr((I + J)^{-1} dJ)
= sum_{m>=0} (-1)^m tr(J^m dJ)``. With ``u = sum_{k=1}^{N} (-1)^{k-1} J^{k-1} v / P(N >= k)``
computed without a gradient, the surrogate ``<v, J u>`` (gradient only through ``J``) has the
unbiased gradient ``E[v^T dJ u]``; the ``N`` products building ``u`` keep no graph, so memory does
not grow with ``N``. The paper uses vector-Jacobian products (``v^T J^k``); here every product is a
Jacobian-vector product ``J w`` (the trace is invariant under the transposition), which an
explicitly linearised ``g`` gives by forward-mode arithmetic.

Probes have shape ``(P, B, *event)``: ``P`` probe vectors for each of the ``B`` examples; a
Jacobian-vector product ``jvp`` maps such a tensor to one of the same shape.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

__all__ = [
    "fixed_point_inverse",
    "probe_inner",
    "basis_probes",
    "power_series_log_det",
    "roulette_terms",
    "dense_log_det",
]

Jvp = Callable[[tf.Tensor], tf.Tensor]


def fixed_point_inverse(g: Callable[[tf.Tensor], tf.Tensor], y: tf.Tensor, tolerance: float,
                        max_iterations: int):
    """Solves ``x + g(x) = y`` by ``x <- y - g(x)`` from ``x = y`` (a `tf.while_loop`: ONNX ``Loop``).

    Stops when the step ``max|x_{k+1} - x_k|`` is at most ``tolerance * max(max|y|, 1)``, or after
    ``max_iterations`` steps. Returns ``(x, iterations, step)`` with ``step`` relative to that
    scale; converged iff ``step <= tolerance`` (a NaN step is never converged).
    """
    scale = tf.maximum(tf.reduce_max(tf.abs(y)), tf.ones([], y.dtype))
    limit = tf.cast(tolerance, y.dtype) * scale

    def cond(k, x, step):
        return tf.logical_and(k < max_iterations, tf.logical_not(step <= limit))

    def body(k, x, step):
        x_next = y - g(x)
        return k + 1, x_next, tf.reduce_max(tf.abs(x_next - x))

    inf = tf.constant(np.inf, y.dtype)
    k, x, step = tf.while_loop(cond, body, (tf.constant(0), y, inf), maximum_iterations=max_iterations)
    return x, k, step / scale


def probe_inner(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """``<a, b>`` over the event axes of ``(P, B, *event)`` tensors: shape ``(P, B)``."""
    return tf.reduce_sum(tf.reshape(a * b, tf.concat([tf.shape(a)[:2], [-1]], 0)), axis=-1)


def basis_probes(batch: tf.Tensor, event_shape: tuple[int, ...], dtype) -> tf.Tensor:
    """The ``D`` scaled basis vectors ``sqrt(D) e_i`` as probes ``(D, B, *event)``.

    Uniform over them, ``E[v v^T] = I`` (a valid Hutchinson distribution), and the mean over all
    ``D`` is exactly ``tr A`` — the exact trace at the cost of ``D`` products per term."""
    d = int(np.prod(event_shape))
    eye = tf.reshape(tf.eye(d, dtype=dtype) * np.sqrt(d), (d, 1) + tuple(event_shape))
    return tf.tile(eye, tf.concat([[1, batch], tf.ones([len(event_shape)], tf.int32)], 0))


def roulette_terms(n_exact: int, survival: float, seed=None) -> tf.Tensor:
    """``N = n_exact + M``, ``P(M >= m) = survival^m`` (one draw, shared by the batch)."""
    if seed is None:
        uniform = tf.random.uniform([], dtype=tf.float32)
    else:
        uniform = tf.random.stateless_uniform([], seed=seed, dtype=tf.float32)
    extra = tf.floor(tf.math.log(1.0 - uniform) / np.log(survival))
    return n_exact + tf.cast(extra, tf.int32)


def _weight(k, n_exact: int, survival: float, dtype):
    """``1 / P(N >= k)``: 1 for the first ``n_exact`` terms, then ``survival^-(k - n_exact)``."""
    if survival >= 1.0:
        return tf.ones([], dtype)
    over = tf.cast(tf.maximum(k - n_exact, 0), dtype)
    return tf.exp(-over * np.log(survival))


SERIES = ("residual", "cayley")


def _coefficient(k, series: str, dtype):
    """``a_k`` of ``sum_k a_k tr(J^k)``: ``log det(I + J)`` (``"residual"``: ``(-1)^{k+1} / k``) or
    ``log det(I - J) - log det(I + J)`` (``"cayley"``: ``-2 / k`` for odd ``k``, 0 for even)."""
    kf = tf.cast(k, dtype)
    odd = tf.math.floormod(kf, 2.0)  # 1 for odd k
    if series == "residual":
        return (2.0 * odd - 1.0) / kf
    return -2.0 * odd / kf


def power_series_log_det(jvp: Jvp, probes: tf.Tensor, num_terms, n_exact: int = 0,
                         survival: float = 1.0, neumann: bool = False, series: str = "residual"):
    """Hutchinson estimate of ``log det(I + J)`` per example, shape ``(B,)`` (``series="cayley"``:
    of ``log det(I - J) - log det(I + J)``, the monotone block's).

    ``num_terms``: a Python int (truncated series) or an int tensor (a Russian-roulette draw);
    either way the terms run in a ``tf.while_loop``. Terms ``k > n_exact`` are weighted by ``1 / P(N >= k)``
    (``survival = 1``: plain truncation).

    ``neumann=False`` returns ``(estimate, None)`` with the gradient through every product.
    ``neumann=True`` computes the series without a gradient and returns ``(estimate, u)``, ``u``
    the stopped Neumann vector; the caller adds ``<v, J u>`` with a gradient (see module doc).
    """
    dtype = probes.dtype
    if neumann:
        probes = tf.stop_gradient(probes)

    if series not in SERIES:
        raise ValueError(f"series must be one of {SERIES}, got {series!r}")

    def step(k, w, estimate, u):
        weight = _weight(k, n_exact, survival, dtype) * _coefficient(k, series, dtype)
        u = u + tf.cast(k, dtype) * weight * w  # d(a_k tr J^k) = k a_k tr(J^{k-1} dJ)
        w = jvp(w)
        estimate = estimate + weight * probe_inner(probes, w)
        return k + 1, w, estimate, u

    zero_estimate = tf.zeros(tf.shape(probes)[:2], dtype)
    state = (tf.constant(1), probes, zero_estimate, tf.zeros_like(probes))
    # A loop, not an unrolled chain: graphs (XLA, ONNX ``Loop``) stay small for any ``num_terms``.
    cap = int(num_terms) if isinstance(num_terms, (int, np.integer)) else None
    state = tf.while_loop(lambda k, *rest: k <= num_terms, step, state, maximum_iterations=cap)
    _, _, estimate, u = state
    estimate = tf.reduce_mean(estimate, axis=0)
    if neumann:
        return tf.stop_gradient(estimate), tf.stop_gradient(u)
    return estimate, None


def dense_log_det(g: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor, series: str = "residual") -> tf.Tensor:
    """Exact ``log|det(I + J_g(x))|`` per example from the dense autodiff Jacobian (float64 slogdet);
    ``series="cayley"``: ``log|det(I - J_g(x))| - log|det(I + J_g(x))|``.

    For tests and small inputs only: ``D`` backward passes and an ``O(D^3)`` factorisation, and
    slogdet neither compiles with XLA nor exports to ONNX.
    """
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = g(x)
        y_flat = tf.reshape(y, [tf.shape(y)[0], -1])
    jac = tape.batch_jacobian(y_flat, x)
    d = int(y_flat.shape[1])
    jac = tf.reshape(tf.cast(jac, tf.float64), [-1, d, d])
    eye = tf.eye(d, dtype=tf.float64)
    _, log_abs = tf.linalg.slogdet(eye + jac)
    if series == "cayley":  # log|det(I - J)| - log|det(I + J)|
        log_abs = tf.linalg.slogdet(eye - jac)[1] - log_abs
    return tf.cast(log_abs, x.dtype)
