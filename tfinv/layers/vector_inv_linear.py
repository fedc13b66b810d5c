"""Invertible linear map of vectors, LU-parameterised (Glow's 1x1 convolution without the image)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.layers.bases.lu_linear_layer import LULinearLayer


@keras.saving.register_keras_serializable(package="tfinv")
class VectorInvLinear(LULinearLayer):
    """``z = W x`` on the last axis, with ``W = P L (U + diag(sign * exp(log_s)))``.

    Inverse: ``x = W^-1 z``; ``W^-1`` comes from triangular solves on the parameters only (an
    exporter folds it into a constant).
    Log-det: ``sum(log_s)`` for every vector (shape ``x.shape[:-1]``): a sum of logs, no ``slogdet``.
    Shapes: ``(..., n) -> (..., n)``; event_ndims = 1, leading axes share ``W``.

    ``W`` starts as a random rotation (seeded); ``P`` and ``sign`` are fixed, ``L``, ``U`` and
    ``log_s`` are trained. ``W`` is invertible for every value of the parameters.

    Args:
        seed: seed of the random initial rotation.

    References: Kingma & Dhariwal, "Glow", arXiv:1807.03039, §3.2 (LU decomposition).
    """

    event_ndims = 1
    prefers_xla_on_cpu = True  # benchmarks/speed.py --vector

    def _positions(self, x):
        return tf.constant(1.0, x.dtype)

    def _apply(self, x, matrix):
        # Row vectors times the transpose: one MatMul, broadcast over every leading axis.
        return tf.matmul(x, tf.transpose(matrix))
