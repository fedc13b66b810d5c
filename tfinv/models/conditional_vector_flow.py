"""`ConditionalVectorFlow`: a conditional flow over parameter vectors (the INN inverse-problem setting)."""

from __future__ import annotations

from typing import Any, Sequence

import keras

from tfinv.core.flow_model import FlowModel
from tfinv.layers.vector_act_norm import VectorActNorm
from tfinv.layers.vector_affine_coupling import VectorAffineCoupling
from tfinv.layers.vector_inv_linear import VectorInvLinear
from tfinv.models.conditioning import (ConditioningNetworkMixin, pop_observation_shape,
                                       resolve_conditioning_network)


@keras.saving.register_keras_serializable(package="tfinv")
class ConditionalVectorFlow(ConditioningNetworkMixin, FlowModel):
    """``p(x | y)`` over parameters ``x in R^d`` given observations ``y``: ``num_blocks`` blocks of
    (`VectorActNorm`, `VectorInvLinear`, `VectorAffineCoupling` conditioned on ``h(y)``).

    Forward: ``(x, y) -> z = f(x; h(y))``; inverse: ``x = f^{-1}(z; h(y))`` (posterior samples for
    ``z ~ N(0, I)``). Log-det: the sum of the blocks' (ActNorm scales, LU diagonal, coupling
    scales). ``h`` is the conditioning network, trained jointly by ``fit`` on ``(x, y)`` pairs.
    Shapes: ``x (B, d)``, ``y (B,) + observation_shape`` -> ``z (B, d)``; ``d >= 2``.

    Differences from the paper: Ardizzone et al. (ICLR 2019) train an unconditional INN with
    ``y`` as part of the output and an MMD loss on the latent; this is the conditional,
    maximum-likelihood form they later adopted (the cINN of arXiv:1907.02392) for vectors.

    Args:
        input_dim: ``d``.
        observation_shape: shape of one ``y``.
        num_blocks: number of blocks.
        hidden_units: width of the couplings' MLP conditioners.
        conditioning_network: any Keras model/layer mapping ``(B,) + observation_shape`` to
            features; ``None``: an MLP with ``condition_features`` outputs.
        condition_features: output size of the default conditioning network.
        seed: seed of the LU layers' initial rotations.
        base, validate_args, **kwargs: see `FlowModel`.

    References: Ardizzone et al., "Analyzing Inverse Problems with Invertible Neural Networks",
    arXiv:1808.04730; Ardizzone et al., arXiv:1907.02392.
    """

    def __init__(
        self,
        input_dim: int = 4,
        observation_shape: Sequence[int] | None = None,
        num_blocks: int = 4,
        hidden_units: int = 64,
        conditioning_network: keras.layers.Layer | dict | None = None,
        condition_features: int = 16,
        seed: int = 0,
        **kwargs: Any,
    ):
        if int(input_dim) < 2 or int(num_blocks) < 1:
            raise ValueError(f"ConditionalVectorFlow needs input_dim >= 2 and num_blocks >= 1, "
                             f"got {input_dim}, {num_blocks}")
        observation = pop_observation_shape(kwargs, observation_shape)
        kwargs.pop("layers", None)
        kwargs.pop("input_shape", None)
        network, feature_shape = resolve_conditioning_network(conditioning_network, observation,
                                                              condition_features)
        layers = []
        for block in range(int(num_blocks)):
            layers += [
                VectorActNorm(name=f"act_norm_{block}"),
                VectorInvLinear(seed=int(seed) + block, name=f"linear_{block}"),
                VectorAffineCoupling(parity=block % 2, hidden_units=int(hidden_units),
                                     context_shape=feature_shape, name=f"coupling_{block}"),
            ]
        # Tracked as a sub-model in build(), which FlowModel.__init__ calls (a built model is locked).
        object.__setattr__(self, "_pending_conditioning_network", network)
        super().__init__(layers, input_shape=(int(input_dim),), context_shape=feature_shape, **kwargs)
        self.feature_shape = feature_shape
        self.context_shape = observation
        self.input_dim = int(input_dim)
        self.num_blocks = int(num_blocks)
        self.hidden_units = int(hidden_units)
        self.condition_features = int(condition_features)
        self.seed = int(seed)

    def get_config(self):
        return {
            **self._model_config(),
            "input_dim": self.input_dim,
            "observation_shape": list(self.context_shape),
            "num_blocks": self.num_blocks,
            "hidden_units": self.hidden_units,
            "conditioning_network": keras.saving.serialize_keras_object(self.conditioning_network),
            "condition_features": self.condition_features,
            "seed": self.seed,
        }
