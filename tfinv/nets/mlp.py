"""A per-position MLP conditioner for vector couplings (dense layers on the last axis)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.ops.gelu import gelu

ACTIVATIONS = {"relu": tf.nn.relu, "gelu": gelu}


@keras.saving.register_keras_serializable(package="tfinv")
class MLP(keras.layers.Layer):
    """``Dense -> act -> ... -> Dense`` on the last axis; the output layer starts at zero.

    Every leading axis is a batch axis, so one MLP is shared by all positions of a
    ``(B, N, n)`` input — MLP-Mixer's weight sharing across tokens (or channels).
    A coupling using it starts as (nearly) the identity, as with Glow's zero-initialised
    last convolution.

    Args:
        hidden_units: width of each hidden layer.
        out_units: size of the output's last axis.
        num_hidden_layers: number of hidden ``Dense`` layers (``>= 1``).
        activation: ``"relu"`` or ``"gelu"`` (the erf form, which exports to ONNX).

    Input shape ``(..., n_in)``; output shape ``(..., out_units)``, all zeros at initialisation.

    References: Tolstikhin et al., "MLP-Mixer", arXiv:2105.01601 (shared per-token MLPs);
    Kingma & Dhariwal, "Glow", arXiv:1807.03039, §3.3 (zero initialisation).
    """

    def __init__(self, hidden_units: int, out_units: int, num_hidden_layers: int = 2,
                 activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"MLP activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if int(num_hidden_layers) < 1:
            raise ValueError(f"MLP num_hidden_layers must be >= 1, got {num_hidden_layers}")
        self.hidden_units = int(hidden_units)
        self.out_units = int(out_units)
        self.num_hidden_layers = int(num_hidden_layers)
        self.activation = activation
        self.hidden = [keras.layers.Dense(self.hidden_units, name=f"dense_{i}")
                       for i in range(self.num_hidden_layers)]
        self.out = keras.layers.Dense(self.out_units, kernel_initializer="zeros", name="dense_out")

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.hidden:
            layer.build(shape)
            shape = shape[:-1] + (self.hidden_units,)
        self.out.build(shape)

    def call(self, x):
        act = ACTIVATIONS[self.activation]
        for layer in self.hidden:
            x = act(layer(x))
        return self.out(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.out_units,)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": self.hidden_units,
            "out_units": self.out_units,
            "num_hidden_layers": self.num_hidden_layers,
            "activation": self.activation,
        }
