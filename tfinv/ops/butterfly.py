"""Invertible butterfly factors along the last axis (Dao et al. 2019; Meng et al. 2022).

A butterfly factor of stride ``s`` on ``P`` channels (``P`` a power of two, ``2s <= P``) mixes
every channel pair ``(i, i + s)`` with ``i mod 2s < s`` by its own 2x2 matrix::

    [y_i    ]   [a  b] [x_i    ]
    [y_{i+s}] = [c  d] [x_{i+s}]

i.e. a block-diagonal matrix of ``P / 2s`` blocks ``[[D1, D2], [D3, D4]]`` with diagonal
``s x s`` blocks ``D_k``. It is applied with reshapes, a split, elementwise products and a
concat (no gathers, no dense matrix): channel-first data ``(P, N)`` is viewed as
``(P / 2s, 2, s, N)``, whose axis 1 holds the two members of every pair. The factor is
invertible iff every ``ad - bc != 0``; its inverse is the factor of the 2x2 inverses
``[[d, -b], [-c, a]] / (ad - bc)``, and ``log|det| = sum log|ad - bc|``. `dense_matrix`
multiplies the factors out into a ``C x C`` matrix (parameters only) for small ``C``.

Every 2x2 block is parameterised as a rotation times an upper-triangular matrix with a positive
diagonal (a QR factorisation, unique for every 2x2 matrix with ``det > 0``)::

    [[a, b], [c, d]] = [[cos t, -sin t], [sin t, cos t]] @ [[exp(s1), u], [0, exp(s2)]]

so ``ad - bc = exp(s1 + s2) > 0`` for every value of ``(t, s1, s2, u)``: invertible by
construction, and the log-det is the sum ``s1 + s2``. The parameterisation reaches every 2x2
block of positive determinant (rotations, scalings, shears; a swap up to a sign).

Channel counts that are not powers of two: the channels are zero-padded to the next power of
two ``P``, and every 2x2 block that touches a padded channel is fixed to the identity (its
parameters are masked to zero), so padded channels stay zero and never mix with real ones;
the output is sliced back to ``C`` channels. This is a butterfly with partial levels.

References: Meng, Zhou, Choi, Dao & Ermon, "ButterflyFlow: Building Invertible Layers with
Butterfly Matrices", arXiv:2209.13774, §3; Dao et al., "Learning Fast Algorithms for Linear
Transforms Using Butterfly Factorizations", arXiv:1903.05895.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf


def padded_size(channels: int) -> int:
    """The next power of two ``>= channels``."""
    return 1 << max(0, math.ceil(math.log2(channels)))


def max_levels(channels: int) -> int:
    """Number of butterfly factors of a full butterfly on ``channels``: ``ceil(log2 C)``."""
    return int(math.log2(padded_size(channels)))


def pair_mask(channels: int, levels: int) -> np.ndarray:
    """``(levels, P / 2)`` float mask: 1 where the pair of factor ``k`` (stride ``2^k``) joins two real
    channels, 0 where it touches a padded channel (that block is fixed to the identity)."""
    size = padded_size(channels)
    mask = np.zeros((levels, size // 2), np.float32)
    for level in range(levels):
        stride = 1 << level
        for j in range(size // 2):
            first = (j // stride) * 2 * stride + j % stride  # pair (first, first + stride)
            mask[level, j] = float(first + stride < channels)
    return mask


def block_coefficients(angle, log_scale_1, log_scale_2, shear):
    """``(a, b, c, d)`` of ``R(angle) @ [[exp(s1), shear], [0, exp(s2)]]`` (elementwise)."""
    cos, sin = tf.cos(angle), tf.sin(angle)
    e1, e2 = tf.exp(log_scale_1), tf.exp(log_scale_2)
    return cos * e1, cos * shear - sin * e2, sin * e1, sin * shear + cos * e2


def inverse_block_coefficients(angle, log_scale_1, log_scale_2, shear):
    """``(a', b', c', d')`` of the inverse blocks ``[[d, -b], [-c, a]] / (ad - bc)``, with
    ``ad - bc = exp(s1 + s2)``."""
    a, b, c, d = block_coefficients(angle, log_scale_1, log_scale_2, shear)
    inv_det = tf.exp(-(log_scale_1 + log_scale_2))
    return d * inv_det, -b * inv_det, -c * inv_det, a * inv_det


def apply_factor(t: tf.Tensor, coefficients, stride: int) -> tf.Tensor:
    """One butterfly factor of stride ``stride`` on channel-first data ``t`` of shape ``(P, N)``.

    ``coefficients = (a, b, c, d)``, each of shape ``(P / 2,)``; pair ``j`` is channels
    ``i = (j // s) * 2s + j % s`` and ``i + s``. Channel-first, the two members of every pair are
    contiguous runs of ``s * N`` values, so the split and concat copy long runs (channel-last,
    stride 1 would copy single floats: measured 2-10x slower here).
    """
    size = int(t.shape[0])
    blocks = size // (2 * stride)
    a, b, c, d = (tf.reshape(k, [blocks, 1, stride, 1]) for k in coefficients)
    pairs = tf.reshape(t, [blocks, 2, stride, -1])
    first, second = tf.split(pairs, 2, axis=1)
    out = tf.concat([a * first + b * second, c * first + d * second], axis=1)
    return tf.reshape(out, [size, -1])


def apply_factors(x: tf.Tensor, coefficients, levels) -> tf.Tensor:
    """``x`` of shape ``(N, C)`` through the factors ``levels`` (in that order; level ``k`` has
    stride ``2^k`` and coefficients ``[t[k] for t in coefficients]``, each ``(L, P / 2)``).

    The channels are zero-padded to ``P`` (the coefficients' ``2 * (P / 2)``) and sliced back;
    blocks that touch padded channels must be identities (see `pair_mask`).
    """
    channels = int(x.shape[-1])
    size = 2 * int(coefficients[0].shape[-1])
    t = tf.transpose(x)
    if size > channels:
        t = tf.pad(t, [[0, size - channels], [0, 0]])
    for level in levels:
        t = apply_factor(t, [k[level] for k in coefficients], 1 << level)
    return tf.transpose(t[:channels])


def dense_matrix(coefficients, levels, channels: int) -> tf.Tensor:
    """The ``C x C`` matrix ``M`` with ``apply_factors(x, coefficients, levels) == x @ M``
    (the factors applied to the identity; parameters only)."""
    return apply_factors(tf.eye(channels, dtype=coefficients[0].dtype), coefficients, levels)
