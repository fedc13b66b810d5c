"""The convolution exponential: ``exp(M) x`` for a zero-padded ('SAME') ``k x k`` convolution ``M``.

``M`` is the linear map ``x -> conv2d(x, kernel, padding='SAME')`` on images ``(B, H, W, C)``
with an odd ``k`` (so 'SAME' pads ``k // 2`` zeros on every side). Its exponential is never formed
as a matrix; it is applied to ``x`` as a power series with a **fixed** number of terms::

    exp(M) x = sum_{n=0}^{K} M^n x / n!,     M^n x / n! = M (M^{n-1} x / (n-1)!) / n

K convolutions, unrolled: XLA differentiates it (``tf.linalg.expm``'s gradient does not compile)
and tf2onnx turns it into K ``Conv`` nodes.

Truncation error. If ``||M||_2 <= b`` the remainder obeys
``||sum_{n>K} M^n x / n!|| <= R(b, K) ||x||`` with
``R(b, K) = b^{K+1} / (K+1)! / (1 - b / (K+2))``; `required_terms` picks the smallest K with
``R <= 2^-24 = 6.0e-8`` (float32's unit round-off): b=0.25 -> K=6 (R=1.3e-8), b=0.5 -> K=8
(R=5.7e-9), b=0.75 -> K=9, b=1 -> K=10 (R=2.7e-8), b=2 -> K=14 (R=2.9e-8), b=3 -> K=18 (R=1.1e-8).

Norm control (the paper's reparameterisation): `spectral_norm_estimate` runs power iteration on
the convolution operator itself (``M^T M`` on an ``H x W`` image; ``M^T`` is the convolution with
the kernel flipped in space and transposed in channels), and `bounded_kernel` rescales
``kernel <- kernel * b / max(sigma, b)`` (i.e. ``* min(1, b / sigma)``). Power iteration
approaches ``sigma`` from below, so the layer adds a safety margin when choosing K.

Trace: at every pixel the diagonal of ``M`` is the centre tap's channel diagonal (zero padding
never moves the centre tap off the image), so ``tr(M) = H * W * sum_c kernel[k//2, k//2, c, c]``
and ``log|det exp(M)| = tr(M)``.

References: Hoogeboom, Garcia Satorras, Tomczak & Welling, "The Convolution Exponential and
Generalized Sylvester Flows", NeurIPS 2020, arXiv:2006.01910, §3; power iteration for
convolutions: Miyato et al., arXiv:1802.05957; Gouk et al., arXiv:1804.04368.
"""

from __future__ import annotations

import math

import tensorflow as tf

__all__ = [
    "bounded_kernel",
    "conv",
    "conv_exp",
    "conv_exp_until",
    "conv_trace",
    "conv_transpose",
    "remainder_bound",
    "required_terms",
    "spectral_norm_estimate",
]

_FLOAT32_ROUNDOFF = 2.0**-24


def _check_kernel(kernel) -> None:
    shape = tuple(kernel.shape)
    if len(shape) != 4 or shape[0] != shape[1] or shape[0] % 2 == 0 or shape[2] != shape[3]:
        raise ValueError(f"conv_exp needs a (k, k, C, C) kernel with odd k, got shape {shape}")


def conv(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """``M x``: zero-padded ('SAME') stride-1 convolution, ``kernel`` of shape ``(k, k, C, C)``."""
    return tf.nn.conv2d(x, kernel, strides=1, padding="SAME")


def conv_transpose(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """``M^T x``: the adjoint of `conv` is the convolution with the kernel flipped in both spatial
    axes and its channel axes swapped (exact for odd ``k`` and 'SAME' zero padding)."""
    return conv(x, tf.transpose(kernel[::-1, ::-1], [0, 1, 3, 2]))


def conv_exp(x: tf.Tensor, kernel: tf.Tensor, terms: int) -> tf.Tensor:
    """``sum_{n=0}^{terms} M^n x / n!`` with a fixed, unrolled number of terms.

    ``exp(-M) x`` is ``conv_exp(x, -kernel, terms)``.
    """
    _check_kernel(kernel)
    term = x
    total = x
    for n in range(1, int(terms) + 1):
        term = conv(term, kernel) / float(n)
        total = total + term
    return total


def conv_exp_until(x: tf.Tensor, kernel: tf.Tensor, tolerance: float = 1e-7,
                   max_terms: int = 40) -> tf.Tensor:
    """``exp(M) x`` summed until the newest term is below ``tolerance * max|x|`` (a
    ``tf.while_loop``; converts to an ONNX ``Loop``). Use `conv_exp` under XLA training."""
    _check_kernel(kernel)
    scale = tf.maximum(tf.reduce_max(tf.abs(x)), tf.constant(1e-30, x.dtype))

    def cond(n, term, total):
        return tf.logical_and(n <= max_terms, tf.reduce_max(tf.abs(term)) > tolerance * scale)

    def body(n, term, total):
        term = conv(term, kernel) / tf.cast(n, x.dtype)
        return n + 1, term, total + term

    _, _, total = tf.while_loop(cond, body, (tf.constant(1), x, x))
    return total


def conv_trace(kernel: tf.Tensor, height, width) -> tf.Tensor:
    """``tr(M) = H * W * sum_c kernel[k//2, k//2, c, c]`` ('SAME' zero padding, odd ``k``)."""
    c = kernel.shape[0] // 2
    pixels = tf.cast(height, kernel.dtype) * tf.cast(width, kernel.dtype)
    return pixels * tf.linalg.trace(kernel[c, c])


def remainder_bound(bound: float, terms: int) -> float:
    """``R(b, K) = b^{K+1} / (K+1)! / (1 - b / (K+2))`` bounds ``||exp(M) - sum_{n<=K}|| `` for
    ``||M|| <= b`` (a geometric tail of ratios ``b / (n+1) <= b / (K+2)``; needs ``b < K+2``)."""
    if bound >= terms + 2:
        return math.inf
    return bound ** (terms + 1) / math.factorial(terms + 1) / (1.0 - bound / (terms + 2))


def required_terms(bound: float, tolerance: float = _FLOAT32_ROUNDOFF, max_terms: int = 60) -> int:
    """Smallest ``K`` with ``remainder_bound(bound, K) <= tolerance``."""
    for k in range(1, max_terms + 1):
        if remainder_bound(bound, k) <= tolerance:
            return k
    raise ValueError(f"no K <= {max_terms} reaches a truncation error {tolerance:.1e} for "
                     f"spectral bound {bound}")


def spectral_norm_estimate(kernel: tf.Tensor, start: tf.Tensor, iterations: int) -> tf.Tensor:
    """``sigma ~ ||M||_2`` on images of ``start``'s shape ``(1, H, W, C)`` by power iteration.

    ``v <- M^T M v / ||.||`` for ``iterations`` steps from ``start``, then ``sigma = ||M v||``.
    The vectors are treated as constants for the gradient (as in spectral normalisation), so
    ``d sigma / d kernel = u v^T`` with ``u = M v / ||M v||``. Power iteration approaches
    ``||M||`` from below.
    """
    v = tf.stop_gradient(start)
    kernel_const = tf.stop_gradient(kernel)
    v = v / tf.maximum(tf.norm(v), 1e-12)
    for _ in range(int(iterations)):
        v = conv_transpose(conv(v, kernel_const), kernel_const)
        v = v / tf.maximum(tf.norm(v), 1e-12)
    v = tf.stop_gradient(v)
    return tf.norm(conv(v, kernel))


def bounded_kernel(kernel: tf.Tensor, start: tf.Tensor, bound: float, iterations: int):
    """``(kernel * b / max(sigma, b), sigma)``: the kernel rescaled so that ``||M|| <= b``."""
    sigma = spectral_norm_estimate(kernel, start, iterations)
    bound = tf.constant(bound, kernel.dtype)
    return kernel * (bound / tf.maximum(sigma, bound)), sigma
