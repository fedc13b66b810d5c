"""Element-wise bijective activations and their element-wise log-derivatives.

Every function returns ``(value, log|d value / d input|)`` element-wise; layers reduce the
second part over the event axes.

Smooth leaky ReLU ("SneakyReLU", Finzi et al. 2019). The paper's map, for ``0 <= alpha < 1``,

    f(x) = (x + alpha * (sqrt(1 + x^2) - 1)) / (1 + alpha),

has slope 1 as ``x -> +inf`` and ``s = (1 - alpha) / (1 + alpha)`` as ``x -> -inf``, so the
negative slope ``s`` is the natural parameter: ``alpha = (1 - s) / (1 + s)``. With
``alpha = tanh(beta)``, i.e. ``beta = log(1 / s) / 2``, and ``x = sinh(t)``, the map is a shifted
``sinh`` (``x + alpha sqrt(1 + x^2) = sinh(t + beta) / cosh(beta)`` and
``(1 + alpha) cosh(beta) = exp(beta) = 1 / sqrt(s)``):

    f(x)       = sqrt(s) * (sinh(asinh(x) + beta) - sinh(beta))
    f^-1(y)    = sinh(asinh(y / sqrt(s) + sinh(beta)) - beta)
    log f'(x)  = log(s) / 2 + logcosh(asinh(x) + beta) - logcosh(asinh(x)).

This is the same function, evaluated without the cancellations of the algebraic forms
(``x + alpha sqrt(1 + x^2)`` for negative ``x`` and the quadratic-formula inverse lose
``~1/s`` ulps when ``s`` is small), without branches, and with standard ONNX ops only
(Asinh, Sinh, Abs, Softplus; no Log1p). Any ``s > 0`` gives a bijection of R (``s = 1``:
identity; ``s > 1``: concave instead of convex).
"""

from __future__ import annotations

import math

import tensorflow as tf

__all__ = [
    "smooth_leaky_relu_beta",
    "smooth_leaky_relu_forward",
    "smooth_leaky_relu_inverse",
    "leaky_relu_forward",
    "leaky_relu_inverse",
    "log_cosh",
]


def log_cosh(v: tf.Tensor) -> tf.Tensor:
    """``log(cosh(v)) = |v| - log 2 + softplus(-2|v|)``: no overflow for large ``|v|``."""
    a = tf.abs(v)
    return a - math.log(2.0) + tf.nn.softplus(-2.0 * a)


def smooth_leaky_relu_beta(negative_slope: float) -> float:
    """``beta = atanh(alpha) = log(1 / s) / 2`` for the negative slope ``s > 0``."""
    if not negative_slope > 0:
        raise ValueError(f"smooth leaky ReLU needs a negative slope > 0, got {negative_slope}")
    return 0.5 * math.log(1.0 / negative_slope)


def smooth_leaky_relu_forward(x: tf.Tensor, negative_slope: float):
    """``(f(x), log f'(x))`` element-wise, ``f`` the paper's smooth leaky ReLU with slope ``s``."""
    beta = smooth_leaky_relu_beta(negative_slope)
    root_s = math.sqrt(negative_slope)
    t = tf.math.asinh(x)
    y = root_s * (tf.math.sinh(t + beta) - math.sinh(beta))
    log_derivative = 0.5 * math.log(negative_slope) + log_cosh(t + beta) - log_cosh(t)
    return y, log_derivative


def smooth_leaky_relu_inverse(y: tf.Tensor, negative_slope: float):
    """``(f^-1(y), log (f^-1)'(y))`` element-wise, in closed form."""
    beta = smooth_leaky_relu_beta(negative_slope)
    root_s = math.sqrt(negative_slope)
    shifted = tf.math.asinh(y / root_s + math.sinh(beta))  # = asinh(x) + beta
    x = tf.math.sinh(shifted - beta)
    log_derivative = log_cosh(shifted - beta) - log_cosh(shifted) - 0.5 * math.log(negative_slope)
    return x, log_derivative


def leaky_relu_forward(x: tf.Tensor, log_slope: tf.Tensor):
    """``(x if x >= 0 else exp(log_slope) x, [x < 0] log_slope)`` element-wise.

    ``log_slope`` broadcasts against ``x`` (a scalar, or one value per channel on the last axis).
    """
    negative = x < 0
    y = tf.where(negative, x * tf.exp(log_slope), x)
    log_derivative = tf.cast(negative, x.dtype) * log_slope
    return y, log_derivative


def leaky_relu_inverse(z: tf.Tensor, log_slope: tf.Tensor):
    """Inverse of `leaky_relu_forward`: the sign is preserved, so ``z < 0`` iff ``x < 0``."""
    negative = z < 0
    x = tf.where(negative, z * tf.exp(-log_slope), z)
    log_derivative = -tf.cast(negative, z.dtype) * log_slope
    return x, log_derivative
