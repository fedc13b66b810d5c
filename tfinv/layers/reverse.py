"""Reversal of the channel (last) axis."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det


@keras.saving.register_keras_serializable(package="tfinv")
class Reverse(InvertibleLayer):
    """``z[..., i] = x[..., C - 1 - i]``; its own inverse. Log-det: 0.

    Shapes: ``(..., C) -> (..., C)``; event_ndims = 1, so the log-det has shape ``x.shape[:-1]``.

    References: Dinh et al., "Density estimation using Real NVP", arXiv:1605.08803.
    """

    event_ndims = 1

    def _forward_and_log_det(self, x):
        return tf.reverse(x, axis=[-1]), batch_log_det(0.0, x, self.event_ndims)

    def _inverse_and_log_det(self, z):
        return self._forward_and_log_det(z)
