"""A chain of corner-padded k x k convolutions over all channels (tfinv's earlier "FInC" layer)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.layers.bases.triangular_conv_layer import TriangularConvLayer

#: Spatial axes flipped to turn the top-left padded convolution into each corner's version.
_CORNERS = ((), (-3, -2), (-3,), (-2,))  # top-left, bottom-right, bottom-left, top-right


def _flip(x, axes):
    return tf.reverse(x, axis=list(axes)) if axes else x


@keras.saving.register_keras_serializable(package="tfinv")
class CInCChainConv(TriangularConvLayer):
    """``z = F_n(K_n * pad(F_n(... F_1(K_1 * pad(F_1 x)) ...)))``: ``n = corners`` ``k x k``
    convolutions, each padded by ``k - 1`` on two sides (top-left, then bottom-right,
    bottom-left, top-right, realised by flips ``F``). Each is a CInC-type triangular map (see
    `CInCConv`); composing opposite corners lets every output see a full
    ``(2k - 1) x (2k - 1)`` neighbourhood. ``corners=1`` is a single top-left padded conv.

    This is tfinv's variant, not FInC's unit (that is `FInCConv`: the channels split into four
    groups, each convolved in parallel in its own orientation, with unit diagonal). Here every
    convolution mixes all channels and has a learned diagonal, at ``corners`` times the cost.

    Inverse: the inverse convolutions in reverse order, each by FInC's parallel algorithm: all
    pixels of an anti-diagonal ``i + j = t`` depend only on earlier anti-diagonals (every tap is
    up and/or left), so a padded conv is inverted in ``H + W - 1`` sequential steps instead of
    ``H * W`` (``order="sequential"`` reproduces the pixel-by-pixel baseline).
    Log-det: ``H * W * sum_n sum(log_scale_n)``.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``H, W >= k``; log-det ``(B,)``.

    Args:
        kernel_size: ``k``.
        corners: 1, 2 or 4 orientations.
        init_scale, seed, order, fit_kernel_to_image: as in `CInCConv`.

    References: Kallappa, Nagar & Varma, "FInC Flow: Fast and Invertible k x k Convolutions
    for Normalizing Flows", arXiv:2301.09266.
    """

    anchor = "corner"

    def __init__(self, kernel_size: int = 3, corners: int = 2, **kwargs):
        if int(corners) not in (1, 2, 4):
            raise ValueError(f"CInCChainConv corners must be 1, 2 or 4, got {corners}")
        self.corners = int(corners)
        self.num_kernels = self.corners
        super().__init__(kernel_size=kernel_size, **kwargs)

    def _forward_and_log_det(self, x):
        z = x
        for kernel, axes in zip(self.kernels(), _CORNERS):
            z = _flip(self._conv(_flip(z, axes), kernel), axes)
        return z, self._log_det(x)

    def _inverse_and_log_det(self, z):
        x = z
        for kernel, axes in reversed(list(zip(self.kernels(), _CORNERS))):
            x = _flip(self._solve(_flip(x, axes), kernel), axes)
        return x, -self._log_det(z)

    def get_config(self):
        return {**super().get_config(), "corners": self.corners}
