"""LipSwish: a 1-Lipschitz swish with a learnable slope."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.ops.lipschitz_activations import lip_swish_linearize


@keras.saving.register_keras_serializable(package="tfinv")
class LipSwish(keras.layers.Layer):
    """``f(x) = x sigmoid(beta x) / 1.1``, ``beta = softplus(beta_raw)`` (one learnable scalar,
    ``beta_raw`` starting at 0.5); ``|f'| <= 1`` for every ``beta``.

    Shapes: any; element-wise. References: Chen et al., "Residual Flows", arXiv:1906.02735, §4.2.
    """

    def build(self, input_shape):
        self.beta_raw = self.add_weight(name="beta_raw", shape=(), initializer=keras.initializers.Constant(0.5))
        super().build(input_shape)

    def beta(self, dtype) -> tf.Tensor:
        return tf.cast(tf.nn.softplus(self.beta_raw), dtype)

    def linearize(self, x: tf.Tensor):
        """``(f(x), jvp)``, ``jvp(t) = f'(x) t`` for tangents ``(P, *x.shape)``."""
        value, derivative = lip_swish_linearize(x, self.beta(x.dtype))
        return value, lambda t: derivative * t

    def call(self, x):
        return self.linearize(x)[0]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)
