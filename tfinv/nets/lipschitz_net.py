"""The Lipschitz-constrained residual branch ``g`` of an invertible residual block."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.nets.c_lip_swish import CLipSwish
from tfinv.nets.c_pila import CPila
from tfinv.nets.lip_swish import LipSwish
from tfinv.nets.spectral_norm_conv2d import SpectralNormConv2D
from tfinv.nets.spectral_norm_dense import SpectralNormDense
from tfinv.nets.spectral_norm_layer import SpectralNormNetwork
from tfinv.ops.spectral_norm import check_coefficient

ACTIVATIONS = {"lipswish": LipSwish, "clipswish": CLipSwish, "cpila": CPila}
KINDS = ("conv", "dense")


@keras.saving.register_keras_serializable(package="tfinv")
class LipschitzNet(SpectralNormNetwork):
    """``g = L_n o act o ... o act o L_1 [o act]``: spectrally normalised linear maps ``L_i``
    (each ``||L_i|| <= c``) between 1-Lipschitz activations, so ``Lip(g) <= c^n <= c``.

    The Residual Flows branch for images is ``act -> conv k x k -> act -> conv 1x1 -> act ->
    conv k x k`` (``preactivation=True``, two hidden layers); ``kind="dense"`` uses dense layers
    on the last axis (vectors). With ``activation="clipswish"`` (i-DenseNet's CLipSwish) or
    ``"cpila"`` (Monotone Flows' CPila) every activation doubles the channels it passes on.

    `linearize` returns ``g(x)`` and a Jacobian-vector product at ``x`` computed in forward mode
    (kernels and activation derivatives kept from the one forward pass), so the power series of
    the log-det costs one cheap product per term.

    Args:
        out_features: output channels/units (= the block's input channels).
        hidden_features: width of the hidden layers.
        num_hidden_layers: hidden layers (``n = num_hidden_layers + 1`` linear maps).
        kernel_size: outer convolutions' size (the inner ones are 1x1); ignored for dense.
        activation: ``"lipswish"``, ``"clipswish"`` or ``"cpila"``.
        coefficient: ``c``, the bound on each linear map's spectral norm.
        power_iterations: power-iteration steps per training update.
        preactivation: start with an activation (Residual Flows' order).
        kind: ``"conv"`` (images) or ``"dense"`` (vectors).
        seed: seed of the kernels.
    """

    def __init__(self, out_features: int, hidden_features: int = 32, num_hidden_layers: int = 2,
                 kernel_size: int = 3, activation: str = "lipswish", coefficient: float = 0.97,
                 power_iterations: int = 5, preactivation: bool = True, kind: str = "conv",
                 seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"LipschitzNet activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if kind not in KINDS:
            raise ValueError(f"LipschitzNet kind must be one of {KINDS}, got {kind!r}")
        if int(num_hidden_layers) < 0:
            raise ValueError(f"LipschitzNet needs num_hidden_layers >= 0, got {num_hidden_layers}")
        self.out_features = int(out_features)
        self.hidden_features = int(hidden_features)
        self.num_hidden_layers = int(num_hidden_layers)
        self.kernel_size = int(kernel_size)
        self.activation = activation
        self.coefficient = check_coefficient(coefficient, "LipschitzNet")
        self.power_iterations = int(power_iterations)
        self.preactivation = bool(preactivation)
        self.kind = kind
        self.seed = int(seed)
        widths = [self.hidden_features] * self.num_hidden_layers + [self.out_features]
        self.pieces = []
        for i, width in enumerate(widths):
            if i > 0 or self.preactivation:
                self.pieces.append(ACTIVATIONS[activation](name=f"act_{i}"))
            kernel = self.kernel_size if i in (0, len(widths) - 1) else 1
            common = dict(coefficient=self.coefficient, power_iterations=self.power_iterations,
                          seed=self.seed + i, name=f"linear_{i}")
            self.pieces.append(SpectralNormConv2D(width, kernel, **common) if kind == "conv"
                               else SpectralNormDense(width, **common))

    @property
    def linear_layers(self):
        return [p for p in self.pieces if hasattr(p, "update_spectral_norm")]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for piece in self.pieces:
            piece.build(shape)
            shape = tuple(piece.compute_output_shape(shape))
        super().build(input_shape)

    def lipschitz_bound(self, iterations: int = 200) -> tf.Tensor:
        """Product of fresh estimates of the linear maps' norms (activations are 1-Lipschitz)."""
        bound = tf.constant(1.0)
        for layer in self.linear_layers:
            bound = bound * layer.spectral_norm(iterations)
        return bound

    def linearize(self, x: tf.Tensor):
        """``(g(x), jvp)``, ``jvp(t) = J_g(x) t`` for tangents of shape ``(P, *x.shape)``."""
        jvps = []
        for piece in self.pieces:
            x, jvp = piece.linearize(x)
            jvps.append(jvp)

        def jvp(t):
            for f in jvps:
                t = f(t)
            return t

        return x, jvp

    def get_config(self):
        return {**super().get_config(), "out_features": self.out_features,
                "hidden_features": self.hidden_features, "num_hidden_layers": self.num_hidden_layers,
                "kernel_size": self.kernel_size, "activation": self.activation,
                "coefficient": self.coefficient, "power_iterations": self.power_iterations,
                "preactivation": self.preactivation, "kind": self.kind, "seed": self.seed}
