"""One step of Glow: ActNorm -> invertible 1x1 convolution -> coupling."""

from __future__ import annotations

import keras

from tfinv.blocks.invertible_sequential import InvertibleSequential
from tfinv.layers.act_norm import ActNorm
from tfinv.layers.additive_coupling import AdditiveCoupling
from tfinv.layers.affine_coupling import AffineCoupling
from tfinv.layers.inv_conv1x1 import InvConv1x1

COUPLINGS = {"affine": AffineCoupling, "additive": AdditiveCoupling}


@keras.saving.register_keras_serializable(package="tfinv")
class GlowStep(InvertibleSequential):
    """``z = coupling(InvConv1x1(ActNorm(x)))``.

    Inverse: the three inverses in reverse order. Log-det: the sum of the three.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``C >= 2``; log-det ``(B,)``.

    Args:
        hidden_channels: width of the coupling's conditioner.
        coupling: ``"affine"`` or ``"additive"``.
        seed: seed of the 1x1 convolution's initial rotation.

    References: Kingma & Dhariwal, "Glow", arXiv:1807.03039, §3 and Fig. 2a.
    """

    def __init__(self, hidden_channels: int = 64, coupling: str = "affine", seed: int = 0, **kwargs):
        if coupling not in COUPLINGS:
            raise ValueError(f"GlowStep coupling must be one of {sorted(COUPLINGS)}, got {coupling!r}")
        kwargs.pop("layers", None)
        kwargs.pop("event_ndims", None)
        steps = [
            ActNorm(name="act_norm"),
            InvConv1x1(seed=seed, name="inv_conv1x1"),
            COUPLINGS[coupling](hidden_channels=hidden_channels, name="coupling"),
        ]
        super().__init__(steps, event_ndims=3, **kwargs)
        self.hidden_channels = int(hidden_channels)
        self.coupling = coupling
        self.seed = int(seed)

    def get_config(self):
        config = super().get_config()
        config.pop("layers")
        config.pop("event_ndims")
        return {**config, "hidden_channels": self.hidden_channels, "coupling": self.coupling,
                "seed": self.seed}
