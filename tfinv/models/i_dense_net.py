"""i-DenseNet (Perugachi-Diaz et al., arXiv:2102.02694): Residual Flows with invertible dense blocks."""

from __future__ import annotations

from typing import Sequence

import keras

from tfinv.layers.invertible_dense_block import InvertibleDenseBlock
from tfinv.models.residual_flow import ResidualFlow


@keras.saving.register_keras_serializable(package="tfinv")
class IDenseNet(ResidualFlow):
    """`ResidualFlow`'s multi-scale skeleton with `InvertibleDenseBlock`s (dense units with learnable
    concatenation and CLipSwish) in place of the residual blocks.

    Forward, inverse, log-det and shapes as `ResidualFlow`.

    Args:
        growth: channels each dense unit's convolution adds (doubled by CLipSwish).
        depth: dense units per block.
        **kwargs: `ResidualFlow` arguments (``hidden_features`` and ``activation`` are unused).

    References: Perugachi-Diaz, Tomczak & Bhulai, "Invertible DenseNets with Concatenated
    LipSwish", arXiv:2102.02694.
    """

    def __init__(self, input_shape: Sequence[int] = (8, 8, 1), growth: int = 8, depth: int = 2, **kwargs):
        kwargs.pop("activation", None)
        super().__init__(input_shape=input_shape, activation="clipswish", growth=int(growth), depth=int(depth),
                         **kwargs)
        self.growth = int(growth)
        self.depth = int(depth)

    @staticmethod
    def _block_extras(kwargs: dict) -> dict:
        return {"growth": kwargs.pop("growth"), "depth": kwargs.pop("depth")}

    @staticmethod
    def _make_block(index: int, seed: int, options: dict, hidden_features: int, activation: str,
                    growth: int = 8, depth: int = 2):
        return InvertibleDenseBlock(growth, depth, seed=seed, name=f"block_{index}", **options)

    def get_config(self):
        return {**super().get_config(), "growth": self.growth, "depth": self.depth}
