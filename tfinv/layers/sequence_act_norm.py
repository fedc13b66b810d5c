"""Activation normalisation of sequences (or spectra): one scale and bias per position and channel."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.ops import act_norm


@keras.saving.register_keras_serializable(package="tfinv")
class SequenceActNorm(InvertibleLayer):
    """``z[t, c] = (x[t, c] + b[t, c]) * exp(log_s[t, c])`` for every position ``t`` and channel ``c``.

    Inverse: ``x = z * exp(-log_s) - b``.
    Log-det: ``sum_{t, c} log_s[t, c]`` for every sequence.
    Shapes: ``(B, T, C) -> (B, T, C)``; event_ndims = 2.

    After a `RealDFT` the positions are frequencies: ``initialize(x)`` then standardises every
    Fourier coefficient over the batch (zero mean, unit variance), the trained counterpart of
    the spectrum standardisation in Alaa et al.'s reference code (which fixes the data's mean and
    standard deviation instead). Glow's ActNorm shares one scale per channel over all positions;
    here a spectrum's variance differs by orders of magnitude between frequencies, so each gets
    its own. Without ``initialize`` the layer starts as the identity.

    A coefficient that is constant on the initialisation batch (std below ``min_std``) keeps
    scale 1 and a `RuntimeWarning` names the layer and the positions.

    Args:
        epsilon: floor added to the standard deviation at initialisation.
        min_std: entries with a smaller batch standard deviation count as constant.

    References: Kingma & Dhariwal, "Glow", arXiv:1807.03039, §3.1 (ActNorm); Alaa, Chan & van der
    Schaar, "Generative Time-series Modeling with Fourier Flows", ICLR 2021.
    """

    event_ndims = 2

    def __init__(self, epsilon: float = 1e-6, min_std: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.min_std = float(min_std)

    def build(self, input_shape):
        shape = self.input_event_shape
        if any(s is None for s in shape):
            raise ValueError(f"SequenceActNorm '{self.name}' needs a static (T, channels), got {tuple(input_shape)}")
        self.bias = self.add_weight(name="bias", shape=shape, initializer="zeros")
        self.log_scale = self.add_weight(name="log_scale", shape=shape, initializer="zeros")
        super().build(input_shape)

    def _log_det(self, x):
        return batch_log_det(tf.reduce_sum(self.log_scale), x, self.event_ndims)

    def _forward_and_log_det(self, x):
        return (x + self.bias) * tf.exp(self.log_scale), self._log_det(x)

    def _inverse_and_log_det(self, z):
        return z * tf.exp(-self.log_scale) - self.bias, -self._log_det(z)

    def _initialize(self, x):
        bias, log_scale, constant = act_norm.initial_parameters(
            x, list(range(len(x.shape) - 2)), self.epsilon, self.min_std)
        self.bias.assign(bias)
        self.log_scale.assign(log_scale)
        if tf.executing_eagerly():
            positions = sorted({int(t) for t in np.argwhere(constant.numpy())[:, 0]})
            if positions:
                warnings.warn(
                    f"SequenceActNorm '{self.name}': positions {positions} are constant on the "
                    f"initialisation batch (std < {self.min_std:g}); their scale stays 1",
                    RuntimeWarning, stacklevel=3)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "min_std": self.min_std}
