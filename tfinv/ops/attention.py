"""Invertible attention math (Sukthanker et al., arXiv:2106.03959): masks, the map-based attention
weights of iMap, and causal softmax attention with its exact log-det and solver-free inverse (iTrans).

Everything here is matmuls, sums, ``exp``/``log``/``sigmoid`` and a softmax: no ``slogdet``, ``det``,
``lu`` (XLA rejects them) and no solver on data (ONNX rejects it).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf


def parity_mask(height: int, width: int, channels: int) -> np.ndarray:
    """``m[h, w, c] = 1`` where ``h + w + c`` is even (the conditioning entries), else 0.

    A checkerboard over positions whose phase alternates from channel to channel: with ``C >= 2``
    every position holds conditioning and transformed entries, so the attention of a position can
    be computed from its own conditioning channels.
    """
    h, w, c = np.meshgrid(np.arange(height), np.arange(width), np.arange(channels), indexing="ij")
    return ((h + w + c) % 2 == 0).astype(np.float32)


def map_attention(x_masked: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor, offset: tf.Tensor,
                  epsilon: float) -> tf.Tensor:
    """iMap's attention map ``a[b, h, w] = sigmoid(mean_c(W x_m[b, h, w] + bias)_c + offset) + eps``.

    ``x_masked``: ``(B, H, W, C)`` with the transformed entries zeroed; ``kernel``: ``(C, C)`` (the
    paper's 1x1 convolution), ``bias``: ``(C,)``. Returns ``(B, H, W, 1)``, in ``(eps, 1 + eps)``.
    """
    features = tf.matmul(tf.reshape(x_masked, [-1, kernel.shape[0]]), kernel) + bias
    pooled = tf.reduce_mean(features, axis=-1)
    return tf.reshape(tf.sigmoid(pooled + offset) + epsilon, tf.concat([tf.shape(x_masked)[:-1], [1]], 0))


def causal_mask(positions: int) -> np.ndarray:
    """``(N, N)`` boolean, ``True`` on and below the diagonal (position ``i`` attends to ``j <= i``)."""
    return np.tril(np.ones((positions, positions), dtype=bool))


def causal_softmax(scores: tf.Tensor) -> tf.Tensor:
    """Row softmax of ``scores`` (``(..., N, N)``) over ``j <= i``; entries above the diagonal are 0.

    Every row sums to 1 and its diagonal entry is positive (row 0 is ``[1, 0, ...]``).
    """
    positions = scores.shape[-1]
    mask = tf.constant(causal_mask(positions))
    lowest = tf.constant(tf.as_dtype(scores.dtype).min / 2, scores.dtype)
    masked = tf.where(mask, scores, lowest)
    shifted = masked - tf.stop_gradient(tf.reduce_max(masked, axis=-1, keepdims=True))
    weights = tf.exp(shifted) * tf.cast(mask, scores.dtype)
    return weights / tf.reduce_sum(weights, axis=-1, keepdims=True)


def attention_plus_identity_log_det(attention: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    """``log det(A + alpha I)`` of lower-triangular ``A`` (``(..., N, N)``): ``sum_i log(A_ii + alpha)``."""
    return tf.reduce_sum(tf.math.log(tf.linalg.diag_part(attention) + alpha), axis=-1)


def apply_attention_plus_identity(attention: tf.Tensor, alpha: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
    """``(A + alpha I) V`` for ``A`` ``(B, N, N)`` and values ``V`` ``(B, N, C)``."""
    return tf.matmul(attention, values) + alpha * values


def solve_attention_plus_identity(attention: tf.Tensor, alpha: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
    """``V = (A + alpha I)^-1 Y`` for lower-triangular ``A`` (``(B, N, N)``), ``Y`` ``(B, N, C)``, exactly,
    with matmuls only.

    With ``D = diag(A) + alpha`` and ``L`` the strictly lower part of ``A``,
    ``A + alpha I = D (I - M)`` where ``M = -D^-1 L`` is nilpotent (``M^N = 0``), so
    ``(I - M)^-1 = sum_{k<N} M^k = prod_{j<J} (I + M^(2^j))`` with ``2^J >= N``: ``J = ceil(log2 N)``
    squarings, no triangular solve (ONNX rejects one on data) and no loop over positions. For
    ``alpha >= 1`` every row of ``M`` has absolute sum ``< 1``, so the powers shrink.
    """
    positions = attention.shape[-1]
    diagonal = tf.linalg.diag_part(attention) + alpha
    strictly_lower = attention * tf.constant(np.tril(np.ones((positions, positions)), -1), attention.dtype)
    power = -strictly_lower / diagonal[..., :, None]
    result = outputs / diagonal[..., :, None]
    squarings = math.ceil(math.log2(positions)) if positions > 1 else 0
    for j in range(squarings):
        result = result + tf.matmul(power, result)
        if j + 1 < squarings:
            power = tf.matmul(power, power)
    return result
