"""i-DenseNet's Lipschitz-constrained dense branch ``g``."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.nets.c_lip_swish import CLipSwish
from tfinv.nets.spectral_norm_conv2d import SpectralNormConv2D
from tfinv.nets.spectral_norm_layer import SpectralNormNetwork
from tfinv.ops.spectral_norm import check_coefficient


@keras.saving.register_keras_serializable(package="tfinv")
class DenseLipschitzNet(SpectralNormNetwork):
    """``g = L_out o D_n o ... o D_1`` with dense units
    ``D_i(h) = [eta_1 h, eta_2 CLipSwish(L_i h)]`` (channel concatenation, ``eta_1^2 + eta_2^2 = 1``
    learnable per unit) and spectrally normalised convolutions ``L_i`` (``||L_i|| <= c``).

    ``||D_i(a) - D_i(b)||^2 <= (eta_1^2 + eta_2^2 c^2) ||a - b||^2 <= ||a - b||^2``, so
    ``Lip(g) <= ||L_out|| <= c``. Every unit adds ``2 * growth`` channels (CLipSwish doubles).

    Args:
        out_features: output channels (= the block's input channels).
        growth: output channels of each ``L_i`` (before CLipSwish doubles them).
        depth: number of dense units ``n``.
        kernel_size: size of every convolution (``L_i`` and ``L_out``).
        coefficient: ``c``.
        power_iterations: power-iteration steps per training update.
        seed: seed of the kernels.

    `linearize` gives ``g(x)`` and a forward-mode Jacobian-vector product (see `LipschitzNet`).
    References: Perugachi-Diaz et al., "Invertible DenseNets with Concatenated LipSwish",
    arXiv:2102.02694, §3 (learnable concatenation, CLipSwish).
    """

    def __init__(self, out_features: int, growth: int = 16, depth: int = 3, kernel_size: int = 3,
                 coefficient: float = 0.97, power_iterations: int = 5, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if int(depth) < 1 or int(growth) < 1:
            raise ValueError(f"DenseLipschitzNet needs depth >= 1 and growth >= 1, got {depth}, {growth}")
        self.out_features = int(out_features)
        self.growth = int(growth)
        self.depth = int(depth)
        self.kernel_size = int(kernel_size)
        self.coefficient = check_coefficient(coefficient, "DenseLipschitzNet")
        self.power_iterations = int(power_iterations)
        self.seed = int(seed)
        common = dict(coefficient=self.coefficient, power_iterations=self.power_iterations)
        self.units = [SpectralNormConv2D(self.growth, self.kernel_size, seed=self.seed + i, name=f"dense_{i}",
                                         **common) for i in range(self.depth)]
        self.activations = [CLipSwish(name=f"act_{i}") for i in range(self.depth)]
        self.out = SpectralNormConv2D(self.out_features, self.kernel_size, seed=self.seed + self.depth,
                                      name="out", **common)

    @property
    def linear_layers(self):
        return self.units + [self.out]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for unit, act in zip(self.units, self.activations):
            unit.build(shape)
            act.build(shape[:-1] + (self.growth,))
            shape = shape[:-1] + (shape[-1] + 2 * self.growth,)
        self.out.build(shape)
        # Raw mixing weights per unit; (eta_1, eta_2) = (a, b) / ||(a, b)||, starting equal.
        self.eta_raw = self.add_weight(name="eta_raw", shape=(self.depth, 2), initializer="ones")
        super().build(input_shape)

    def etas(self, dtype) -> tf.Tensor:
        """``(depth, 2)`` mixing weights with unit rows."""
        raw = tf.cast(self.eta_raw, dtype)
        return raw / tf.sqrt(tf.reduce_sum(tf.square(raw), axis=-1, keepdims=True) + 1e-12)

    def lipschitz_bound(self, iterations: int = 200) -> tf.Tensor:
        """``||L_out|| prod_i sqrt(eta_1^2 + eta_2^2 ||L_i||^2)`` with fresh norm estimates."""
        etas = self.etas(tf.float32)
        bound = self.out.spectral_norm(iterations)
        for i, unit in enumerate(self.units):
            bound = bound * tf.sqrt(etas[i, 0] ** 2 + etas[i, 1] ** 2 * unit.spectral_norm(iterations) ** 2)
        return bound

    def linearize(self, x: tf.Tensor):
        """``(g(x), jvp)``, ``jvp(t) = J_g(x) t`` for tangents of shape ``(P, *x.shape)``."""
        etas = self.etas(x.dtype)
        steps = []
        for i, (unit, act) in enumerate(zip(self.units, self.activations)):
            h, jvp_unit = unit.linearize(x)
            h, jvp_act = act.linearize(h)
            steps.append((etas[i, 0], etas[i, 1], jvp_unit, jvp_act))
            x = tf.concat([etas[i, 0] * x, etas[i, 1] * h], axis=-1)
        y, jvp_out = self.out.linearize(x)

        def jvp(t):
            for eta_1, eta_2, jvp_unit, jvp_act in steps:
                t = tf.concat([eta_1 * t, eta_2 * jvp_act(jvp_unit(t))], axis=-1)
            return jvp_out(t)

        return y, jvp

    def get_config(self):
        return {**super().get_config(), "out_features": self.out_features, "growth": self.growth,
                "depth": self.depth, "kernel_size": self.kernel_size, "coefficient": self.coefficient,
                "power_iterations": self.power_iterations, "seed": self.seed}
