"""Glow's invertible 1x1 convolution, LU-parameterised."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.ops import lu


@keras.saving.register_keras_serializable(package="tfinv")
class InvConv1x1(InvertibleLayer):
    """``z[h, w] = W x[h, w]`` at every pixel, with ``W = P L (U + diag(sign * exp(log_s)))``.

    Inverse: ``x[h, w] = W^-1 z[h, w]``; ``W^-1`` comes from triangular solves on the
    parameters only (an exporter folds it into a constant).
    Log-det: ``H * W * sum(log_s)``: a sum of logs, no ``slogdet`` (XLA and ONNX reject it).
    Shapes: ``(B, H, W, C) -> (B, H, W, C)``; log-det ``(B,)``.

    ``W`` starts as a random rotation (seeded); ``P`` and ``sign`` are fixed, ``L``, ``U`` and
    ``log_s`` are trained. ``W`` is invertible for every value of the parameters.

    Args:
        seed: seed of the random initial rotation.

    References: Kingma & Dhariwal, "Glow", arXiv:1807.03039, §3.2.
    """

    event_ndims = 3

    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.seed = int(seed)

    def build(self, input_shape):
        self._record_event_shape(input_shape)
        c = self.input_event_shape[-1]
        rotation = np.linalg.qr(np.random.default_rng(self.seed).standard_normal((c, c)))[0]
        p, lower, upper = lu.lu_factor_numpy(rotation)
        diag = np.diag(upper)
        const = keras.initializers.Constant
        self.permutation = self.add_weight(
            name="permutation", shape=(c, c), initializer=const(p), trainable=False
        )
        self.sign = self.add_weight(
            name="sign", shape=(c,), initializer=const(np.sign(diag)), trainable=False
        )
        self.lower = self.add_weight(name="lower", shape=(c, c), initializer=const(lower))
        self.upper = self.add_weight(name="upper", shape=(c, c), initializer=const(np.triu(upper, 1)))
        self.log_scale = self.add_weight(
            name="log_scale", shape=(c,), initializer=const(np.log(np.abs(diag)))
        )
        super().build(input_shape)

    def _params(self):
        return self.permutation, self.lower, self.upper, self.log_scale, self.sign

    def weight(self) -> tf.Tensor:
        """The ``C x C`` matrix ``W`` (output channel index first)."""
        return lu.lu_weight(*self._params())

    def inverse_weight(self) -> tf.Tensor:
        """``W^-1``, computed from the parameters only."""
        return lu.lu_inverse_weight(*self._params())

    def _log_det(self, x):
        pixels = tf.cast(tf.reduce_prod(tf.shape(x)[-3:-1]), x.dtype)
        return batch_log_det(pixels * tf.reduce_sum(self.log_scale), x, self.event_ndims)

    @staticmethod
    def _conv(x, matrix):
        kernel = tf.reshape(tf.transpose(matrix), [1, 1, matrix.shape[1], matrix.shape[0]])
        return tf.nn.conv2d(x, kernel, strides=1, padding="VALID")

    def _forward_and_log_det(self, x):
        return self._conv(x, self.weight()), self._log_det(x)

    def _inverse_and_log_det(self, z):
        return self._conv(z, self.inverse_weight()), -self._log_det(z)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
