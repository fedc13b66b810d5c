"""iUNet's learnable invertible upsampling: the transposed orthogonal stride-f convolution."""

from __future__ import annotations

import keras

from tfinv.core.invertible_layer import batch_log_det
from tfinv.layers.invertible_downsampling import InvertibleDownsampling
from tfinv.ops.space_to_depth import depth_to_space_shape, space_to_depth_shape


@keras.saving.register_keras_serializable(package="tfinv")
class InvertibleUpsampling(InvertibleDownsampling):
    """``z_c = sum_i Q_c[i, :] x_{c f^2 + i}`` placed back as ``f x f`` blocks: the inverse map of
    `InvertibleDownsampling` with its own learned ``Q_c`` (same parameterisations and
    initialisations), ``f^2 C -> C`` channels.

    Inverse: the strided orthogonal convolution of `InvertibleDownsampling`.
    Log-det: 0 (orthogonal), with the batch shape.
    Shapes: ``(B, H, W, f^2 C) -> (B, f H, f W, C)``; log-det ``(B,)``.

    In an iUNet the upsampling of a level starts as the exact inverse of that level's downsampling
    (both at ``Q_0``), so with zero-initialised couplings the network starts as the identity.

    References: Etmann, Ke & Schönlieb, arXiv:2005.05220, §3.1; reference code cetmann/iunets.
    """

    def _low_channels(self) -> int:
        channels = self.input_event_shape[-1]
        if channels % self.factor**2:
            raise ValueError(f"InvertibleUpsampling '{self.name}' needs C divisible by {self.factor**2}, "
                             f"got {channels}")
        return channels // self.factor**2

    def _check_input(self, shape):
        del shape  # any H, W: the output is f H x f W

    def compute_output_shape(self, input_shape):
        return depth_to_space_shape(input_shape, self.factor)

    def compute_input_shape(self, output_shape):
        return space_to_depth_shape(output_shape, self.factor)

    def _forward_and_log_det(self, x):
        return self._up(x), batch_log_det(0.0, x, self.event_ndims)

    def _inverse_and_log_det(self, z):
        return self._down(z), batch_log_det(0.0, z, self.event_ndims)
