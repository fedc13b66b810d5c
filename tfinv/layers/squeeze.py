"""Space-to-depth squeeze (RealNVP / Glow multi-scale architecture)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.ops.space_to_depth import check_divisible, depth_to_space_shape, space_to_depth_shape


@keras.saving.register_keras_serializable(package="tfinv")
class Squeeze(InvertibleLayer):
    """``(H, W, C) -> (H/f, W/f, f*f*C)``: each ``f x f`` block of pixels becomes channels.

    Inverse: depth-to-space. Log-det: 0 (a permutation of entries).
    Shapes: ``(B, H, W, C) -> (B, H/f, W/f, f^2 C)``; H and W must be divisible by ``f``.

    Args:
        factor: block size ``f`` (default 2).

    References: Dinh et al., "Density estimation using Real NVP", arXiv:1605.08803, §3.6.
    """

    event_ndims = 3

    def __init__(self, factor: int = 2, **kwargs):
        super().__init__(**kwargs)
        if int(factor) < 2:
            raise ValueError(f"Squeeze factor must be >= 2, got {factor}")
        self.factor = int(factor)

    def build(self, input_shape):
        height, width, _ = self.input_event_shape
        check_divisible(f"Squeeze '{self.name}'", height, width, self.factor)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return space_to_depth_shape(input_shape, self.factor)

    def compute_input_shape(self, output_shape):
        return depth_to_space_shape(output_shape, self.factor)

    def _forward_and_log_det(self, x):
        return tf.nn.space_to_depth(x, self.factor), batch_log_det(0.0, x, self.event_ndims)

    def _inverse_and_log_det(self, z):
        return tf.nn.depth_to_space(z, self.factor), batch_log_det(0.0, z, self.event_ndims)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
