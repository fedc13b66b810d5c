"""Data-dependent initialisation of activation normalisation (Glow's ActNorm), as pure math."""

from __future__ import annotations

import tensorflow as tf

__all__ = ["initial_parameters"]


def initial_parameters(
    x: tf.Tensor, axes: list[int], epsilon: float, min_std: float
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """``(bias, log_scale, constant)`` that give ``(x + bias) * exp(log_scale)`` zero mean and unit
    variance over ``axes``.

    ``log_scale = -log(std + epsilon)``, except where the batch is (nearly) constant,
    ``std < min_std``: there no scale can be estimated (``1 / epsilon`` would blow a value
    ``0.01`` away up to ``|z| = 10^4``), so the scale stays 1 (``log_scale = 0``) and ``constant``
    is True. ``bias = -mean`` everywhere.
    """
    mean, variance = tf.nn.moments(x, axes=axes)
    std = tf.sqrt(variance)
    constant = std < tf.cast(min_std, std.dtype)
    log_scale = tf.where(constant, tf.zeros_like(std), -tf.math.log(std + tf.cast(epsilon, std.dtype)))
    return -mean, log_scale, constant
