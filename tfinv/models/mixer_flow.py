"""MixerFlow (English, Kirchler & Lippert, arXiv:2310.16777): MLP-Mixer blocks as a flow."""

from __future__ import annotations

from typing import Sequence

import keras
from tfinv.blocks.mixer_flow_block import MixerFlowBlock
from tfinv.core.flow_model import FlowModel
from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.layers.cyclic_shift import CyclicShift
from tfinv.layers.flatten import Flatten
from tfinv.layers.inverted import Inverted
from tfinv.layers.logit_preprocess import LogitPreprocess
from tfinv.layers.patchify import Patchify


def mixer_flow_layers(input_shape: Sequence[int], patch_size: int, num_blocks: int, hidden_units: int,
                      num_levels: int | None = 17, shift: bool = True, seed: int = 0) -> list[InvertibleLayer]:
    """MixerFlow's layers: ``[LogitPreprocess, (CyclicShift,) Patchify, MixerFlowBlock, unpatchify, ...,
    Flatten]``; the un-patchify is `Inverted` `Patchify`, so every block sees and returns images."""
    layers: list[InvertibleLayer] = [] if num_levels is None else [LogitPreprocess(num_levels, name="preprocess")]
    for i in range(num_blocks):
        if i > 0 and shift:
            layers.append(CyclicShift(patch_size // 2, name=f"shift_{i}"))
        layers += [
            Patchify(patch_size, name=f"patchify_{i}"),
            MixerFlowBlock(hidden_units, seed=seed + 2 * i, name=f"block_{i}"),
            Inverted(Patchify(patch_size), layer_input_shape=input_shape, name=f"unpatchify_{i}"),
        ]
    return layers + [Flatten(name="flatten")]


@keras.saving.register_keras_serializable(package="tfinv")
class MixerFlow(FlowModel):
    """A single-scale flow of MixerFlow blocks on image patches.

    Forward: ``x -> LogitPreprocess -> [CyclicShift ->] Patchify -> MixerFlowBlock -> unpatchify``
    for each block (no shift before the first), then the image is flattened to ``z``.
    Each `MixerFlowBlock` mixes the ``P`` patches with a flow shared by the ``D = p*p*C`` channels
    and then the ``D`` values of every patch with a flow shared by the ``P`` patches.
    The shift (``patch_size // 2`` pixels, cyclic) moves the patch borders between blocks so that
    neighbouring pixels on both sides of a border get mixed directly.
    Inverse: the reverse, block by block (sampling: ``inverse`` of base noise).
    The model is a composition (`mixer_flow_layers`): the un-patchify after each block is an
    `Inverted` `Patchify`, and a `Flatten` gives the latent vector.
    Log-det: the sum of the blocks' and the preprocessing's (patchify and shift are permutations).
    Shapes: ``(B, H, W, C) -> (B, H*W*C)``; H and W divisible by ``patch_size``; ``P >= 2`` and
    ``D >= 2`` (so ``patch_size >= 2`` for one channel).

    Args:
        input_shape: ``(H, W, C)`` of one image.
        patch_size: side ``p`` of the square patches.
        num_blocks: number of MixerFlow blocks.
        hidden_units: width of every conditioner MLP (token and channel mixing).
        num_levels: pixel levels of the data for the `LogitPreprocess` front layer (17 for digits,
            256 for 8-bit images); ``None`` models the data as given.
        shift: cyclic shift by ``patch_size // 2`` pixels before every block but the first.
        seed: seed of the linear layers' initial rotations.

    References: English et al., "MixerFlow: MLP-Mixer meets Normalising Flows", arXiv:2310.16777;
    Tolstikhin et al., "MLP-Mixer", arXiv:2105.01601.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (8, 8, 1),
        patch_size: int = 2,
        num_blocks: int = 4,
        hidden_units: int = 64,
        num_levels: int | None = 17,
        shift: bool = True,
        seed: int = 0,
        **kwargs,
    ):
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3:
            raise ValueError(f"MixerFlow needs input_shape (H, W, C), got {tuple(input_shape)}")
        if int(patch_size) < 1 or int(num_blocks) < 1 or int(hidden_units) < 1:
            raise ValueError(
                f"MixerFlow needs patch_size, num_blocks and hidden_units >= 1, got "
                f"{patch_size}, {num_blocks}, {hidden_units}"
            )
        height, width, channels = shape
        p = int(patch_size)
        if height % p or width % p:
            raise ValueError(
                f"MixerFlow with patch_size={p} expects H and W divisible by {p}, "
                f"got (H, W) = ({height}, {width})"
            )
        patches, dim = (height // p) * (width // p), p * p * channels
        if patches < 2 or dim < 2:
            raise ValueError(
                f"MixerFlow needs at least 2 patches and 2 values per patch, got P = {patches} "
                f"patches of D = {dim} values (input {shape}, patch_size={p})"
            )
        kwargs.pop("layers", None)
        super().__init__(
            mixer_flow_layers(shape, p, int(num_blocks), int(hidden_units), num_levels, bool(shift) and p >= 2,
                              int(seed)),
            input_shape=shape, **kwargs,
        )
        self.patch_size = p
        self.num_blocks = int(num_blocks)
        self.hidden_units = int(hidden_units)
        self.num_levels = None if num_levels is None else int(num_levels)
        self.shift = bool(shift) and p >= 2
        self.seed = int(seed)

    @property
    def preprocess(self) -> LogitPreprocess | None:
        """The `LogitPreprocess` front layer (``None`` without ``num_levels``)."""
        first = self.flow.steps[0]
        return first if isinstance(first, LogitPreprocess) else None

    @property
    def blocks(self) -> list[MixerFlowBlock]:
        return [l for l in self.flow.steps if isinstance(l, MixerFlowBlock)]

    def get_config(self):
        return {
            **self._model_config(),
            "patch_size": self.patch_size,
            "num_blocks": self.num_blocks,
            "hidden_units": self.hidden_units,
            "num_levels": self.num_levels,
            "shift": self.shift,
            "seed": self.seed,
        }
