"""Glow's coupling conditioner: conv 3x3 -> ReLU -> conv 1x1 -> ReLU -> zero-initialised conv 3x3."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfinv")
class ZeroConv2D(keras.layers.Layer):
    """3x3 convolution whose kernel, bias and per-channel log-gain start at zero.

    Output ``(conv(x) + b) * exp(gain_scale * log_gain)``; at initialisation it outputs zeros, so a
    coupling that uses it starts as (nearly) the identity. Glow, arXiv:1807.03039, §3.3.
    """

    def __init__(self, filters: int, kernel_size: int = 3, gain_scale: float = 3.0, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.gain_scale = float(gain_scale)

    def build(self, input_shape):
        c = int(input_shape[-1])
        k = self.kernel_size
        self.kernel = self.add_weight(name="kernel", shape=(k, k, c, self.filters), initializer="zeros")
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
        self.log_gain = self.add_weight(name="log_gain", shape=(self.filters,), initializer="zeros")

    def call(self, x):
        y = tf.nn.conv2d(x, self.kernel, strides=1, padding="SAME") + self.bias
        return y * tf.exp(self.gain_scale * self.log_gain)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "gain_scale": self.gain_scale,
        }


@keras.saving.register_keras_serializable(package="tfinv")
class GlowConvNet(keras.layers.Layer):
    """The default conditioner of `AffineCoupling` and `AdditiveCoupling`.

    Args:
        hidden_channels: width of the two hidden convolutions.
        out_channels: channels of the output (the coupling asks for what it needs).

    Input shape ``(B, H, W, C_in)``; output shape ``(B, H, W, out_channels)``, all zeros at init.
    """

    def __init__(self, hidden_channels: int, out_channels: int, **kwargs):
        super().__init__(**kwargs)
        self.hidden_channels = int(hidden_channels)
        self.out_channels = int(out_channels)
        self.conv_in = keras.layers.Conv2D(hidden_channels, 3, padding="same", activation="relu")
        self.conv_hidden = keras.layers.Conv2D(hidden_channels, 1, activation="relu")
        self.conv_out = ZeroConv2D(out_channels)

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.conv_in.build(shape)
        shape = shape[:-1] + (self.hidden_channels,)
        self.conv_hidden.build(shape)
        self.conv_out.build(shape)

    def call(self, x):
        return self.conv_out(self.conv_hidden(self.conv_in(x)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.out_channels,)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_channels": self.hidden_channels,
            "out_channels": self.out_channels,
        }
