"""The invertible residual block of i-ResNet and Residual Flows."""

from __future__ import annotations

import keras

from tfinv.core.residual_layer import ResidualLayer
from tfinv.nets.lipschitz_net import LipschitzNet


@keras.saving.register_keras_serializable(package="tfinv")
class InvertibleResidualBlock(ResidualLayer):
    """``y = x + g(x)``, ``g`` a `LipschitzNet` (spectrally normalised convolutions, or dense
    layers for vectors, between LipSwish/CLipSwish activations) with ``Lip(g) <= c < 1``.

    Inverse: fixed-point iteration ``x <- y - g(x)`` (a loop; ONNX ``Loop``) to
    ``inverse_tolerance``; non-convergence raises `FixedPointError` in eager mode and an assertion
    under ``validate_args``, and is flagged by `inverse_with_info`.
    Log-det: ``log det(I + J_g(x)) = sum_k (-1)^{k+1} tr(J_g^k) / k``, estimated (see
    `tfinv.core.residual_layer`): Russian roulette or a truncated series with Hutchinson probes in
    training; outside training a deterministic series (exact trace, or fixed stored probes).
    Shapes: ``(B, H, W, C)`` (``vector=False``) or ``(B, D)`` (``vector=True``); log-det ``(B,)``.

    Our variant: Jacobian-vector products in forward mode instead of the paper's vector-Jacobian
    products (same estimator: ``tr`` is transpose-invariant); every linear map is bounded by
    ``c`` (so ``Lip(g) <= c^n``), as in Residual Flows' code, rather than ``g`` as a whole.

    Args:
        hidden_features: width of ``g``'s hidden layers.
        num_hidden_layers, kernel_size, activation, power_iterations, preactivation: of ``g``
            (see `LipschitzNet`).
        vector: vectors (dense layers, ``event_ndims = 1``) instead of images.
        **kwargs: the log-det, inverse and coefficient options of `ResidualLayer`.

    References: Behrmann et al., "Invertible Residual Networks", arXiv:1811.00995; Chen et al.,
    "Residual Flows for Invertible Generative Modeling", arXiv:1906.02735.
    """

    event_ndims = 3

    def __init__(self, hidden_features: int = 32, num_hidden_layers: int = 2, kernel_size: int = 3,
                 activation: str = "lipswish", power_iterations: int = 5, preactivation: bool = True,
                 vector: bool = False, **kwargs):
        self.vector = bool(vector)
        if self.vector:
            self.event_ndims = 1  # instance override, before the bijector is set up
        super().__init__(**kwargs)
        self.hidden_features = int(hidden_features)
        self.num_hidden_layers = int(num_hidden_layers)
        self.kernel_size = int(kernel_size)
        self.activation = activation
        self.power_iterations = int(power_iterations)
        self.preactivation = bool(preactivation)
        self.net = None

    def build(self, input_shape):
        self._record_event_shape(input_shape)
        self.net = LipschitzNet(
            int(input_shape[-1]), self.hidden_features, self.num_hidden_layers, self.kernel_size,
            self.activation, self.coefficient, self.power_iterations, self.preactivation,
            kind="dense" if self.vector else "conv", seed=self.seed, name="g")
        self.net.build(tuple(input_shape))
        self._build_probes(input_shape)
        super().build(input_shape)

    def get_config(self):
        return {**super().get_config(), "hidden_features": self.hidden_features,
                "num_hidden_layers": self.num_hidden_layers, "kernel_size": self.kernel_size,
                "activation": self.activation, "power_iterations": self.power_iterations,
                "preactivation": self.preactivation, "vector": self.vector}
