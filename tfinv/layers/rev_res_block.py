"""RevNet's reversible residual block on images: two convolutional residual functions coupled additively."""

from __future__ import annotations

import keras

from tfinv.layers.bases.reversible_block import TwoStreamBlock
from tfinv.nets.conv_residual import conv_residual


@keras.saving.register_keras_serializable(package="tfinv")
class RevResBlock(TwoStreamBlock):
    """``[x1, x2] -> [y1, y2]`` on images split into two channel halves, with
    ``y1 = x1 + F(x2)`` and ``y2 = x2 + G(y1)``; ``F`` and ``G`` are RevNet's basic residual
    functions ``ReLU -> Conv kxk -> ReLU -> Conv kxk`` on ``C/2`` channels.

    Inverse: ``x2 = y2 - G(y1)``, ``x1 = y1 - F(x2)``.

    Log-det: 0 for every weight, returned with the batch shape ``(B,)``: the block is two additive
    couplings, each with a block unit-triangular Jacobian (determinant 1), so it preserves volume.

    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``C`` even (streams ``x1 = x[..., :C/2]``,
    ``x2 = x[..., C/2:]``); log-det ``(B,)``.

    Memory: in `tfinv.blocks.ReversibleStack` the backward pass rebuilds the block's input from its
    output (Gomez et al., Algorithm 1), so no activations are stored.

    Args:
        hidden_channels: width of the residual functions' hidden convolution (default ``C/2``).
        kernel_size: size of the convolutions (odd).

    References: Gomez, Ren, Urtasun & Grosse, "The Reversible Residual Network: Backpropagation
    Without Storing Activations", arXiv:1707.04585, §3 (eq. 5-6) and Algorithm 1.
    """

    event_ndims = 3

    def __init__(self, hidden_channels: int | None = None, kernel_size: int = 3, **kwargs):
        super().__init__(**kwargs)
        if hidden_channels is not None and int(hidden_channels) < 1:
            raise ValueError(f"RevResBlock hidden_channels must be >= 1, got {hidden_channels}")
        if int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise ValueError(f"RevResBlock kernel_size must be a positive odd integer, got {kernel_size}")
        self.hidden_channels = None if hidden_channels is None else int(hidden_channels)
        self.kernel_size = int(kernel_size)

    def _build_residuals(self, stream_shape):
        channels = stream_shape[-1]
        hidden = self.hidden_channels or channels
        self.residual_f = conv_residual(hidden, channels, self.kernel_size, name="residual_f")
        self.residual_g = conv_residual(hidden, channels, self.kernel_size, name="residual_g")
        self.residual_f.build(stream_shape)
        self.residual_g.build(stream_shape)

    def _residual_f(self, x2):
        return self.residual_f(x2)

    def _residual_g(self, y1):
        return self.residual_g(y1)

    def get_config(self):
        return {**super().get_config(), "hidden_channels": self.hidden_channels,
                "kernel_size": self.kernel_size}
