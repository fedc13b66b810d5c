"""The invertible dense block of i-DenseNet."""

from __future__ import annotations

import keras

from tfinv.layers.bases.residual_layer import ResidualLayer
from tfinv.nets.dense_lipschitz_net import DenseLipschitzNet


@keras.saving.register_keras_serializable(package="tfinv")
class InvertibleDenseBlock(ResidualLayer):
    """``y = x + g(x)``, ``g`` a `DenseLipschitzNet`: dense units ``[eta_1 h, eta_2 CLipSwish(L h)]``
    with learnable normalised mixing ``(eta_1, eta_2)``, then a spectrally normalised convolution
    back to C channels; ``Lip(g) <= c < 1``.

    Inverse: fixed-point iteration (as `InvertibleResidualBlock`). Log-det: the estimated power
    series of ``log det(I + J_g)`` (see `tfinv.layers.bases.residual_layer`).
    Shapes: ``(B, H, W, C) -> (B, H, W, C)``; log-det ``(B,)``.

    Our variant: i-DenseNet bounds every convolution by ``c`` and the concatenation by the unit
    norm of ``(eta_1, eta_2)`` exactly as here; its log-det/gradient machinery is Residual Flows'
    (shared with `InvertibleResidualBlock`), with forward-mode Jacobian-vector products.

    Args:
        growth: channels each dense unit's convolution outputs (CLipSwish doubles them).
        depth: dense units.
        kernel_size: convolution size.
        power_iterations: power-iteration steps per training update.
        **kwargs: the log-det, inverse and coefficient options of `ResidualLayer`.

    References: Perugachi-Diaz, Tomczak & Bhulai, "Invertible DenseNets with Concatenated
    LipSwish", arXiv:2102.02694; Chen et al., "Residual Flows", arXiv:1906.02735.
    """

    event_ndims = 3

    def __init__(self, growth: int = 16, depth: int = 3, kernel_size: int = 3, power_iterations: int = 5,
                 **kwargs):
        super().__init__(**kwargs)
        self.growth = int(growth)
        self.depth = int(depth)
        self.kernel_size = int(kernel_size)
        self.power_iterations = int(power_iterations)
        self.net = None

    def build(self, input_shape):
        self._record_event_shape(input_shape)
        self.net = DenseLipschitzNet(int(input_shape[-1]), self.growth, self.depth, self.kernel_size,
                                     self.coefficient, self.power_iterations, seed=self.seed, name="g")
        self.net.build(tuple(input_shape))
        self._build_probes(input_shape)
        super().build(input_shape)

    def get_config(self):
        return {**super().get_config(), "growth": self.growth, "depth": self.depth,
                "kernel_size": self.kernel_size, "power_iterations": self.power_iterations}
