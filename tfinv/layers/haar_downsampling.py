"""Haar wavelet downsampling: a fixed orthonormal 2x2 wavelet transform per channel."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.ops import orthogonal
from tfinv.ops.space_to_depth import check_divisible, depth_to_space_shape, space_to_depth_shape


@keras.saving.register_keras_serializable(package="tfinv")
class HaarDownsampling(InvertibleLayer):
    """``(H, W, C) -> (H/2, W/2, 4C)``: the orthonormal 2D Haar transform of every 2x2 block,
    per channel. For a block ``[[a, b], [c, d]]``::

        low = (a + b + c + d)/2    horizontal = (a - b + c - d)/2
        vertical = (a + b - c - d)/2    diagonal = (a - b - c + d)/2

    Output channels are grouped by sub-band: ``[low (C), horizontal (C), vertical (C),
    diagonal (C)]``, so the first ``C`` channels are the (scaled) half-resolution image and a
    multi-scale flow can split off the detail channels.

    Inverse: the same butterfly on the four sub-bands (the transform matrix is symmetric and
    orthogonal, its own inverse), then depth-to-space.
    Log-det: 0 (orthonormal; no rescaling of the sub-bands).
    Shapes: ``(B, H, W, C) -> (B, H/2, W/2, 4C)``; H and W must be even; log-det ``(B,)``.
    Exported graph: SpaceToDepth/DepthToSpace, Split, Add/Sub/Mul, Concat.

    References: Haar (1910); Ardizzone et al., "Guided Image Generation with Conditional
    Invertible Neural Networks", arXiv:1907.02392 (Haar downsampling in invertible networks);
    Jacobsen et al., "i-RevNet", arXiv:1802.07088 (invertible downsampling).
    """

    event_ndims = 3

    def _check_even(self, height, width):
        check_divisible(f"HaarDownsampling '{self.name}'", height, width, 2)

    def build(self, input_shape):
        height, width, _ = self.input_event_shape
        self._check_even(height, width)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return space_to_depth_shape(input_shape, 2)

    def compute_input_shape(self, output_shape):
        return depth_to_space_shape(output_shape, 2)

    @staticmethod
    def _transform(t):
        # Split the 4C channels into four groups of C and apply the (self-inverse) butterfly.
        return tf.concat(orthogonal.haar_butterfly(*tf.split(t, 4, axis=-1)), axis=-1)

    def _forward_and_log_det(self, x):
        self._check_even(x.shape[-3], x.shape[-2])
        # space_to_depth orders channels by block position (dy, dx): [a, b, c, d], C each.
        z = self._transform(tf.nn.space_to_depth(x, 2))
        return z, batch_log_det(0.0, x, self.event_ndims)

    def _inverse_and_log_det(self, z):
        x = tf.nn.depth_to_space(self._transform(z), 2)
        return x, batch_log_det(0.0, z, self.event_ndims)
