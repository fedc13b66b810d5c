"""Glow's coupling conditioner: conv 3x3 -> (ActNorm) -> ReLU -> conv 1x1 -> (ActNorm) -> ReLU ->
zero-initialised conv 3x3."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.ops import act_norm


@keras.saving.register_keras_serializable(package="tfinv")
class ConditionerActNorm(keras.layers.Layer):
    """``y = (x + b) * exp(log_s)`` per channel inside a conditioner network (not a flow layer: no
    log-det, no inverse). Glow's reference code uses it in place of the hidden convolutions' bias.

    Initialisation is explicit: ``initialize(x)`` sets ``b`` and ``log_s`` so that the output on
    the batch ``x`` has zero mean and unit variance per channel (channels constant on the batch
    keep scale 1, see `tfinv.ops.act_norm.initial_parameters`); until then it is the identity.
    """

    def __init__(self, epsilon: float = 1e-6, min_std: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.min_std = float(min_std)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros")
        self.log_scale = self.add_weight(name="log_scale", shape=(channels,), initializer="zeros")

    def call(self, x):
        return (x + self.bias) * tf.exp(self.log_scale)

    def initialize(self, x: tf.Tensor) -> tf.Tensor:
        """Sets the parameters from the batch ``x``; returns the normalised ``x``."""
        bias, log_scale, _ = act_norm.initial_parameters(
            x, list(range(len(x.shape) - 1)), self.epsilon, self.min_std)
        self.bias.assign(tf.cast(bias, self.bias.dtype))
        self.log_scale.assign(tf.cast(log_scale, self.log_scale.dtype))
        return self(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "min_std": self.min_std}


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

    ``actnorm=False`` (tfinv's default): ``conv3x3 (bias) -> ReLU -> conv1x1 (bias) -> ReLU ->
    ZeroConv2D``. ``actnorm=True`` is the network of Glow's paper and reference code
    (openai/glow ``f``): the two hidden convolutions have no bias and are each followed by a
    `ConditionerActNorm`, initialised from data by `initialize` (which the coupling's own
    ``initialize`` calls, so ``FlowModel.initialize(batch)`` reaches it).

    Args:
        hidden_channels: width of the two hidden convolutions.
        out_channels: channels of the output (the coupling asks for what it needs).
        actnorm: ActNorm after each hidden convolution (the paper's conditioner).

    Input shape ``(B, H, W, C_in)``; output shape ``(B, H, W, out_channels)``, all zeros at init.
    """

    def __init__(self, hidden_channels: int, out_channels: int, actnorm: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.hidden_channels = int(hidden_channels)
        self.out_channels = int(out_channels)
        self.actnorm = bool(actnorm)
        if self.actnorm:
            self.conv_in = keras.layers.Conv2D(hidden_channels, 3, padding="same", use_bias=False,
                                               name="conv_in")
            self.norm_in = ConditionerActNorm(name="norm_in")
            self.conv_hidden = keras.layers.Conv2D(hidden_channels, 1, use_bias=False, name="conv_hidden")
            self.norm_hidden = ConditionerActNorm(name="norm_hidden")
        else:
            self.conv_in = keras.layers.Conv2D(hidden_channels, 3, padding="same", activation="relu")
            self.conv_hidden = keras.layers.Conv2D(hidden_channels, 1, activation="relu")
        self.conv_out = ZeroConv2D(out_channels)

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.conv_in.build(shape)
        shape = shape[:-1] + (self.hidden_channels,)
        self.conv_hidden.build(shape)
        if self.actnorm:
            self.norm_in.build(shape)
            self.norm_hidden.build(shape)
        self.conv_out.build(shape)

    def call(self, x):
        if not self.actnorm:
            return self.conv_out(self.conv_hidden(self.conv_in(x)))
        h = tf.nn.relu(self.norm_in(self.conv_in(x)))
        h = tf.nn.relu(self.norm_hidden(self.conv_hidden(h)))
        return self.conv_out(h)

    def initialize(self, x: tf.Tensor) -> tf.Tensor:
        """Data-dependent initialisation of the ActNorms (in order) on the batch ``x``; returns the
        output. Without ``actnorm`` there is nothing to set and it is a plain call."""
        if not self.actnorm:
            return self(x)
        h = tf.nn.relu(self.norm_in.initialize(self.conv_in(x)))
        h = tf.nn.relu(self.norm_hidden.initialize(self.conv_hidden(h)))
        return self.conv_out(h)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.out_channels,)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_channels": self.hidden_channels,
            "out_channels": self.out_channels,
            "actnorm": self.actnorm,
        }
