"""Logit preprocessing of dequantised images (RealNVP arXiv:1605.08803, §4.1).

``x`` in ``[0, L]`` (dequantised counts of ``L`` levels) maps to ``p = a + (1 - 2a) x / L`` and
then to ``logit(p)``. Element-wise log-det: ``log((1 - 2a) / L) - log p - log(1 - p)``.
"""

from __future__ import annotations

import math

import tensorflow as tf


def logit_forward(x, num_levels: float, alpha: float):
    """Returns ``(logit(p), element-wise log|dy/dx|)``."""
    scale = (1.0 - 2.0 * alpha) / num_levels
    p = alpha + scale * x
    y = tf.math.log(p) - tf.math.log1p(-p)
    log_det = math.log(scale) - tf.math.log(p) - tf.math.log1p(-p)
    return y, log_det


def logit_inverse(y, num_levels: float, alpha: float):
    """Returns ``(x, element-wise log|dx/dy|)`` with ``log p = -softplus(-y)``."""
    scale = (1.0 - 2.0 * alpha) / num_levels
    p = tf.sigmoid(y)
    x = (p - alpha) / scale
    log_det = -math.log(scale) - tf.nn.softplus(-y) - tf.nn.softplus(y)
    return x, log_det
