"""Glow's activation normalisation: a per-channel affine map with data-dependent initialisation."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.ops import act_norm


@keras.saving.register_keras_serializable(package="tfinv")
class ActNorm(InvertibleLayer):
    """``z = (x + b) * exp(log_s)`` per channel.

    Inverse: ``x = z * exp(-log_s) - b``.
    Log-det: ``H * W * sum(log_s)`` (the Jacobian is diagonal and the same at every pixel).
    Shapes: ``(B, H, W, C) -> (B, H, W, C)``; log-det ``(B,)``.

    Initialisation is an explicit step, never hidden in a call: ``initialize(x)`` sets ``b`` and
    ``log_s`` so that the output on the batch ``x`` has zero mean and unit variance per channel.
    Without it the layer starts as the identity.

    A channel that is constant on the initialisation batch (std below ``min_std``, e.g. a
    border pixel that is always 0 in non-dequantised data) keeps scale 1 instead of ``1/epsilon``,
    and a `RuntimeWarning` names the layer and the channel.

    Args:
        epsilon: floor added to the batch standard deviation at initialisation.
        min_std: channels with a smaller batch standard deviation count as constant.

    References: Kingma & Dhariwal, "Glow", arXiv:1807.03039, §3.1.
    """

    event_ndims = 3

    def __init__(self, epsilon: float = 1e-6, min_std: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.min_std = float(min_std)

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
        initialize_from_batch(self, x, "channel")

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "min_std": self.min_std}


def initialize_from_batch(layer, x: tf.Tensor, unit: str) -> None:
    """Sets ``layer.bias``/``layer.log_scale`` from the batch ``x`` (statistics over every axis but
    the last); warns, naming the layer and the ``unit``s (channels, features), where ``x`` is
    constant and the scale is left at 1."""
    bias, log_scale, constant = act_norm.initial_parameters(
        x, list(range(len(x.shape) - 1)), layer.epsilon, layer.min_std
    )
    layer.bias.assign(bias)
    layer.log_scale.assign(log_scale)
    if tf.executing_eagerly():
        indices = np.flatnonzero(constant.numpy()).tolist()
        if indices:
            warnings.warn(
                f"{type(layer).__name__} '{layer.name}': {unit}(s) {indices} constant on the initialisation "
                f"batch (std < {layer.min_std:g}); their scale is left at 1 instead of 1/std",
                RuntimeWarning,
                stacklevel=3,
            )
