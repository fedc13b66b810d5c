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
    # p stays in [alpha, 1 - alpha], so log(1 - p) needs no log1p (which ONNX lacks).
    log_p, log_1mp = tf.math.log(p), tf.math.log(1.0 - p)
    y = log_p - log_1mp
    log_det = math.log(scale) - log_p - log_1mp
    return y, log_det


def logit_inverse(y, num_levels: float, alpha: float):
    """Returns ``(x, element-wise log|dx/dy|)`` with ``log p = -softplus(-y)``."""
    scale = (1.0 - 2.0 * alpha) / num_levels
    p = tf.sigmoid(y)
    x = (p - alpha) / scale
    log_det = -math.log(scale) - tf.nn.softplus(-y) - tf.nn.softplus(y)
    return x, log_det
