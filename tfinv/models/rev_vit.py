"""Reversible Vision Transformer classifier (Mangalam et al., arXiv:2302.04869)."""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from tfinv.blocks.reversible_stack import ReversibleStack
from tfinv.layers.rev_vit_block import RevViTBlock

MERGES = ("mean", "concat")


@keras.saving.register_keras_serializable(package="tfinv")
class RevViT(keras.Model):
    """Image classifier: patch embedding -> two streams -> reversible transformer blocks ->
    merged streams -> LayerNorm -> mean over tokens -> linear head (logits).

    ``images (B, H, W, C)`` are scaled by ``input_scale`` and cut into non-overlapping
    ``patch_size x patch_size`` patches by a strided convolution to ``N = (H/p)(W/p)`` tokens of
    ``dim`` features, plus a learned position embedding. The token sequence is duplicated into the
    two streams ``X1 = X2`` (Rev-ViT's input; the residual streams then diverge), passed through
    ``depth`` `RevViTBlock`s in a `ReversibleStack` (memory-efficient backprop: activation memory
    independent of ``depth``), merged (``"mean"``: ``(Y1 + Y2) / 2``; ``"concat"``: ``[Y1, Y2]``),
    layer-normalised, averaged over tokens and mapped to ``num_classes`` logits.

    The model is built eagerly at construction (no symbolic auto-build); train it with
    ``compile(loss=SparseCategoricalCrossentropy(from_logits=True))`` and ``fit`` on ``(x, y)``.

    Args:
        patch_size: side of the square patches; must divide H and W.
        dim: transformer width (features per stream).
        depth: number of reversible blocks.
        heads: attention heads (must divide ``dim``).
        num_classes: number of output logits.
        memory_efficient: reversible backprop (True) or ordinary autodiff through the blocks.
        image_shape: ``(H, W, C)`` of one image.
        mlp_ratio: MLP width of the blocks as a multiple of ``dim``.
        input_scale: factor applied to the pixels first (``1 / 17`` for the digits' counts).
        merge: ``"mean"`` or ``"concat"`` of the two output streams.
        fused_update: apply the optimizer to each block's weights inside the backward pass, so
            no block's gradients outlive it (`ReversibleStack`'s ``fused_update``, after LOMO,
            arXiv:2306.09782; needs ``memory_efficient=True``).

    Shapes: ``(B, H, W, C) -> (B, num_classes)`` logits.

    References: Mangalam et al., "Reversible Vision Transformers", arXiv:2302.04869, §3;
    Dosovitskiy et al., "An Image is Worth 16x16 Words", arXiv:2010.11929.
    """

    def __init__(
        self,
        patch_size: int = 2,
        dim: int = 32,
        depth: int = 4,
        heads: int = 2,
        num_classes: int = 10,
        memory_efficient: bool = True,
        image_shape: Sequence[int] = (8, 8, 1),
        mlp_ratio: float = 4,
        input_scale: float = 1.0,
        merge: str = "mean",
        fused_update: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"RevViT needs image_shape (H, W, C) of positive sizes, got {image_shape}")
        for label, value in (("patch_size", patch_size), ("dim", dim), ("depth", depth),
                             ("heads", heads), ("num_classes", num_classes)):
            if int(value) < 1:
                raise ValueError(f"RevViT needs {label} >= 1, got {value}")
        height, width, _ = image_shape
        if height % patch_size or width % patch_size:
            raise ValueError(
                f"RevViT needs H and W divisible by patch_size={patch_size}, got (H, W) = "
                f"({height}, {width})"
            )
        if merge not in MERGES:
            raise ValueError(f"RevViT merge must be one of {MERGES}, got {merge!r}")
        self.patch_size = int(patch_size)
        self.dim = int(dim)
        self.depth = int(depth)
        self.heads = int(heads)
        self.num_classes = int(num_classes)
        self.memory_efficient = bool(memory_efficient)
        self.image_shape = image_shape
        self.mlp_ratio = float(mlp_ratio)
        self.input_scale = float(input_scale)
        self.merge = merge
        self.fused_update = bool(fused_update)
        self.num_tokens = (height // patch_size) * (width // patch_size)

        self.patch_embedding = keras.layers.Conv2D(
            self.dim, self.patch_size, strides=self.patch_size, name="patch_embedding"
        )
        self.blocks = ReversibleStack(
            [RevViTBlock(self.dim, self.heads, self.mlp_ratio, name=f"block_{i}") for i in range(self.depth)],
            memory_efficient=self.memory_efficient,
            fused_update=self.fused_update,
            event_ndims=2,
            name="reversible_blocks",
        )
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6, name="norm")
        self.head = keras.layers.Dense(self.num_classes, name="head")
        self.build((None,) + self.image_shape)

    def build(self, input_shape=None):
        """Builds every layer eagerly from ``image_shape`` (Keras's symbolic auto-build is avoided)."""
        if self.built:
            return
        self.patch_embedding.build((None,) + self.image_shape)
        self.position_embedding = self.add_weight(
            name="position_embedding",
            shape=(1, self.num_tokens, self.dim),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )
        self.blocks.build((None, self.num_tokens, 2 * self.dim))
        features = self.dim * (2 if self.merge == "concat" else 1)
        self.norm.build((None, self.num_tokens, features))
        self.head.build((None, features))
        self.built = True

    def embed(self, images: tf.Tensor) -> tf.Tensor:
        """Patch tokens ``(B, N, dim)`` with position embedding."""
        got = tuple(images.shape[1:])
        if len(images.shape) != 4 or any(g is not None and g != e for g, e in zip(got, self.image_shape)):
            raise ValueError(
                f"RevViT '{self.name}' expects images of shape (batch, {', '.join(map(str, self.image_shape))}), "
                f"got {tuple(images.shape)}"
            )
        images = tf.cast(images, self.compute_dtype) * self.input_scale
        patches = self.patch_embedding(images)
        tokens = tf.reshape(patches, [-1, self.num_tokens, self.dim])
        return tokens + self.position_embedding

    def features(self, images: tf.Tensor) -> tf.Tensor:
        """Pooled features ``(B, dim)`` (``2 * dim`` for ``merge="concat"``) before the head."""
        tokens = self.embed(images)
        streams = self.blocks(tf.concat([tokens, tokens], axis=-1))
        if self.merge == "mean":
            streams = 0.5 * (streams[..., : self.dim] + streams[..., self.dim :])
        return tf.reduce_mean(self.norm(streams), axis=1)

    def call(self, images: tf.Tensor) -> tf.Tensor:
        return self.head(self.features(images))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "patch_size": self.patch_size,
            "dim": self.dim,
            "depth": self.depth,
            "heads": self.heads,
            "num_classes": self.num_classes,
            "memory_efficient": self.memory_efficient,
            "image_shape": list(self.image_shape),
            "mlp_ratio": self.mlp_ratio,
            "input_scale": self.input_scale,
            "merge": self.merge,
            "fused_update": self.fused_update,
        }
