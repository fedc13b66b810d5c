"""Glow's invertible 1x1 convolution, LU-parameterised."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.layers.bases.lu_linear_layer import LULinearLayer


@keras.saving.register_keras_serializable(package="tfinv")
class InvConv1x1(LULinearLayer):
    """``z[h, w] = W x[h, w]`` at every pixel, with ``W = P L (U + diag(sign * exp(log_s)))``.

    Inverse: ``x[h, w] = W^-1 z[h, w]``; ``W^-1`` comes from triangular solves on the
    parameters only (an exporter folds it into a constant).
    Log-det: ``H * W * sum(log_s)``: a sum of logs, no ``slogdet`` (XLA and ONNX reject it).
    Shapes: ``(B, H, W, C) -> (B, H, W, C)``; log-det ``(B,)``.

    ``W`` starts as a random rotation (seeded); ``P`` and ``sign`` are fixed, ``L``, ``U`` and
    ``log_s`` are trained. ``W`` is invertible for every value of the parameters
    (`tfinv.layers.bases.lu_linear_layer`).

    Args:
        seed: seed of the random initial rotation.

    References: Kingma & Dhariwal, "Glow", arXiv:1807.03039, §3.2.
    """

    event_ndims = 3

    def _positions(self, x):
        return tf.cast(tf.reduce_prod(tf.shape(x)[-3:-1]), x.dtype)

    def _apply(self, x, matrix):
        # A 1x1 Conv (not an einsum: tf2onnx's einsum optimiser rejects '...' equations).
        kernel = tf.reshape(tf.transpose(matrix), [1, 1, matrix.shape[1], matrix.shape[0]])
        return tf.nn.conv2d(x, kernel, strides=1, padding="VALID")
