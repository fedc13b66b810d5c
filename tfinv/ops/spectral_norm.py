"""Spectral norms of dense and convolutional kernels by power iteration, and the rescaling that
bounds them (spectral normalisation).

A dense kernel ``W`` of shape ``(n_in, n_out)`` acts as ``x -> x W``; a convolution kernel of shape
``(k, k, c_in, c_out)`` acts as the linear operator ``x -> conv2d(x, W)`` ("SAME" padding, stride 1)
on images of one fixed size ``H x W``: its spectral norm is that operator's, not the kernel
matrix's (Gouk et al., arXiv:1804.04368; the convention of i-ResNet, arXiv:1811.00995, §3).

Power iteration alternates ``v <- normalise(A^T u)``, ``u <- normalise(A v)``; then
``sigma = <u, A v>`` approaches ``||A||_2`` from below. The rescaled kernel
``W / max(1, sigma / c)`` has (estimated) norm ``<= c``.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = [
    "check_coefficient",
    "normalise",
    "dense_apply",
    "dense_adjoint",
    "conv_apply",
    "conv_adjoint",
    "power_iteration",
    "dense_power_iteration",
    "conv_power_iteration",
    "rescale",
]

_EPS = 1e-12


def check_coefficient(coefficient: float, owner: str) -> float:
    """Returns ``float(coefficient)`` if it lies in the open interval (0, 1); else ``ValueError``."""
    c = float(coefficient)
    if not 0.0 < c < 1.0:
        raise ValueError(
            f"{owner} needs a Lipschitz coefficient c with 0 < c < 1 (so that x + g(x) is "
            f"invertible), got {coefficient}"
        )
    return c


def normalise(v: tf.Tensor) -> tf.Tensor:
    """``v / ||v||`` over all axes (one vector), safe at 0."""
    return v / (tf.sqrt(tf.reduce_sum(tf.square(v))) + _EPS)


def dense_apply(kernel: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    return tf.matmul(v, kernel)


def dense_adjoint(kernel: tf.Tensor, u: tf.Tensor) -> tf.Tensor:
    return tf.matmul(u, kernel, transpose_b=True)


def conv_apply(kernel: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
    """``conv2d(v, kernel)`` with "SAME" zero padding and stride 1; ``v`` is ``(N, H, W, C_in)``."""
    return tf.nn.conv2d(v, kernel, strides=1, padding="SAME")


def conv_adjoint(kernel: tf.Tensor, u: tf.Tensor) -> tf.Tensor:
    """The adjoint of `conv_apply` on ``u`` of shape ``(N, H, W, C_out)``: a transposed convolution."""
    shape = tf.concat([tf.shape(u)[:-1], tf.shape(kernel)[2:3]], 0)
    return tf.nn.conv2d_transpose(u, kernel, shape, strides=1, padding="SAME")


def power_iteration(apply, adjoint, u: tf.Tensor, v: tf.Tensor, iterations: int):
    """``iterations`` power-iteration steps for ``A`` given by ``apply``/``adjoint``.

    Returns ``(u, v, sigma)`` with unit ``u`` (output space), unit ``v`` (input space) and
    ``sigma = <u, A v>``. Without a gradient through ``u`` and ``v`` (stop them), the gradient of
    ``sigma`` w.r.t. the kernel is ``u v^T``, the gradient of the top singular value.
    """
    for _ in range(int(iterations)):
        v = normalise(adjoint(u))
        u = normalise(apply(v))
    sigma = tf.reduce_sum(u * apply(v))
    return u, v, sigma


def dense_power_iteration(kernel: tf.Tensor, u: tf.Tensor, v: tf.Tensor, iterations: int):
    """`power_iteration` for ``x -> x W``; ``u`` is ``(1, n_out)``, ``v`` is ``(1, n_in)``."""
    return power_iteration(lambda t: dense_apply(kernel, t), lambda t: dense_adjoint(kernel, t),
                           u, v, iterations)


def conv_power_iteration(kernel: tf.Tensor, u: tf.Tensor, v: tf.Tensor, iterations: int):
    """`power_iteration` for the convolution on images of ``v``'s size.

    ``u`` is ``(1, H, W, C_out)`` and ``v`` is ``(1, H, W, C_in)``.
    """
    return power_iteration(lambda t: conv_apply(kernel, t), lambda t: conv_adjoint(kernel, t),
                           u, v, iterations)


def rescale(kernel: tf.Tensor, sigma: tf.Tensor, coefficient: float) -> tf.Tensor:
    """``kernel / max(1, sigma / c)``: untouched when already within ``c``, else scaled to ``c``."""
    return kernel / tf.maximum(tf.ones_like(sigma), sigma / coefficient)
