"""Activation normalisation of vectors: a per-feature affine map with data-dependent initialisation."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.layers.act_norm import initialize_from_batch


@keras.saving.register_keras_serializable(package="tfinv")
class VectorActNorm(InvertibleLayer):
    """``z[..., i] = (x[..., i] + b_i) * exp(log_s_i)`` for each feature ``i`` of the last axis.

    Inverse: ``x = z * exp(-log_s) - b``.
    Log-det: ``sum_i log_s_i`` for every vector (shape ``x.shape[:-1]``).
    Shapes: ``(..., n) -> (..., n)``; event_ndims = 1, so the leading axes are batch axes and one
    set of parameters is shared by all of them (in `MixerFlowBlock`: by every channel, or every
    patch).

    ``initialize(x)`` sets ``b`` and ``log_s`` so that every feature of the output has zero mean
    and unit variance over all leading axes of ``x``; without it the layer starts as the identity.

    A feature that is constant on the initialisation batch (std below ``min_std``) keeps scale
    1 and a warning names the layer and the feature (see `tfinv.ops.act_norm.initial_parameters`).

    Args:
        epsilon: floor added to the standard deviation at initialisation.
        min_std: features with a smaller batch standard deviation count as constant.

    References: Kingma & Dhariwal, "Glow", arXiv:1807.03039, §3.1; English et al., "MixerFlow",
    arXiv:2310.16777 (ActNorm initialisation of the mixing flows).
    """

    event_ndims = 1

    def __init__(self, epsilon: float = 1e-6, min_std: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.min_std = float(min_std)

    def build(self, input_shape):
        features = self.input_event_shape[-1]
        self.bias = self.add_weight(name="bias", shape=(features,), initializer="zeros")
        self.log_scale = self.add_weight(name="log_scale", shape=(features,), initializer="zeros")
        super().build(input_shape)

    def _log_det(self, x):
        return batch_log_det(tf.reduce_sum(self.log_scale), x, self.event_ndims)

    def _forward_and_log_det(self, x):
        return (x + self.bias) * tf.exp(self.log_scale), self._log_det(x)

    def _inverse_and_log_det(self, z):
        return z * tf.exp(-self.log_scale) - self.bias, -self._log_det(z)

    def _initialize(self, x):
        initialize_from_batch(self, x, "feature")

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "min_std": self.min_std}
