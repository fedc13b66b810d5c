"""Local spectral norms of a map's Jacobian by power iteration on Jacobian-vector products.

``sigma_max(J_f(x))`` is the largest singular value of the Jacobian of ``f`` at ``x``: the local
Lipschitz constant of ``f`` there. Power iteration on ``J^T J``: ``u = J v`` (forward mode,
`tf.autodiff.ForwardAccumulator`), ``w = J^T u`` (reverse mode, `tf.GradientTape`),
``v = w / |w|``; the estimate ``|J v|`` with ``|v| = 1`` never exceeds ``sigma_max`` and converges
to it at the rate ``(sigma_2 / sigma_1)^(2k)``. For a bijection, ``sigma_min(J_f(x)) =
1 / sigma_max(J_{f^-1}(f(x)))``, so the same iteration on the inverse gives the smallest singular
value and the local condition number ``sigma_max / sigma_min``.

Batched: ``f`` maps a batch ``(B, ...)`` to ``(B, ...)`` example by example (no coupling across the
batch, as for every tfinv layer outside data-dependent initialisation), so ``J`` is block
diagonal and one product serves every example; each example gets its own estimate.

References: Behrmann et al., "Understanding and Mitigating Exploding Inverses in Invertible
Neural Networks", arXiv:2006.09347, §3 (bi-Lipschitz bounds, local estimates on data);
Golub & Van Loan, "Matrix Computations", §8.2 (power iteration).
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

__all__ = ["jacobian_vector_product", "vector_jacobian_product", "local_spectral_norm"]

Map = Callable[[tf.Tensor], tf.Tensor]


def jacobian_vector_product(fn: Map, x: tf.Tensor, v: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(f(x), J_f(x) v)`` by forward-mode autodiff."""
    with tf.autodiff.ForwardAccumulator(primals=x, tangents=v) as accumulator:
        y = fn(x)
    jv = accumulator.jvp(y, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return y, jv


def vector_jacobian_product(fn: Map, x: tf.Tensor, u: tf.Tensor) -> tf.Tensor:
    """``J_f(x)^T u`` by reverse-mode autodiff (``u`` has the shape of ``f(x)``)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    return tape.gradient(y, x, output_gradients=u, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def _example_norm(t: tf.Tensor) -> tf.Tensor:
    """Euclidean norm of every example (all axes after the first), shape ``(B,)``."""
    flat = tf.reshape(t, [tf.shape(t)[0], -1])
    return tf.norm(flat, axis=1)


def _per_example(scale: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
    return t * tf.reshape(scale, [-1] + [1] * (len(t.shape) - 1))


#: From this many iterations on, the iteration step is traced into a graph once (tracing costs
#: about as much as four eager steps of a small flow).
COMPILE_FROM_ITERATIONS = 6


def local_spectral_norm(fn: Map, x: tf.Tensor, iterations: int = 20, seed: int = 0,
                        tolerance: float = 0.0, compiled: bool | None = None) -> tf.Tensor:
    """Estimates ``sigma_max(J_f(x_b))`` for every example ``x_b`` of the batch ``x``.

    Args:
        fn: ``f``, applied example by example to a batch.
        x: the points ``(B, ...)``.
        iterations: power iterations (each one Jacobian-vector and one vector-Jacobian product).
        seed: seed of the random start vectors.
        tolerance: stop early once no estimate changed by more than this relative amount.
        compiled: run the step as a traced `tf.function` (default: from
            `COMPILE_FROM_ITERATIONS` iterations on) or eagerly.

    Returns:
        ``(B,)`` estimates, each a lower bound of the exact value (a Rayleigh quotient), in ``x``'s
        dtype; non-finite where ``f`` or its Jacobian is.

    Raises:
        ValueError: ``iterations < 1`` or an empty batch.
    """
    if int(iterations) < 1:
        raise ValueError(f"local_spectral_norm needs iterations >= 1, got {iterations}")
    x = tf.convert_to_tensor(x)
    if x.shape[0] == 0:
        raise ValueError(f"local_spectral_norm needs at least one example, got shape {tuple(x.shape)}")
    v = tf.random.stateless_normal(tf.shape(x), seed=[int(seed), 1], dtype=x.dtype)
    v = _per_example(1.0 / _example_norm(v), v)
    expand = [-1] + [1] * (len(x.shape) - 1)

    def step(v):
        _, jv = jacobian_vector_product(fn, x, v)
        sigma = _example_norm(jv)
        w = vector_jacobian_product(fn, x, jv)
        w_norm = _example_norm(w)
        # a zero product (a constant map) keeps the previous direction
        safe = tf.where(w_norm > 0, w_norm, tf.ones_like(w_norm))
        return sigma, tf.where(tf.reshape(w_norm > 0, expand), _per_example(1.0 / safe, w), v)

    if compiled if compiled is not None else int(iterations) >= COMPILE_FROM_ITERATIONS:
        # one traced graph per call: a step then costs two graph runs instead of many eager ops
        step = tf.function(step, autograph=False, reduce_retracing=True)
    sigma = None
    for _ in range(int(iterations)):
        new_sigma, v = step(v)
        converged = sigma is not None and tolerance > 0 and bool(
            tf.reduce_all(tf.abs(new_sigma - sigma) <= tolerance * tf.abs(new_sigma)))
        sigma = new_sigma
        if converged:
            break
    final, _ = step(v)
    return tf.maximum(final, sigma)
