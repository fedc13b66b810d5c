"""i-RevNet's invertible downsampling followed by a learned orthogonal mixing of the channels."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.ops import orthogonal
from tfinv.ops.space_to_depth import check_divisible, depth_to_space_shape, space_to_depth_shape


@keras.saving.register_keras_serializable(package="tfinv")
class OrthogonalDownsampling(InvertibleLayer):
    """``z = Q . space_to_depth_f(x)``: each ``f x f`` pixel block becomes ``f^2 C`` channels,
    then a learned rotation ``Q`` mixes them at every output pixel.

    ``Q = (I + A)^-1 (I - A)`` is the Cayley transform of the skew-symmetric
    ``A = (W - W^T) / 2`` of a trained ``f^2 C x f^2 C`` weight ``W``; it is orthogonal
    (``det Q = +1``) for every ``W``. ``W = 0`` (the initial value) gives ``Q = I``: exactly
    i-RevNet's fixed space-to-depth downsampling.

    Inverse: ``x = depth_to_space_f(Q^T . z)`` (``Q^-1 = Q^T``, parameter-only: folded into a
    constant at export; the graph holds SpaceToDepth/DepthToSpace and a 1x1 Conv).
    Log-det: 0 (a permutation followed by a rotation).
    Shapes: ``(B, H, W, C) -> (B, H/f, W/f, f^2 C)``; H and W must be divisible by ``f``;
    log-det ``(B,)``.

    Args:
        factor: block size ``f`` (default 2, as in i-RevNet).

    References: Jacobsen, Smeulders & Oyallon, "i-RevNet: Deep Invertible Networks",
    arXiv:1802.07088, §3.1 (invertible downsampling); Cayley parameterisation of rotations, e.g.
    Helfrich et al., "Orthogonal Recurrent Neural Networks with Scaled Cayley Transform",
    arXiv:1707.09520.
    """

    event_ndims = 3
    full_precision = True  # solvers/FFTs have no half-precision kernels

    def __init__(self, factor: int = 2, **kwargs):
        super().__init__(**kwargs)
        if int(factor) < 2:
            raise ValueError(f"OrthogonalDownsampling factor must be >= 2, got {factor}")
        self.factor = int(factor)

    def _check_divisible(self, height, width):
        check_divisible(f"OrthogonalDownsampling '{self.name}'", height, width, self.factor)

    def build(self, input_shape):
        height, width, channels = self.input_event_shape
        self._check_divisible(height, width)
        if channels is None:
            raise ValueError(
                f"OrthogonalDownsampling '{self.name}' needs a known channel count, "
                f"got input shape {tuple(input_shape)}"
            )
        size = self.factor * self.factor * channels
        self.skew_weight = self.add_weight(
            name="skew_weight", shape=(size, size), initializer="zeros"
        )
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return space_to_depth_shape(input_shape, self.factor)

    def compute_input_shape(self, output_shape):
        return depth_to_space_shape(output_shape, self.factor)

    def rotation(self) -> tf.Tensor:
        """The orthogonal ``f^2 C x f^2 C`` matrix ``Q`` (output channel index first)."""
        return orthogonal.cayley(self.skew_weight)

    def _forward_and_log_det(self, x):
        self._check_divisible(x.shape[-3], x.shape[-2])
        blocks = tf.nn.space_to_depth(x, self.factor)
        z = orthogonal.mix_channels(blocks, tf.cast(self.rotation(), x.dtype))
        return z, batch_log_det(0.0, x, self.event_ndims)

    def _inverse_and_log_det(self, z):
        blocks = orthogonal.mix_channels(z, tf.transpose(tf.cast(self.rotation(), z.dtype)))
        return tf.nn.depth_to_space(blocks, self.factor), batch_log_det(0.0, z, self.event_ndims)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
