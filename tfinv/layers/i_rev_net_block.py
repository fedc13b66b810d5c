"""i-RevNet's block: invertible downsampling, a bottleneck residual on one half, and a channel swap."""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from tfinv.core.invertible_layer import batch_log_det
from tfinv.layers.bases.reversible_block import ReversibleBlock
from tfinv.nets.conv_residual import conv_residual
from tfinv.ops.space_to_depth import depth_to_space_shape, space_to_depth_shape

STRIDES = (1, 2)


@keras.saving.register_keras_serializable(package="tfinv")
class IRevNetBlock(ReversibleBlock):
    """``[a, b] -> [S(b), S(a) + F(b)]``: the input's channel halves ``a`` (first) and ``b``;
    ``F`` is a bottleneck residual function ``ReLU -> Conv3x3 (stride s) -> ReLU -> Conv3x3 ->
    ReLU -> Conv3x3`` of ``b``, and ``S`` the invertible downsampling: space-to-depth with block 2
    when ``stride == 2`` (each 2x2 patch becomes 4 channels), the identity when ``stride == 1``.
    The halves swap places, so consecutive blocks update the two halves alternately.

    Inverse: ``b = S^-1(u)``, ``a = S^-1(v - F(b))`` for the output ``[u, v]``.

    Log-det: 0, returned with the batch shape ``(B,)``. ``S`` only rearranges entries (a
    permutation, ``|det| = 1``; it loses nothing, unlike pooling or a strided convolution, which
    is what makes the downsampling invertible), the swap is a permutation, and ``S(a) + F(b)`` is
    an additive coupling (unit-triangular Jacobian). The block preserves volume for every weight.

    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` for stride 1, ``(B, H/2, W/2, 4C)`` for stride 2;
    ``C`` even, and ``H``, ``W`` even for stride 2; log-det ``(B,)``.

    Memory: in `tfinv.blocks.ReversibleStack` the backward pass rebuilds the input from the
    output with one evaluation of ``F`` (which the VJP reuses), so no activations are stored.

    Args:
        stride: 1 or 2 (2: invertible downsampling by space-to-depth).
        hidden_channels: bottleneck width of ``F`` (default: a quarter of its output channels, as
            in i-RevNet, at least 1).
        kernel_size: size of the convolutions (odd).

    Batch normalisation of the original is left out (see `tfinv.nets.conv_residual`). The
    injective zero-padding of i-RevNet's input stage is not part of the block.

    References: Jacobsen, Smeulders & Oyallon, "i-RevNet: Deep Invertible Networks",
    arXiv:1802.07088, §3.1 and Fig. 2; Chang et al., "Reversible Architectures for Arbitrarily
    Deep Residual Neural Networks", arXiv:1709.03698; Gomez et al., arXiv:1707.04585.
    """

    event_ndims = 3

    def __init__(self, stride: int = 1, hidden_channels: int | None = None, kernel_size: int = 3,
                 **kwargs):
        super().__init__(**kwargs)
        if int(stride) not in STRIDES:
            raise ValueError(f"IRevNetBlock stride must be one of {STRIDES}, got {stride}")
        if hidden_channels is not None and int(hidden_channels) < 1:
            raise ValueError(f"IRevNetBlock hidden_channels must be >= 1, got {hidden_channels}")
        if int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise ValueError(f"IRevNetBlock kernel_size must be a positive odd integer, got {kernel_size}")
        self.stride = int(stride)
        self.hidden_channels = None if hidden_channels is None else int(hidden_channels)
        self.kernel_size = int(kernel_size)

    # ------------------------------------------------------------------ shapes
    def build(self, input_shape):
        height, width, channels = self.input_event_shape
        if channels is None or channels % 2:
            raise ValueError(
                f"IRevNetBlock '{self.name}' splits the channels into two halves: C must be even, "
                f"got {channels} (input shape {tuple(input_shape)})"
            )
        if self.stride == 2 and ((height is not None and height % 2) or (width is not None and width % 2)):
            raise ValueError(
                f"IRevNetBlock '{self.name}' with stride 2 needs even H and W, got (H, W) = "
                f"({height}, {width})"
            )
        half = channels // 2
        out_half = half * self.stride**2
        hidden = self.hidden_channels or max(1, out_half // 4)
        self.half_channels = half
        self.residual = conv_residual(hidden, out_half, self.kernel_size, strides=self.stride,
                                      depth=3, name="residual")
        self.residual.build(tuple(input_shape[:-1]) + (half,))
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return space_to_depth_shape(input_shape, self.stride)

    def compute_input_shape(self, output_shape):
        return depth_to_space_shape(output_shape, self.stride)

    # ------------------------------------------------------------------ maps
    def _down(self, t):
        return tf.nn.space_to_depth(t, 2) if self.stride == 2 else t

    def _up(self, t):
        return tf.nn.depth_to_space(t, 2) if self.stride == 2 else t

    def _split_output(self, y):
        out_half = self.half_channels * self.stride**2
        return y[..., :out_half], y[..., out_half:]

    def _forward_and_log_det(self, x):
        a, b = x[..., : self.half_channels], x[..., self.half_channels :]
        y = tf.concat([self._down(b), self._down(a) + self.residual(b)], axis=-1)
        return y, batch_log_det(0.0, x, self.event_ndims)

    def _inverse_and_log_det(self, y):
        u, v = self._split_output(y)
        b = self._up(u)
        a = self._up(v - self.residual(b))
        return tf.concat([a, b], axis=-1), batch_log_det(0.0, y, self.event_ndims)

    def reconstruct_and_vjp(self, y, dy, d_log_det, variables: Sequence):
        """One evaluation of ``F`` rebuilds ``a`` and gives the VJP. ``S`` is a permutation, so
        its transpose is its inverse: ``dx_a = S^-1(dv)``, ``dx_b = S^-1(du) + (dF/db)^T dv``."""
        del d_log_det
        u, v = self._split_output(y)
        du, dv = self._split_output(dy)
        b = tf.stop_gradient(self._up(u))
        with tf.GradientTape() as tape:
            tape.watch(b)
            f = self.residual(b)
        grads = tape.gradient(f, [b, *variables], output_gradients=dv)
        a = self._up(v - f)
        dx = tf.concat([self._up(dv), self._up(du) + grads[0]], axis=-1)
        return tf.concat([a, b], axis=-1), dx, list(grads[1:])

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "hidden_channels": self.hidden_channels,
                "kernel_size": self.kernel_size}
