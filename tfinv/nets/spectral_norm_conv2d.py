"""A 2-D convolution whose operator norm on the layer's image size is bounded."""

from __future__ import annotations

import keras

from tfinv.nets.spectral_norm_layer import SpectralNormLayer
from tfinv.ops import spectral_norm as ops


@keras.saving.register_keras_serializable(package="tfinv")
class SpectralNormConv2D(SpectralNormLayer):
    """``y = conv2d(x, K / max(1, sigma(K) / c)) + b`` ("SAME" padding, stride 1), ``sigma`` the
    power-iteration estimate of the norm of the convolution *as an operator on H x W images*
    (the input size seen at build): ``u`` and ``v`` are whole images, iterated with the
    convolution and its transpose. So ``Lip(y) <= c`` on those images.

    Args:
        filters: output channels.
        kernel_size: odd spatial size of the kernel.
        coefficient, power_iterations, use_bias, seed: see `SpectralNormLayer`.

    Input shape ``(B, H, W, C_in)`` (H, W fixed at build); output shape ``(B, H, W, filters)``.

    References: Gouk et al., "Regularisation of Neural Networks by Enforcing Lipschitz
    Continuity", arXiv:1804.04368 (operator norm of a convolution); Behrmann et al., i-ResNet,
    arXiv:1811.00995, §3.
    """

    def __init__(self, filters: int, kernel_size: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"SpectralNormConv2D needs an odd kernel_size >= 1, got {kernel_size}")

    def _kernel_shape(self, input_shape):
        return (self.kernel_size, self.kernel_size, int(input_shape[-1]), self.filters)

    def _vector_shapes(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 4 or any(s is None for s in shape[1:3]):
            raise ValueError(f"SpectralNormConv2D needs a static image shape (B, H, W, C), got {shape}")
        height, width = int(shape[1]), int(shape[2])
        return (1, height, width, self.filters), (1, height, width, int(shape[-1]))

    def _power_iteration(self, kernel, u, v, iterations):
        return ops.conv_power_iteration(kernel, u, v, iterations)

    def _apply(self, kernel, x):
        return ops.conv_apply(kernel, x)

    def build(self, input_shape):
        self._add_spectral_weights(input_shape, self.filters)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size}
