"""iTrans: invertible transformer-style attention (Sukthanker et al., arXiv:2106.03959)."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.ops import attention

#: Largest ``H * W`` accepted: the layer holds ``(H W) x (H W)`` attention matrices per example.
MAX_POSITIONS = 4096


@keras.saving.register_keras_serializable(package="tfinv")
class ITransAttention(InvertibleLayer):
    """``z_a = x_a``, ``z_b = (A(x_a) + alpha I) x_b`` over the ``N = H W`` positions (raster order):
    dot-product attention whose queries and keys come from the conditioning channels ``x_a`` and
    whose values are the other channels ``x_b``.

    ``A = causal_softmax(Q K^T / sqrt(d))`` with ``Q = x_a W_q``, ``K = x_a W_k`` (``d = key_dim``):
    position ``i`` attends to positions ``j <= i``, so ``A`` is lower triangular with rows summing to 1.
    Invertibility: ``A`` depends on ``x_a`` only (passed through), and ``A + alpha I`` is
    triangular with diagonal ``A_ii + alpha > 0``; ``alpha = 1 + softplus(rho)`` is learned.
    Inverse: ``x_b = (A + alpha I)^-1 z_b`` exactly, by ``ceil(log2 N)`` matrix squarings of the
    nilpotent part (`tfinv.ops.attention.solve_attention_plus_identity`): no triangular solve, so the
    inverse exports to ONNX; ``alpha >= 1`` keeps the series contracting.
    Log-det: ``C_b * sum_i log(A_ii + alpha)`` (a sum of logs: no ``slogdet``, XLA compiles it).
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``C >= 2`` and ``H W <= 4096``; log-det ``(B,)``.

    Differences from the paper: the paper's iTrans takes a full (non-causal) softmax attention
    plus an identity offset over checkerboard-masked inputs, whose log-det and inverse need an
    ``N x N`` ``slogdet`` and solve per example — XLA rejects the former and ONNX the latter. Here
    the attention is causal over the raster order (the Jacobian block is triangular, so both come
    in closed form), the split is over channels (``parity`` picks the half), and ``alpha`` is
    learned with ``alpha >= 1`` (the paper fixes an offset above 1). Inside
    `GlowStep(attention="itrans")` the layer follows the coupling with ``parity=1``, so it
    transforms the half the coupling conditioned on.

    Args:
        key_dim: width ``d`` of queries and keys.
        parity: ``0``: ``x_a`` is the first ``C // 2`` channels; ``1``: the last ``C // 2``.
        initial_alpha: initial ``alpha`` (``> 1``); a larger value starts the layer closer to
            the scaling ``alpha I`` (the attention's share of each output is ``<= 1 / (1 + alpha)``).

    References: Sukthanker, Huang, Kumar, Timofte & Van Gool, "Generative Flows with Invertible
    Attentions", CVPR 2022, arXiv:2106.03959 (iTrans); Vaswani et al., arXiv:1706.03762.
    """

    event_ndims = 3

    def __init__(self, key_dim: int = 8, parity: int = 0, initial_alpha: float = 1.0 + math.log(2.0), **kwargs):
        super().__init__(**kwargs)
        if int(key_dim) < 1 or int(parity) not in (0, 1) or not float(initial_alpha) > 1.0:
            raise ValueError(f"ITransAttention needs key_dim >= 1, parity 0 or 1 and initial_alpha > 1, "
                             f"got {key_dim}, {parity}, {initial_alpha}")
        self.key_dim = int(key_dim)
        self.parity = int(parity)
        self.initial_alpha = float(initial_alpha)

    def build(self, input_shape):
        shape = tuple(tf.TensorShape(input_shape).as_list())
        if len(shape) != 4 or None in shape[1:] or shape[-1] < 2:
            raise ValueError(
                f"ITransAttention '{self.name}' needs images (B, H, W, C) with static H, W and C >= 2 "
                f"(queries/keys from one half of the channels, values from the other), got shape {shape}"
            )
        positions = shape[1] * shape[2]
        if positions > MAX_POSITIONS:
            raise ValueError(
                f"ITransAttention '{self.name}' attends over H * W <= {MAX_POSITIONS} positions "
                f"((H W)^2 attention matrices), got H * W = {positions} for shape {shape}; "
                f"use it after a Squeeze"
            )
        channels = shape[-1]
        self._conditioning = channels // 2
        init = keras.initializers.GlorotUniform()
        self.query_kernel = self.add_weight(name="query_kernel", shape=(self._conditioning, self.key_dim),
                                            initializer=init)
        self.key_kernel = self.add_weight(name="key_kernel", shape=(self._conditioning, self.key_dim),
                                          initializer=init)
        # alpha = 1 + softplus(rho): rho starts at softplus^-1(initial_alpha - 1).
        rho = math.log(math.expm1(self.initial_alpha - 1.0))
        self.alpha_rho = self.add_weight(name="alpha_rho", shape=(), initializer=keras.initializers.Constant(rho))
        super().build(input_shape)

    def _split(self, x):
        c = self._conditioning
        if self.parity == 0:
            return x[..., :c], x[..., c:]
        return x[..., -c:], x[..., :-c]

    def _merge(self, x_a, z_b):
        return tf.concat([x_a, z_b] if self.parity == 0 else [z_b, x_a], axis=-1)

    def _attention(self, x_a):
        height, width, _ = self.input_event_shape
        tokens = tf.reshape(x_a, [-1, height * width, self._conditioning])
        queries = tf.matmul(tokens, self.query_kernel)
        keys = tf.matmul(tokens, self.key_kernel)
        scores = tf.matmul(queries, keys, transpose_b=True) / tf.sqrt(tf.cast(self.key_dim, x_a.dtype))
        alpha = 1.0 + tf.nn.softplus(self.alpha_rho)
        return attention.causal_softmax(scores), tf.cast(alpha, x_a.dtype)

    def _tokens(self, x_b):
        height, width, _ = self.input_event_shape
        return tf.reshape(x_b, [-1, height * width, x_b.shape[-1]])

    def _log_det(self, matrix, alpha, channels):
        return channels * attention.attention_plus_identity_log_det(matrix, alpha)

    def _forward_and_log_det(self, x):
        x_a, x_b = self._split(x)
        matrix, alpha = self._attention(x_a)
        z_b = tf.reshape(attention.apply_attention_plus_identity(matrix, alpha, self._tokens(x_b)), tf.shape(x_b))
        return self._merge(x_a, z_b), self._log_det(matrix, alpha, x_b.shape[-1])

    def _inverse_and_log_det(self, z):
        z_a, z_b = self._split(z)
        matrix, alpha = self._attention(z_a)
        x_b = tf.reshape(attention.solve_attention_plus_identity(matrix, alpha, self._tokens(z_b)), tf.shape(z_b))
        return self._merge(z_a, x_b), -self._log_det(matrix, alpha, z_b.shape[-1])

    def get_config(self):
        return {**super().get_config(), "key_dim": self.key_dim, "parity": self.parity,
                "initial_alpha": self.initial_alpha}
