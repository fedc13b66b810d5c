"""`ConditionalGlow`: a conditional invertible network (cINN) for imaging inverse problems."""

from __future__ import annotations

from typing import Any, Sequence

import keras

from tfinv.models.conditioning import (ConditioningNetworkMixin, pop_observation_shape,
                                       resolve_conditioning_network)
from tfinv.models.glow import Glow


@keras.saving.register_keras_serializable(package="tfinv")
class ConditionalGlow(ConditioningNetworkMixin, Glow):
    """Multi-scale Glow for ``p(x | y)``: every coupling is conditioned on features ``h(y)`` of
    the observation from a conditioning network trained jointly with the flow.

    Forward: ``(x, y) -> z = f(x; h(y))`` with ``f`` the `Glow` flow whose couplings see the
    features through their context encoders (image features are resized to every level's
    resolution). Inverse: ``x = f^{-1}(z; h(y))``: a posterior sample for ``z ~ N(0, I)``.
    Log-det: Glow's, for every ``y``. ``log p(x | y) = log N(f(x; h(y))) + log|det df/dx|``.
    Shapes: ``x (B, H, W, C)``, ``y (B,) + observation_shape`` -> ``z (B, H*W*C)``.

    Training maximises ``log p(x | y)`` over ``(x, y)`` pairs (``model.fit(dataset of (x, y))``):
    the conditioning network ``h`` has no loss of its own. ``model.sample(n, context=y)`` draws
    posterior samples (``y`` one observation, or ``n`` of them).

    Defaults follow the paper's cINN: the couplings are affine with a soft-clamped log-scale
    (``coupling="soft_clamp"``, `SoftClampAffineCoupling`: ``|log s| < 2``, so a posterior draw
    cannot overflow through ``1 / s`` however large the conditioner's output; Glow's
    ``sigmoid(h + 2)`` scale, ``coupling="affine"``, can reach ``s = 0``), and every level is
    conditioned on all of the full-resolution features (``context_downsampling="patch"``: each
    coupling's `tfinv.nets.ContextEncoder` maps every ``f x f`` patch of ``h(y)`` to its level's
    resolution with a learned stride-``f`` convolution). Difference from the paper: the paper's
    conditioning network hands each resolution the output of its own stage; here one feature map
    at the data's resolution is shared and each coupling learns its own patch map
    (``context_downsampling="bilinear"``: bilinear resizing, which at ``f > 2`` reads only a few
    feature pixels per position: the earlier default).

    Args:
        input_shape: ``(H, W, C)`` of one ``x``.
        observation_shape: shape of one ``y``.
        conditioning_network: any Keras model/layer mapping ``(B,) + observation_shape`` to
            features of a static shape; ``None`` builds `default_conditioning_network` (a small
            CNN at the data's resolution for image ``y``, an MLP otherwise).
        condition_features: channels of the default conditioning network's output.
        num_levels: pixel levels for Glow's `LogitPreprocess` (``None``: continuous data as given).
        coupling: ``"soft_clamp"`` (default), ``"affine"`` or ``"additive"``: see `Glow`.
        context_downsampling: ``"patch"`` (default) or ``"bilinear"``: see above and `Glow`.
        levels, steps_per_level, hidden_channels, seed, linear, learned_prior,
        context_features, base, validate_args, **kwargs: see `Glow`.

    References: Ardizzone et al., "Guided Image Generation with Conditional Invertible Neural
    Networks", arXiv:1907.02392; Lu & Huang, "Structured Output Learning with Conditional
    Generative Flows", arXiv:1905.13288; Kingma & Dhariwal, "Glow", arXiv:1807.03039.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (8, 8, 1),
        observation_shape: Sequence[int] | None = None,
        conditioning_network: keras.layers.Layer | dict | None = None,
        condition_features: int = 32,
        levels: int = 2,
        steps_per_level: int = 4,
        hidden_channels: int = 64,
        num_levels: int | None = None,
        coupling: str = "soft_clamp",
        context_downsampling: str = "patch",
        **kwargs: Any,
    ):
        shape = tuple(int(s) for s in input_shape)
        observation = pop_observation_shape(kwargs, observation_shape)
        network, feature_shape = resolve_conditioning_network(
            conditioning_network, observation, condition_features, image_size=shape[:2])
        # Tracked as a sub-model in build(), which FlowModel.__init__ calls (a built model is locked).
        object.__setattr__(self, "_pending_conditioning_network", network)
        super().__init__(shape, levels=levels, steps_per_level=steps_per_level,
                         hidden_channels=hidden_channels, num_levels=num_levels, coupling=coupling,
                         context_downsampling=context_downsampling, context_shape=feature_shape, **kwargs)
        self.feature_shape = feature_shape
        self.context_shape = observation
        self.condition_features = int(condition_features)

    @property
    def observation_shape(self) -> tuple[int, ...]:
        return self.context_shape

    @classmethod
    def from_config(cls, config):
        # models saved before the "patch" default resized the features bilinearly
        return super().from_config({"context_downsampling": "bilinear", **config})

    def get_config(self):
        return {
            **super().get_config(),
            "context_downsampling": self.context_downsampling,
            "observation_shape": list(self.context_shape),
            "conditioning_network": keras.saving.serialize_keras_object(self.conditioning_network),
            "condition_features": self.condition_features,
        }
