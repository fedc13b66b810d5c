"""Shared machinery of the activation normalisations (`ActNorm`, `VectorActNorm`, `SequenceActNorm`).

``z = (x + b) * exp(log_s)`` with ``b`` and ``log_s`` of the event's last ``parameter_ndims``
axes, shared by its other axes (`ActNorm`: one pair per channel for every pixel).
``log|det| = copies * sum(log_s)``, ``copies`` the number of places each parameter acts on.
``initialize(x)`` sets ``b = -mean``, ``log_s = -log(std + epsilon)`` over every other axis
(`tfinv.ops.act_norm.initial_parameters`); without it the layer is the identity.
Reference: Kingma & Dhariwal, Glow, arXiv:1807.03039, §3.1.

Subclasses set ``event_ndims``, ``parameter_ndims`` and ``unit`` (what the warnings call one
entry of the first parameter axis: channel, feature, position).
"""

from __future__ import annotations

import warnings

import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.ops import act_norm


class ActNormLayer(InvertibleLayer):
    """Base of the activation normalisations (see module docstring).

    A unit that is constant on the initialisation batch (std below ``min_std``) keeps scale 1
    instead of ``1/epsilon``, and a `RuntimeWarning` names the layer and the units.

    Args:
        epsilon: floor added to the batch standard deviation at initialisation.
        min_std: units with a smaller batch standard deviation count as constant.
    """

    parameter_ndims = 1
    unit = "channel"

    def __init__(self, epsilon: float = 1e-6, min_std: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.min_std = float(min_std)

    def build(self, input_shape):
        shape = tuple(self.input_event_shape[-self.parameter_ndims:])
        if any(s is None for s in shape):
            raise ValueError(f"{type(self).__name__} '{self.name}' needs static sizes of its last "
                             f"{self.parameter_ndims} axes, got {tuple(input_shape)}")
        self.bias = self.add_weight(name="bias", shape=shape, initializer="zeros")
        self.log_scale = self.add_weight(name="log_scale", shape=shape, initializer="zeros")
        super().build(input_shape)

    def _log_det(self, x):
        log_det = tf.reduce_sum(self.log_scale)
        if self.event_ndims > self.parameter_ndims:  # each parameter acts at every place of the shared axes
            copies = tf.reduce_prod(tf.shape(x)[-self.event_ndims:-self.parameter_ndims])
            log_det = tf.cast(copies, x.dtype) * log_det
        return batch_log_det(log_det, x, self.event_ndims)

    def _forward_and_log_det(self, x):
        return (x + self.bias) * tf.exp(self.log_scale), self._log_det(x)

    def _inverse_and_log_det(self, z):
        return z * tf.exp(-self.log_scale) - self.bias, -self._log_det(z)

    def _initialize(self, x):
        bias, log_scale, constant = act_norm.initial_parameters(
            x, list(range(len(x.shape) - self.parameter_ndims)), self.epsilon, self.min_std)
        self.bias.assign(bias)
        self.log_scale.assign(log_scale)
        if tf.executing_eagerly():
            units = sorted({int(i) for i in np.argwhere(constant.numpy())[:, 0]})
            if units:
                warnings.warn(
                    f"{type(self).__name__} '{self.name}': {self.unit}(s) {units} constant on the initialisation "
                    f"batch (std < {self.min_std:g}); their scale is left at 1 instead of 1/std",
                    RuntimeWarning, stacklevel=3)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "min_std": self.min_std}
