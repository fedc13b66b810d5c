"""A dense layer with a spectrally normalised kernel."""

from __future__ import annotations

import keras

from tfinv.nets.spectral_norm_layer import SpectralNormLayer
from tfinv.ops import spectral_norm as ops


@keras.saving.register_keras_serializable(package="tfinv")
class SpectralNormDense(SpectralNormLayer):
    """``y = x W / max(1, sigma(W) / c) + b`` on the last axis, ``sigma`` the power-iteration
    estimate of ``||W||_2``; so ``Lip(y) <= c`` (up to the estimate's convergence).

    Args:
        units: output size.
        coefficient, power_iterations, use_bias, seed: see `SpectralNormLayer`.

    Input shape ``(..., n_in)``; output shape ``(..., units)``.

    References: Miyato et al., "Spectral Normalization for GANs", arXiv:1802.05957; Behrmann et al.,
    "Invertible Residual Networks", arXiv:1811.00995, §3 (the coefficient ``c < 1``).
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def _kernel_shape(self, input_shape):
        return (int(input_shape[-1]), self.units)

    def _vector_shapes(self, input_shape):
        return (1, self.units), (1, int(input_shape[-1]))

    def _power_iteration(self, kernel, u, v, iterations):
        return ops.dense_power_iteration(kernel, u, v, iterations)

    def _apply(self, kernel, x):
        return ops.dense_apply(kernel, x)

    def build(self, input_shape):
        self._add_spectral_weights(input_shape, self.units)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units}
