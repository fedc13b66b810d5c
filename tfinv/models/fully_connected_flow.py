"""A fully connected flow (dense layers and smooth leaky ReLUs), trainable by the relative gradient."""

from __future__ import annotations

from typing import Any

import keras

from tfinv.core.flow_model import FlowModel
from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.layers.invertible_dense import InvertibleDense
from tfinv.layers.smooth_leaky_relu import SmoothLeakyReLU


def fully_connected_flow_layers(num_layers: int, negative_slope: float = 0.2, gradient: str = "ordinary",
                                training_log_det: str = "exact", seed: int = 0) -> list[InvertibleLayer]:
    """``[InvertibleDense, SmoothLeakyReLU, ..., InvertibleDense]`` (``num_layers`` dense layers)."""
    layers: list[InvertibleLayer] = []
    for i in range(num_layers):
        if i:
            layers.append(SmoothLeakyReLU(negative_slope, event_ndims=1, name=f"activation_{i}"))
        layers.append(InvertibleDense(gradient=gradient, training_log_det=training_log_det, seed=seed + i,
                                      name=f"dense_{i}"))
    return layers


@keras.saving.register_keras_serializable(package="tfinv")
class FullyConnectedFlow(FlowModel):
    """``z = W_L s(... s(W_1 x + b_1) ...) + b_L``: the fully connected flow of Gresele et al.

    ``W_l`` are unconstrained ``D x D`` matrices (`InvertibleDense`), ``s`` the smooth leaky ReLU
    (`SmoothLeakyReLU`, element-wise, slope ``negative_slope`` for ``x -> -inf``).
    Inverse: ``x = W_1^-1 (s^-1(... s^-1(W_L^-1 (z - b_L)) ...) - b_1)``.
    Log-det: ``sum_l log|det W_l| + sum log s'(.)``.
    Shapes: ``(B, D) -> (B, D)``.

    Relative-gradient training is the ``gradient="relative"`` option (the default here): it is a
    property of the dense layers, so ``model.fit`` with any optimizer trains with the relative
    gradient ``(dL/dW_l) W_l^T W_l`` of every ``W_l`` and no matrix inverse or determinant
    gradient (see `InvertibleDense`); biases get ordinary gradients. Gresele et al. pair it with
    plain SGD; adaptive optimizers rescale it entry-wise. ``gradient="ordinary"`` trains the same
    model by the true gradient (``W^-T`` from one inverse per layer and step).
    ``training_log_det="omit"`` also drops the ``O(D^3)`` value of ``log|det W_l|`` from the
    training loss (fit then reports the loss up to that constant-per-step term).

    Args:
        input_dim: ``D``.
        num_layers: number of dense layers ``L``.
        negative_slope: slope of the smooth leaky ReLU for large negative inputs.
        gradient: ``"relative"`` or ``"ordinary"``.
        training_log_det: ``"exact"`` or ``"omit"``.
        seed: seed of the initial rotations.
        base, validate_args, **kwargs: see `FlowModel`.

    References: Gresele, Fissore, Javaloy, Schölkopf & Hyvärinen, "Relative gradient
    optimization of the Jacobian term in unsupervised deep learning", arXiv:2006.15090.
    """

    def __init__(self, input_dim: int = 16, num_layers: int = 2, negative_slope: float = 0.2,
                 gradient: str = "relative", training_log_det: str = "exact", seed: int = 0, **kwargs: Any):
        if int(input_dim) < 1 or int(num_layers) < 1:
            raise ValueError(f"FullyConnectedFlow needs input_dim >= 1 and num_layers >= 1, got {input_dim}, "
                             f"{num_layers}")
        kwargs.pop("layers", None)
        kwargs.pop("input_shape", None)
        super().__init__(
            fully_connected_flow_layers(int(num_layers), float(negative_slope), gradient, training_log_det, int(seed)),
            input_shape=(int(input_dim),), **kwargs)
        self.input_dim = int(input_dim)
        self.num_layers = int(num_layers)
        self.negative_slope = float(negative_slope)
        self.gradient = gradient
        self.training_log_det = training_log_det
        self.seed = int(seed)

    @property
    def dense_layers(self) -> list[InvertibleDense]:
        return [layer for layer in self.flow.steps if isinstance(layer, InvertibleDense)]

    def get_config(self):
        return {**self._model_config(), "input_dim": self.input_dim, "num_layers": self.num_layers,
                "negative_slope": self.negative_slope, "gradient": self.gradient,
                "training_log_det": self.training_log_det, "seed": self.seed}
