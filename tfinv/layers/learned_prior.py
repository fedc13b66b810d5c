"""Standardisation under a learned Gaussian prior (Glow's learned top prior), optionally conditional."""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer


@keras.saving.register_keras_serializable(package="tfinv")
class LearnedPrior(InvertibleLayer):
    """``z = (x - mu) * exp(-log sigma)``: the standardising map of a prior ``x ~ N(mu, sigma^2)``.

    ``mu`` and ``log sigma`` are per channel (last axis), shared over the other event axes, and
    start at zero (the identity). With ``context_shape``, a zero-initialised dense layer of the
    flattened context adds a per-example shift to both (Glow's class-conditional prior, ``ycond``).
    Placed last in a flow whose base is N(0, I), it makes the prior of the flow's output a learned
    Gaussian while sampling still starts from standard noise.

    Inverse: ``x = mu + exp(log sigma) * z``. Log-det: ``-N * sum_c log sigma_c`` with ``N`` the
    number of positions per channel (per example with context).
    Shapes: ``(B, *S, C) -> (B, *S, C)``; log-det ``(B,)``.

    Args:
        event_ndims: rank of one event (3 for images, 1 for vectors).
        context_shape: shape of one context; ``None`` for an unconditional prior.

    References: Kingma & Dhariwal, "Glow", arXiv:1807.03039 (learned top prior ``learntop`` and
    class-conditional prior ``ycond`` in the authors' code).
    """

    event_ndims = 3

    def __init__(self, event_ndims: int = 3, context_shape: Sequence[int] | None = None, **kwargs):
        self.event_ndims = int(event_ndims)  # instance override, before the bijector is set up
        super().__init__(**kwargs)
        self.context_shape = None if context_shape is None else tuple(int(s) for s in context_shape)
        self.context_net = None

    def build(self, input_shape):
        channels = self.input_event_shape[-1]
        if channels is None:
            raise ValueError(f"LearnedPrior '{self.name}' needs a static channel axis, got {self.input_event_shape}")
        self.loc = self.add_weight(name="loc", shape=(channels,), initializer="zeros")
        self.log_scale = self.add_weight(name="log_scale", shape=(channels,), initializer="zeros")
        if self.context_shape is not None:
            self.context_net = keras.layers.Dense(2 * channels, kernel_initializer="zeros", name="context_net")
            self.context_net.build((None, int(np.prod(self.context_shape))))
        super().build(input_shape)

    def _params(self, x, context):
        loc, log_scale = self.loc, self.log_scale
        if context is None:
            return loc, log_scale
        shift = self.context_net(tf.reshape(context, [tf.shape(context)[0], -1]))
        # (B, 2C) -> (B, 1, ..., 1, C): one shift per example, shared over positions.
        shape = tf.concat([tf.shape(x)[:1], tf.ones([self.event_ndims - 1], tf.int32), [-1]], 0)
        return loc + tf.reshape(shift[:, 0::2], shape), log_scale + tf.reshape(shift[:, 1::2], shape)

    def _log_det(self, x, log_scale):
        positions = float(np.prod(self.input_event_shape[:-1]))
        rank = len(log_scale.shape)
        total = tf.reduce_sum(log_scale, axis=list(range(1, rank))) if rank > 1 else tf.reduce_sum(log_scale)
        return tf.broadcast_to(-positions * total, tf.shape(x)[:1])

    def _forward_and_log_det(self, x, context=None):
        loc, log_scale = self._params(x, context)
        return (x - loc) * tf.exp(-log_scale), self._log_det(x, log_scale)

    def _inverse_and_log_det(self, z, context=None):
        loc, log_scale = self._params(z, context)
        return loc + tf.exp(log_scale) * z, -self._log_det(z, log_scale)

    def get_config(self):
        return {
            **super().get_config(),
            "event_ndims": self.event_ndims,
            "context_shape": None if self.context_shape is None else list(self.context_shape),
        }
