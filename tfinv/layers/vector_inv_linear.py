"""Invertible linear map of vectors, LU-parameterised (Glow's 1x1 convolution without the image)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.ops import lu


@keras.saving.register_keras_serializable(package="tfinv")
class VectorInvLinear(InvertibleLayer):
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

    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.seed = int(seed)

    def build(self, input_shape):
        self._record_event_shape(input_shape)
        n = self.input_event_shape[-1]
        if n is None:
            raise ValueError(f"VectorInvLinear '{self.name}' needs a static last axis, got {input_shape}")
        rotation = np.linalg.qr(np.random.default_rng(self.seed).standard_normal((n, n)))[0]
        p, lower, upper = lu.lu_factor_numpy(rotation)
        diag = np.diag(upper)
        const = keras.initializers.Constant
        self.permutation = self.add_weight(
            name="permutation", shape=(n, n), initializer=const(p), trainable=False
        )
        self.sign = self.add_weight(
            name="sign", shape=(n,), initializer=const(np.sign(diag)), trainable=False
        )
        self.lower = self.add_weight(name="lower", shape=(n, n), initializer=const(lower))
        self.upper = self.add_weight(name="upper", shape=(n, n), initializer=const(np.triu(upper, 1)))
        self.log_scale = self.add_weight(
            name="log_scale", shape=(n,), initializer=const(np.log(np.abs(diag)))
        )
        super().build(input_shape)

    def _params(self):
        return self.permutation, self.lower, self.upper, self.log_scale, self.sign

    def weight(self) -> tf.Tensor:
        """The ``n x n`` matrix ``W`` (output index first)."""
        return lu.lu_weight(*self._params())

    def inverse_weight(self) -> tf.Tensor:
        """``W^-1``, computed from the parameters only."""
        return lu.lu_inverse_weight(*self._params())

    def _log_det(self, x):
        return batch_log_det(tf.reduce_sum(self.log_scale), x, self.event_ndims)

    @staticmethod
    def _apply(x, matrix):
        # Row vectors times the transpose: one MatMul, broadcast over every leading axis.
        return tf.matmul(x, tf.transpose(matrix))

    def _forward_and_log_det(self, x):
        return self._apply(x, self.weight()), self._log_det(x)

    def _inverse_and_log_det(self, z):
        return self._apply(z, self.inverse_weight()), -self._log_det(z)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
