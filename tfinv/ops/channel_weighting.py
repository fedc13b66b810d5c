"""Feature-dependent channel weights and the permutation that sorts them (the ``Shuffle`` of
EIW-Flow, Chen et al., arXiv:2407.04958). Matmuls, a softmax, ``top_k`` and ``one_hot`` only: XLA
compiles them and tf2onnx maps them to standard ONNX (``TopK``, ``OneHot``, ``MatMul``)."""

from __future__ import annotations

import tensorflow as tf


def channel_weights(conditioning: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """``w = C_b * softmax(mean_{h,w}(x_a) K + b)``: ``(B, C_b)`` positive weights summing to ``C_b``.

    ``conditioning``: ``(B, H, W, C_a)``; ``kernel``: ``(C_a, C_b)``; ``bias``: ``(C_b,)``. The sum
    constraint makes ``sum_c log w_c <= 0`` (AM-GM), with equality only for uniform weights.
    """
    pooled = tf.reduce_mean(conditioning, axis=[-3, -2])
    logits = tf.matmul(pooled, kernel) + bias
    return tf.cast(kernel.shape[-1], logits.dtype) * tf.nn.softmax(logits, axis=-1)


def sorting_permutation(weights: tf.Tensor) -> tf.Tensor:
    """``(B, C, C)`` permutation matrices ``P`` with ``(u P^T)[..., k] = u[..., k-th largest weight]``
    (ties keep channel order). Constant under differentiation (the order has no gradient)."""
    channels = weights.shape[-1]
    order = tf.math.top_k(tf.stop_gradient(weights), k=channels, sorted=True).indices
    return tf.one_hot(order, channels, dtype=weights.dtype)


def permute_channels(x: tf.Tensor, permutation: tf.Tensor, inverse: bool = False) -> tf.Tensor:
    """``x P^T`` over the channel axis of ``x`` (``(B, H, W, C)``), or ``x P`` (the inverse) if ``inverse``."""
    shape = tf.shape(x)
    tokens = tf.reshape(x, [shape[0], -1, x.shape[-1]])
    moved = tf.matmul(tokens, permutation, transpose_b=not inverse)
    return tf.reshape(moved, shape)
