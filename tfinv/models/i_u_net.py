"""The fully invertible U-Net (Etmann et al., arXiv:2005.05220), composed from invertible layers."""

from __future__ import annotations

from typing import Sequence

import keras

from tfinv.blocks.reversible_stack import ReversibleStack
from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.layers.additive_coupling import AdditiveCoupling
from tfinv.layers.channel_skip import ChannelSkip
from tfinv.layers.inv_conv1x1 import InvConv1x1
from tfinv.layers.invertible_downsampling import INITS, InvertibleDownsampling
from tfinv.layers.invertible_upsampling import InvertibleUpsampling
from tfinv.ops.orthogonal import METHODS


@keras.saving.register_keras_serializable(package="tfinv")
class IUNet(ReversibleStack):
    """``z = iUNet(x)`` of the same shape as ``x``: an invertible encoder and decoder joined by
    invertible skip connections.

    With ``architecture = (a_0, ..., a_{L-1})``, level ``i`` (resolution ``H / 2^i``, channels
    ``c_i``) is: ``a_i`` encoder additive couplings, an invertible channel mixing, then a
    `ChannelSkip`: ``s_i = max(1, c_i // 2)`` channels skip to the decoder (the paper's "double"
    slicing), the others go through [`InvertibleDownsampling` (``c_{i+1} = 4 (c_i - s_i)``), level ``i + 1``,
    `InvertibleUpsampling`]; then a channel mixing and ``a_i`` decoder couplings. The bottom level
    has ``2 a_{L-1}`` couplings. Couplings alternate which half of the channels they update; their
    conditioners (`tfinv.nets.GlowConvNet`) start at zero and each upsampling starts as the exact
    inverse of its downsampling, so the network starts as a channel mixing of ``x``.

    Inverse: the layers' inverses in reverse order (the skip connections re-split the channels).
    Log-det: the channel mixings' (couplings and resamplings preserve volume), batch shape.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)``, ``C >= 2``, H and W divisible by ``2^(L-1)``.

    Memory: the network is a `ReversibleStack` whose skip connections hold `ReversibleStack`s,
    so with ``memory_efficient=True`` backprop rebuilds activations level by level from outputs
    and stores none of the couplings' activations: training memory stays flat as ``a_i`` grows.
    Measured (``benchmarks/reversible_networks.py --parts memory --networks iunet --depths 5 30``,
    three levels, 32x32x4 images, batch 32): a training step's peak 19.6 MB at 5 couplings per
    level and side, 17.9 MB at 30; with ordinary backprop 83.5 MB and 392.7 MB.

    Where this differs from the paper: the channel mixings are LU 1x1 convolutions (`InvConv1x1`,
    the paper's are orthogonal, log-det 0); the couplings' conditioners are Glow's network instead
    of the paper's conv -> leaky ReLU -> normalisation blocks; 2D only: the contract's image
    layers (and `tf.nn.space_to_depth`) are 2D, so the paper's 3D iUNet is not provided.

    Args:
        architecture: couplings per level on each side (encoder and decoder), e.g. ``(2, 2, 2)``.
        hidden_channels: width of the coupling conditioners.
        resampling_method: ``"cayley"``, ``"exp"`` or ``"householder"`` (`InvertibleDownsampling`).
        resampling_init: ``"haar"`` or ``"squeeze"``.
        learnable_resampling: train the up- and downsampling rotations.
        memory_efficient: rebuild activations in the backward pass instead of storing them.
        seed: seed of the channel mixings' initialisation.

    References: Etmann, Ke & Schönlieb, "iUNets: Fully invertible U-Nets with Learnable Up- and
    Downsampling", arXiv:2005.05220, §3 and Fig. 2; reference code cetmann/iunets.
    """

    def __init__(self, architecture: Sequence[int] = (2, 2), hidden_channels: int = 16,
                 resampling_method: str = "cayley", resampling_init: str = "haar",
                 learnable_resampling: bool = True, memory_efficient: bool = True, seed: int = 0,
                 **kwargs):
        architecture = tuple(int(a) for a in architecture)
        if not architecture or min(architecture) < 1:
            raise ValueError(f"IUNet needs an architecture of positive coupling counts, got {architecture}")
        if resampling_method not in METHODS:
            raise ValueError(f"IUNet resampling_method must be one of {METHODS}, got {resampling_method!r}")
        if resampling_init not in INITS:
            raise ValueError(f"IUNet resampling_init must be one of {sorted(INITS)}, got {resampling_init!r}")
        kwargs.pop("blocks", None)
        kwargs.pop("event_ndims", None)
        self.architecture = architecture
        self.hidden_channels = int(hidden_channels)
        self.resampling_method = resampling_method
        self.resampling_init = resampling_init
        self.learnable_resampling = bool(learnable_resampling)
        self.seed = int(seed)
        self._memory_efficient = bool(memory_efficient)
        super().__init__(self._level(0), memory_efficient=memory_efficient, event_ndims=3, **kwargs)

    def _couplings(self, count: int, level: int, side: str) -> list[InvertibleLayer]:
        return [AdditiveCoupling(parity=j % 2, hidden_channels=self.hidden_channels,
                                 name=f"{side}_{level}_coupling_{j}") for j in range(count)]

    def _level(self, i: int) -> list[InvertibleLayer]:
        count = self.architecture[i]
        if i == len(self.architecture) - 1:
            return self._couplings(2 * count, i, "bottom")
        resampling = {"method": self.resampling_method, "init": self.resampling_init,
                      "learnable": self.learnable_resampling}
        inner = ReversibleStack(
            [InvertibleDownsampling(name=f"down_{i}", **resampling), *self._level(i + 1),
             InvertibleUpsampling(name=f"up_{i}", **resampling)],
            memory_efficient=self._memory_efficient, event_ndims=3, name=f"lower_{i}")
        return [
            *self._couplings(count, i, "encoder"),
            InvConv1x1(seed=self.seed + 2 * i, name=f"encoder_{i}_mixing"),
            ChannelSkip(inner, name=f"skip_{i}"),
            InvConv1x1(seed=self.seed + 2 * i + 1, name=f"decoder_{i}_mixing"),
            *self._couplings(count, i, "decoder"),
        ]

    def get_config(self):
        config = super().get_config()
        config.pop("blocks")
        config.pop("event_ndims", None)
        return {**config, "architecture": list(self.architecture), "hidden_channels": self.hidden_channels,
                "resampling_method": self.resampling_method, "resampling_init": self.resampling_init,
                "learnable_resampling": self.learnable_resampling, "seed": self.seed}
