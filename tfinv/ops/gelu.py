"""GELU written with ``erf`` (standard ONNX ``Erf``).

``tf.nn.gelu`` (and Keras's ``gelu``) evaluate the exact GELU through ``erfc``, which has no
ONNX operator: tf2onnx leaves an ``Erfc`` node that onnxruntime rejects. ``0.5 x (1 + erf(x/√2))``
is the same function (Hendrycks & Gimpel, arXiv:1606.08415) and exports.
"""

from __future__ import annotations

import math

import tensorflow as tf

__all__ = ["gelu"]

_INV_SQRT2 = 1.0 / math.sqrt(2.0)


def gelu(x: tf.Tensor) -> tf.Tensor:
    """Exact GELU ``x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2)))``, element-wise."""
    return 0.5 * x * (1.0 + tf.math.erf(x * _INV_SQRT2))
