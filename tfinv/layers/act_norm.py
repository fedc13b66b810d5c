"""Glow's activation normalisation: a per-channel affine map with data-dependent initialisation."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det


@keras.saving.register_keras_serializable(package="tfinv")
class ActNorm(InvertibleLayer):
    """``z = (x + b) * exp(log_s)`` per channel.

    Inverse: ``x = z * exp(-log_s) - b``.
    Log-det: ``H * W * sum(log_s)`` (the Jacobian is diagonal and the same at every pixel).
    Shapes: ``(B, H, W, C) -> (B, H, W, C)``; log-det ``(B,)``.

    Initialisation is an explicit step, never hidden in a call: ``initialize(x)`` sets ``b`` and
    ``log_s`` so that the output on the batch ``x`` has zero mean and unit variance per channel.
    Without it the layer starts as the identity.

    Args:
        epsilon: floor added to the batch standard deviation at initialisation.

    References: Kingma & Dhariwal, "Glow", arXiv:1807.03039, §3.1.
    """

    event_ndims = 3

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        channels = self.input_event_shape[-1]
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros")
        self.log_scale = self.add_weight(name="log_scale", shape=(channels,), initializer="zeros")
        super().build(input_shape)

    def _log_det(self, x):
        pixels = tf.cast(tf.reduce_prod(tf.shape(x)[-3:-1]), x.dtype)
        return batch_log_det(pixels * tf.reduce_sum(self.log_scale), x, self.event_ndims)

    def _forward_and_log_det(self, x):
        return (x + self.bias) * tf.exp(self.log_scale), self._log_det(x)

    def _inverse_and_log_det(self, z):
        return z * tf.exp(-self.log_scale) - self.bias, -self._log_det(z)

    def _initialize(self, x):
        axes = list(range(len(x.shape) - 1))
        mean, variance = tf.nn.moments(x, axes=axes)
        self.bias.assign(-mean)
        self.log_scale.assign(-tf.math.log(tf.sqrt(variance) + self.epsilon))

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
