"""Flatten one event to a vector (the last step of a multi-scale flow)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det


@keras.saving.register_keras_serializable(package="tfinv")
class Flatten(InvertibleLayer):
    """``(B, *S) -> (B, prod(S))``, row-major (``tf.reshape``).

    Inverse: the reshape back to ``S``. Log-det: 0 (the entries are not changed).
    Shapes: ``(B, *S) -> (B, D)`` with ``D = prod(S)`` and ``len(S) = event_ndims``; the output
    event rank is 1.

    Args:
        event_ndims: rank of one input event (3 for images).
    """

    event_ndims = 3
    output_event_ndims = 1

    def __init__(self, event_ndims: int = 3, **kwargs):
        if int(event_ndims) < 1:
            raise ValueError(f"Flatten event_ndims must be >= 1, got {event_ndims}")
        self.event_ndims = int(event_ndims)  # instance override, before the bijector is set up
        super().__init__(**kwargs)

    def build(self, input_shape):
        if any(s is None for s in self.input_event_shape):
            raise ValueError(f"Flatten '{self.name}' needs a static event shape, got {self.input_event_shape}")
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        batch, event = tuple(input_shape[: len(input_shape) - self.event_ndims]), input_shape[-self.event_ndims:]
        size = None if any(s is None for s in event) else int(np.prod(event))
        return batch + (size,)

    def compute_input_shape(self, output_shape):
        if self.input_event_shape is None:
            raise ValueError(f"Flatten '{self.name}' is not built: its event shape is unknown")
        return tuple(output_shape[:-1]) + tuple(self.input_event_shape)

    def _forward_and_log_det(self, x):
        z = tf.reshape(x, tf.concat([tf.shape(x)[:1], [-1]], 0))
        return z, batch_log_det(0.0, x, self.event_ndims)

    def _inverse_and_log_det(self, z):
        x = tf.reshape(z, tf.concat([tf.shape(z)[:1], self.input_event_shape], 0))
        return x, batch_log_det(0.0, z, 1)

    def get_config(self):
        return {**super().get_config(), "event_ndims": self.event_ndims}
