"""Leaky ReLU with a trained, always-positive negative-side slope."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.core.channel_parameter import add_log_parameter, positive_initial_value
from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.ops import activations


@keras.saving.register_keras_serializable(package="tfinv")
class LearnableLeakyReLU(InvertibleLayer):
    """``z = x if x >= 0 else a_c x`` element-wise, with ``a_c = exp(log_slope_c) > 0`` trained.

    The slope is ``exp`` of a weight, so it stays positive (the map stays a bijection) for every
    weight value, and the log-det needs no ``log``.

    Inverse: ``x = z if z >= 0 else z / a_c`` (``a_c > 0`` keeps the sign).
    Log-det: ``sum_c N_c log a_c``, ``N_c`` the number of negative entries of channel ``c``
    (one shared slope: ``N log a``). Piecewise constant in ``x``: its gradient reaches the slope
    only; ``x = 0`` counts as positive (derivative 1).
    Shapes: ``(B, H, W, C) -> (B, H, W, C)``; log-det ``(B,)``.

    Args:
        initial_slope: starting negative slope ``a > 0``.
        per_channel: one slope per channel (default) or one scalar slope.

    References: Maas et al., "Rectifier Nonlinearities Improve Neural Network Acoustic Models"
    (ICML 2013 workshop; leaky ReLU); He et al., "Delving Deep into Rectifiers", arXiv:1502.01852
    (PReLU: learned per-channel slopes).
    """

    event_ndims = 3

    def __init__(self, initial_slope: float = 0.1, per_channel: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.initial_slope = positive_initial_value("LearnableLeakyReLU", "initial_slope", initial_slope)
        self.per_channel = bool(per_channel)

    def build(self, input_shape):
        self.log_slope = add_log_parameter(
            self, "log_slope", self.initial_slope, self.per_channel, input_shape)
        super().build(input_shape)

    @property
    def slope(self) -> tf.Tensor:
        """The negative-side slope(s) ``exp(log_slope)``."""
        return tf.exp(self.log_slope)

    def _forward_and_log_det(self, x):
        z, log_derivative = activations.leaky_relu_forward(x, tf.cast(self.log_slope, x.dtype))
        return z, tf.reduce_sum(log_derivative, axis=[-3, -2, -1])

    def _inverse_and_log_det(self, z):
        x, log_derivative = activations.leaky_relu_inverse(z, tf.cast(self.log_slope, z.dtype))
        return x, tf.reduce_sum(log_derivative, axis=[-3, -2, -1])

    def get_config(self):
        return {
            **super().get_config(),
            "initial_slope": self.initial_slope,
            "per_channel": self.per_channel,
        }
