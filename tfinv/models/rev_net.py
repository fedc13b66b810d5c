"""The RevNet classifier (Gomez et al., arXiv:1707.04585): reversible residual stages trained
without storing their activations."""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from tfinv.blocks.reversible_stack import ReversibleStack
from tfinv.layers.rev_res_block import RevResBlock
from tfinv.models.image_classifier import ImageClassifier
from tfinv.nets.conv_residual import conv_residual


@keras.saving.register_keras_serializable(package="tfinv")
class RevNet(ImageClassifier):
    """Image classifier: stem convolution -> stages of reversible residual blocks -> head.

    The stem is a ``3x3`` convolution to ``channels``. Stage ``s`` is a `ReversibleStack` of
    ``blocks_per_stage[s]`` `RevResBlock`s at ``channels * 2^s`` channels (memory-efficient
    backprop: a stage stores none of its blocks' activations, Gomez et al., Algorithm 1).
    Between stages, a stride-2 residual unit doubles the channels and halves H and W; as in the
    paper, these downsampling units are not reversible and autodiff stores their activations
    (there are ``len(blocks_per_stage) - 1`` of them, whatever the depth). The head: ReLU ->
    global average pool -> Dense.

    Inverse: the stages are invertible (`RevResBlock` rebuilds its input from its output), the
    network is not (stem and downsampling units lose information); it is a classifier.
    Shapes: ``(B, H, W, C) -> (B, num_classes)``; H and W divisible by ``2^(stages - 1)``.

    Measured (``benchmarks/reversible_networks.py``): on the digits, 89.7 % test accuracy after 30
    epochs with the defaults; a training step's peak memory 15.7 / 15.9 / 16.4 MB at 2 / 8 / 32
    blocks per stage (32x32 images, batch 32), 23.0 / 59.1 / 208.7 MB with ordinary backprop.

    Where this differs from the paper: the residual functions have no batch normalisation (see
    `tfinv.nets.conv_residual`), and the paper's CIFAR/ImageNet stage sizes are arguments, not
    defaults (the defaults fit 8x8 digits).

    Args:
        image_shape: ``(H, W, C)`` of one image.
        num_classes: number of logits.
        blocks_per_stage: reversible blocks per stage.
        channels: channels of the first stage (even).
        memory_efficient: reversible backprop (True) or ordinary autodiff through the stages.
        fused_update: apply the optimizer to each block's weights inside the backward pass, so
            no block's gradients outlive it (`ReversibleStack`'s ``fused_update``, after LOMO,
            arXiv:2306.09782; needs ``memory_efficient=True``).
        input_scale: factor applied to the pixels first (``1 / 16`` for the digits' counts).

    References: Gomez, Ren, Urtasun & Grosse, "The Reversible Residual Network: Backpropagation
    Without Storing Activations", arXiv:1707.04585, §3-4 and Table 1; He et al., arXiv:1603.05027.
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (8, 8, 1),
        num_classes: int = 10,
        blocks_per_stage: Sequence[int] = (2, 2),
        channels: int = 16,
        memory_efficient: bool = True,
        input_scale: float = 1.0,
        fused_update: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        image_shape = self._image_shape_argument(image_shape)
        stages = self._stages_argument(blocks_per_stage)
        if int(channels) < 2 or int(channels) % 2:
            raise ValueError(f"RevNet channels must be even and >= 2 (two streams), got {channels}")
        self._check_divisible(image_shape, 2 ** (len(stages) - 1), f"{len(stages)} stages")
        self.image_shape = image_shape
        self.num_classes = int(num_classes)
        self.blocks_per_stage = stages
        self.channels = int(channels)
        self.memory_efficient = bool(memory_efficient)
        self.fused_update = bool(fused_update)
        self.input_scale = float(input_scale)

        self.stem = keras.layers.Conv2D(self.channels, 3, padding="same", name="stem")
        self.stages, self.downsamplings, self.shortcuts = [], [], []
        for stage, count in enumerate(stages):
            width_s = self.channels * 2**stage
            if stage > 0:
                self.downsamplings.append(conv_residual(width_s, width_s, 3, strides=2, name=f"down_{stage}"))
                self.shortcuts.append(keras.layers.Conv2D(width_s, 1, strides=2, name=f"shortcut_{stage}"))
            self.stages.append(ReversibleStack(
                [RevResBlock(name=f"stage_{stage}_block_{i}") for i in range(count)],
                memory_efficient=self.memory_efficient, fused_update=self.fused_update, name=f"stage_{stage}"))
        self.head = keras.layers.Dense(self.num_classes, name="head")
        self.build((None,) + self.image_shape)

    def build(self, input_shape=None):
        """Builds every layer eagerly from ``image_shape``."""
        if self.built:
            return
        height, width, channels = self.image_shape
        self.stem.build((None, height, width, channels))
        shape = (None, height, width, self.channels)
        for stage, block in enumerate(self.stages):
            if stage > 0:
                self.downsamplings[stage - 1].build(shape)
                self.shortcuts[stage - 1].build(shape)
                shape = (None, shape[1] // 2, shape[2] // 2, self.channels * 2**stage)
            block.build(shape)
        self.head.build((None, shape[-1]))
        self.built = True

    def features(self, images: tf.Tensor) -> tf.Tensor:
        """The last stage's output ``(B, H / 2^(S-1), W / 2^(S-1), channels * 2^(S-1))``."""
        self._check_images(images)
        h = self.stem(tf.cast(images, self.compute_dtype) * self.input_scale)
        for stage, block in enumerate(self.stages):
            if stage > 0:
                h = self.downsamplings[stage - 1](h) + self.shortcuts[stage - 1](h)
            h = block(h)
        return h

    def call(self, images: tf.Tensor) -> tf.Tensor:
        return self.head(tf.reduce_mean(tf.nn.relu(self.features(images)), axis=[1, 2]))

    def get_config(self):
        return {
            **super().get_config(),
            "blocks_per_stage": list(self.blocks_per_stage),
            "channels": self.channels,
            "memory_efficient": self.memory_efficient,
            "fused_update": self.fused_update,
            "input_scale": self.input_scale,
        }
