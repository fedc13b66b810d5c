"""A coupling conditioner with a low-dimensional fully connected bottleneck (an autoencoder).

Kirichenko, Izmailov & Wilson show that the coupling layers of a flow learn local pixel
correlations (the conditioner copies the masked-out neighbours), which is why likelihood scores
rank simple OOD images high; squeezing the conditioner through a small latent code biases it
towards the global, semantic structure instead (their "st-network with a bottleneck").
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfinv.nets.glow_conv_net import ZeroConv2D


@keras.saving.register_keras_serializable(package="tfinv")
class BottleneckConvNet(keras.layers.Layer):
    """``theta = ZeroConv(ReLU(conv(reshape(W_d ReLU(W_e flatten(ReLU(conv3x3(x))))))))``.

    Encoder: a 3x3 convolution (``hidden_channels``, ReLU), flattened and mapped to a
    ``bottleneck``-dimensional code (dense, ReLU). Decoder: a dense map back to
    ``H x W x hidden_channels`` (ReLU), a 1x1 convolution (ReLU) and Glow's zero-initialised 3x3
    convolution to ``out_channels`` (so the coupling starts as the identity).

    Our variant differs from the paper's autoencoder st-network (strided convolutions, transposed
    convolutions in the decoder): one convolution on each side of the dense bottleneck, sized for
    the small images of our benchmarks; the bottleneck itself is the same idea.

    ``out_channels=None``: set by the coupling that owns the conditioner when it is built (a
    template for every coupling of a Glow, see `tfinv.blocks.glow_step.GlowStep`).

    Shapes: ``(B, H, W, C_in) -> (B, H, W, out_channels)``; H and W must be static.
    References: Kirichenko, Izmailov & Wilson, "Why Normalizing Flows Fail to Detect
    Out-of-Distribution Data", arXiv:2006.08545, §7.
    """

    def __init__(self, hidden_channels: int = 32, bottleneck: int = 16, out_channels: int | None = None,
                 **kwargs: Any):
        super().__init__(**kwargs)
        if int(hidden_channels) < 1 or int(bottleneck) < 1:
            raise ValueError(f"BottleneckConvNet needs hidden_channels >= 1 and bottleneck >= 1, got "
                             f"{hidden_channels}, {bottleneck}")
        self.hidden_channels = int(hidden_channels)
        self.bottleneck = int(bottleneck)
        self.out_channels = None if out_channels is None else int(out_channels)

    def build(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None:
            raise ValueError(f"BottleneckConvNet needs static H and W (its bottleneck is dense), got {tuple(input_shape)}")
        if self.out_channels is None:
            raise ValueError("BottleneckConvNet has out_channels=None: give it, or let a coupling layer set it")
        self._grid = (int(height), int(width))
        hidden = self.hidden_channels
        self.conv_in = keras.layers.Conv2D(hidden, 3, padding="same", activation="relu", name="conv_in")
        self.encode = keras.layers.Dense(self.bottleneck, activation="relu", name="encode")
        self.decode = keras.layers.Dense(height * width * hidden, activation="relu", name="decode")
        self.conv_hidden = keras.layers.Conv2D(hidden, 1, activation="relu", name="conv_hidden")
        self.conv_out = ZeroConv2D(self.out_channels, name="conv_out")
        shape = tuple(input_shape)
        self.conv_in.build(shape)
        self.encode.build((None, height * width * hidden))
        self.decode.build((None, self.bottleneck))
        grid = (None, height, width, hidden)
        self.conv_hidden.build(grid)
        self.conv_out.build(grid)

    def call(self, x):
        h = self.conv_in(x)
        code = self.encode(tf.reshape(h, (-1, self._grid[0] * self._grid[1] * self.hidden_channels)))
        h = tf.reshape(self.decode(code), (-1, self._grid[0], self._grid[1], self.hidden_channels))
        return self.conv_out(self.conv_hidden(h))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.out_channels,)

    def get_config(self):
        return {**super().get_config(), "hidden_channels": self.hidden_channels, "bottleneck": self.bottleneck,
                "out_channels": self.out_channels}
