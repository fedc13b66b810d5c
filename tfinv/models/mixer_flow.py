"""MixerFlow (English, Kirchler & Lippert, arXiv:2310.16777): MLP-Mixer blocks as a flow."""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from tfinv.blocks.mixer_flow_block import MixerFlowBlock
from tfinv.core.flow_model import FlowModel
from tfinv.layers.cyclic_shift import CyclicShift
from tfinv.layers.logit_preprocess import LogitPreprocess
from tfinv.layers.patchify import Patchify


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
        super().__init__(input_shape=input_shape, **kwargs)
        if len(self.data_shape) != 3:
            raise ValueError(f"MixerFlow needs input_shape (H, W, C), got {tuple(input_shape)}")
        if int(patch_size) < 1 or int(num_blocks) < 1 or int(hidden_units) < 1:
            raise ValueError(
                f"MixerFlow needs patch_size, num_blocks and hidden_units >= 1, got "
                f"{patch_size}, {num_blocks}, {hidden_units}"
            )
        height, width, channels = self.data_shape
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
                f"patches of D = {dim} values (input {self.data_shape}, patch_size={p})"
            )
        self.patch_size = p
        self.num_blocks = int(num_blocks)
        self.hidden_units = int(hidden_units)
        self.num_levels = None if num_levels is None else int(num_levels)
        self.shift = bool(shift) and p >= 2
        self.seed = int(seed)
        self.preprocess = None if num_levels is None else LogitPreprocess(num_levels, name="preprocess")
        self.patchify = Patchify(p, name="patchify")
        self.shifter = CyclicShift(p // 2, name="shift") if self.shift else None
        self.blocks = [
            MixerFlowBlock(hidden_units, seed=self.seed + 2 * i, name=f"block_{i}")
            for i in range(self.num_blocks)
        ]
        self.build()

    # ------------------------------------------------------------- structure
    def _build_flow(self, shape):
        for layer in (self.preprocess, self.patchify, self.shifter):
            if layer is not None:
                layer.build(shape)
        patch_shape = self.patchify.compute_output_shape(shape)
        for block in self.blocks:
            block.build(patch_shape)

    def compute_latent_shape(self):
        return (self.num_dims,)

    # ------------------------------------------------------------- directions
    def _forward_and_log_det(self, x):
        log_det = tf.zeros(tf.shape(x)[:1], self.log_det_dtype)
        h = x
        if self.preprocess is not None:
            h, ld = self.preprocess.forward_and_log_det(h)
            log_det += tf.cast(ld, log_det.dtype)
        for i, block in enumerate(self.blocks):
            if i > 0 and self.shifter is not None:
                h = self.shifter.forward_and_log_det(h)[0]  # a permutation: log-det 0
            patches, ld = block.forward_and_log_det(self.patchify.forward_and_log_det(h)[0])
            log_det += tf.cast(ld, log_det.dtype)
            h = self.patchify.inverse_and_log_det(patches)[0]
        return tf.reshape(h, [tf.shape(x)[0], self.num_dims]), log_det

    def _inverse_and_log_det(self, z):
        batch = tf.shape(z)[0]
        log_det = tf.zeros([batch], self.log_det_dtype)
        h = tf.reshape(z, tf.concat([[batch], self.data_shape], 0))
        for i in reversed(range(self.num_blocks)):
            patches, ld = self.blocks[i].inverse_and_log_det(self.patchify.forward_and_log_det(h)[0])
            log_det += tf.cast(ld, log_det.dtype)
            h = self.patchify.inverse_and_log_det(patches)[0]
            if i > 0 and self.shifter is not None:
                h = self.shifter.inverse_and_log_det(h)[0]
        if self.preprocess is not None:
            h, ld = self.preprocess.inverse_and_log_det(h)
            log_det += tf.cast(ld, log_det.dtype)
        return h, log_det

    def _initialize(self, x):
        h = x if self.preprocess is None else self.preprocess.forward_and_log_det(x)[0]
        for i, block in enumerate(self.blocks):
            if i > 0 and self.shifter is not None:
                h = self.shifter.forward_and_log_det(h)[0]
            patches = block.initialize(self.patchify.forward_and_log_det(h)[0])
            h = self.patchify.inverse_and_log_det(patches)[0]

    def get_config(self):
        return {
            **super().get_config(),
            "patch_size": self.patch_size,
            "num_blocks": self.num_blocks,
            "hidden_units": self.hidden_units,
            "num_levels": self.num_levels,
            "shift": self.shift,
            "seed": self.seed,
        }
