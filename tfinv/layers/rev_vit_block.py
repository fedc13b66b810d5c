"""Reversible Vision Transformer block (Rev-ViT): attention and MLP as a two-stream coupling."""

from __future__ import annotations

import keras

from tfinv.layers.bases.reversible_block import TwoStreamBlock
from tfinv.ops.gelu import gelu


@keras.saving.register_keras_serializable(package="tfinv")
class RevViTBlock(TwoStreamBlock):
    """``[X1, X2] -> [Y1, Y2]`` on token sequences, with ``Y1 = X1 + F(X2)`` and
    ``Y2 = X2 + G(Y1)``, where ``F = LayerNorm -> multi-head self-attention`` and
    ``G = LayerNorm -> MLP (Dense, GELU, Dense)``: a pre-norm transformer block whose two residual
    updates act on different streams.

    Inverse: ``X2 = Y2 - G(Y1)``, then ``X1 = Y1 - F(X2)`` (exact; attention and MLP are only
    evaluated, never inverted).

    Log-det: exactly 0, returned with the batch shape ``(B,)``. The issue asked whether the block
    is volume preserving "in general": it is, for every weight. Each half-step is an *additive*
    coupling (one stream is shifted by a function of the other, unchanged stream), so its
    Jacobian is block unit-triangular, ``[[I, dF/dX2], [0, I]]`` and ``[[I, 0], [dG/dY1, I]]``,
    with determinant 1 however non-linear ``F`` and ``G`` are (LayerNorm and softmax included);
    the block's Jacobian is their product, determinant 1, log-det 0. (Only an affine coupling, a
    scale on the shifted stream, would change volume.)

    Shapes: ``(B, N, 2 * dim) -> (B, N, 2 * dim)``: ``N`` tokens, the two streams ``X1``, ``X2``
    of ``dim`` features each concatenated on the last axis; log-det ``(B,)``.

    Memory: as a `tfinv.layers.bases.reversible_block.TwoStreamBlock` it rebuilds its input from its
    output in `tfinv.blocks.ReversibleStack`'s backward pass, so stacks of it train without
    storing activations.

    Args:
        dim: features per stream (the transformer width); divisible by ``heads``.
        heads: attention heads; each has ``dim // heads`` features.
        mlp_ratio: hidden width of the MLP as a multiple of ``dim``.
        layer_norm_epsilon: epsilon of both LayerNorms.

    References: Mangalam et al., "Reversible Vision Transformers", arXiv:2302.04869, §3;
    Gomez et al., "The Reversible Residual Network", arXiv:1707.04585 (the coupling);
    Dosovitskiy et al., "An Image is Worth 16x16 Words", arXiv:2010.11929 (F and G).
    """

    event_ndims = 2

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4, layer_norm_epsilon: float = 1e-6,
                 **kwargs):
        super().__init__(**kwargs)
        dim, heads = int(dim), int(heads)
        if dim < 1 or heads < 1:
            raise ValueError(f"RevViTBlock needs dim >= 1 and heads >= 1, got dim={dim}, heads={heads}")
        if dim % heads:
            raise ValueError(
                f"RevViTBlock needs dim divisible by heads (each head gets dim // heads features), "
                f"got dim={dim}, heads={heads}"
            )
        if not mlp_ratio > 0:
            raise ValueError(f"RevViTBlock needs mlp_ratio > 0, got {mlp_ratio}")
        self.dim = dim
        self.heads = heads
        self.mlp_ratio = float(mlp_ratio)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.hidden_dim = max(1, int(round(self.mlp_ratio * dim)))

    def _check_stream_channels(self, channels):
        if channels != self.dim:
            raise ValueError(
                f"RevViTBlock '{self.name}' expects tokens (B, N, 2 * dim) = (B, N, {2 * self.dim}) "
                f"(two streams of dim={self.dim} on the last axis), got last axis {2 * channels}"
            )

    def _build_residuals(self, stream_shape):
        eps = self.layer_norm_epsilon
        self.attention_norm = keras.layers.LayerNormalization(epsilon=eps, name="attention_norm")
        self.attention = keras.layers.MultiHeadAttention(
            self.heads, self.dim // self.heads, name="attention"
        )
        self.mlp_norm = keras.layers.LayerNormalization(epsilon=eps, name="mlp_norm")
        self.mlp_hidden = keras.layers.Dense(self.hidden_dim, name="mlp_hidden")
        self.mlp_out = keras.layers.Dense(self.dim, name="mlp_out")
        self.attention_norm.build(stream_shape)
        self.attention.build(stream_shape, stream_shape)
        self.mlp_norm.build(stream_shape)
        self.mlp_hidden.build(stream_shape)
        self.mlp_out.build(tuple(stream_shape[:-1]) + (self.hidden_dim,))

    def _residual_f(self, x2):
        h = self.attention_norm(x2)
        return self.attention(h, h)

    def _residual_g(self, y1):
        return self.mlp_out(gelu(self.mlp_hidden(self.mlp_norm(y1))))

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "heads": self.heads,
            "mlp_ratio": self.mlp_ratio,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }
