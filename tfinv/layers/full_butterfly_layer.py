"""ButterflyFlow's butterfly layer on the whole flattened image, with free 2x2 blocks."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.ops import butterfly

BLOCKS = ("free", "positive")


@keras.saving.register_keras_serializable(package="tfinv")
class FullButterflyLayer(InvertibleLayer):
    """``vec(z) = B_L ... B_2 B_1 vec(x)``: ``L`` butterfly factors on the flattened image
    ``vec(x)`` of ``D = H * W * C`` entries (row-major ``(H, W, C)``: the first ``log2 C`` factors
    mix channels within a pixel, the next ones pixels along ``W``, then along ``H``); factor ``k``
    (stride ``2^(k-1)``) mixes every entry pair ``(i, i + 2^(k-1))`` with its own 2x2 block
    ``[[a, b], [c, d]]``. A full butterfly (``L = ceil(log2 D)``) connects every output entry to
    every input entry with ``2 D log2 D`` parameters and ``O(D log D)`` work.

    ``blocks="free"`` (the paper's general form): ``a, b, c, d`` are free weights, so a block can be
    a reflection or an exact swap ``[[0, 1], [1, 0]]`` (determinant ``-1``); invertible as long as
    no ``ad - bc`` reaches 0, which the log-det term of the likelihood (``-> -inf``) keeps training
    away from, but nothing forbids. ``blocks="positive"``: ``R(t) @ [[exp(s1), u], [0, exp(s2)]]``
    as in `ButterflyLayer` (``det > 0`` by construction; a swap only up to a sign).

    Inverse: ``vec(x) = B_1^-1 ... B_L^-1 vec(z)``, each ``B_k^-1`` the factor of the 2x2 inverses
    ``[[d, -b], [-c, a]] / (ad - bc)`` (closed form, elementwise: no solver; exports to ONNX).
    Log-det: ``sum_k sum_pairs log|ad - bc|`` (a sum of logs, no ``slogdet``).
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``H * W * C >= 2``; log-det ``(B,)``.

    ``D`` that is not a power of two is zero-padded to the next one inside the layer, with every
    block that touches a padded entry fixed to the identity (as in `ButterflyLayer`). Blocks start
    as rotations by seeded angles uniform in ``[-pi, pi)``: orthogonal and not the identity.

    Differences: tfinv's `ButterflyLayer` applies one channel butterfly shared by every pixel;
    this layer is the paper's butterfly over all ``C * H * W`` dimensions (its Fig. 1), the form
    whose permutation and periodic structure a channel-only butterfly cannot express.

    Args:
        levels: number of factors ``L``, ``1 <= L <= ceil(log2 D)``; ``None``: the full butterfly.
        blocks: ``"free"`` or ``"positive"`` (see above).
        seed: seed of the initial rotation angles.

    References: Meng, Zhou, Choi, Dao & Ermon, "ButterflyFlow: Building Invertible Layers with
    Butterfly Matrices", arXiv:2209.13774, §3.
    """

    event_ndims = 3

    def __init__(self, levels: int | None = None, blocks: str = "free", seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if blocks not in BLOCKS:
            raise ValueError(f"FullButterflyLayer blocks must be one of {BLOCKS}, got {blocks!r}")
        if levels is not None and (isinstance(levels, bool) or int(levels) != levels or int(levels) < 1):
            raise ValueError(f"FullButterflyLayer levels must be an integer >= 1 or None, got {levels!r}")
        self.levels = None if levels is None else int(levels)
        self.blocks = blocks
        self.seed = int(seed)

    def build(self, input_shape):
        self._record_event_shape(input_shape)
        if any(s is None for s in self.input_event_shape):
            raise ValueError(f"FullButterflyLayer '{self.name}' needs a static (H, W, C), got {tuple(input_shape)}")
        size = math.prod(self.input_event_shape)
        if size < 2:
            raise ValueError(f"FullButterflyLayer '{self.name}' needs H * W * C >= 2, got input shape "
                             f"{tuple(input_shape)}")
        full = butterfly.max_levels(size)
        levels = full if self.levels is None else self.levels
        if levels > full:
            raise ValueError(f"FullButterflyLayer '{self.name}': levels must be <= ceil(log2(H W C)) = {full} "
                             f"for H W C = {size}, got {levels}")
        self._size = size
        self._num_levels = levels
        self._mask = butterfly.pair_mask(size, levels)
        shape = (levels, butterfly.padded_size(size) // 2)
        angles = np.random.default_rng(self.seed).uniform(-math.pi, math.pi, shape) * self._mask
        const = keras.initializers.Constant
        if self.blocks == "free":
            self.a = self.add_weight(name="a", shape=shape, initializer=const(np.cos(angles)))
            self.b = self.add_weight(name="b", shape=shape, initializer=const(-np.sin(angles)))
            self.c = self.add_weight(name="c", shape=shape, initializer=const(np.sin(angles)))
            self.d = self.add_weight(name="d", shape=shape, initializer=const(np.cos(angles)))
        else:
            self.angle = self.add_weight(name="angle", shape=shape, initializer=const(angles))
            self.log_scale_1 = self.add_weight(name="log_scale_1", shape=shape, initializer="zeros")
            self.log_scale_2 = self.add_weight(name="log_scale_2", shape=shape, initializer="zeros")
            self.shear = self.add_weight(name="shear", shape=shape, initializer="zeros")
        super().build(input_shape)

    def _coefficients(self):
        """``(a, b, c, d)`` with the blocks touching padded entries forced to the identity."""
        mask = tf.constant(self._mask, dtype=self.compute_dtype)
        if self.blocks == "free":
            a, b, c, d = (tf.cast(w, self.compute_dtype) for w in (self.a, self.b, self.c, self.d))
        else:
            params = [tf.cast(w, self.compute_dtype) * mask
                      for w in (self.angle, self.log_scale_1, self.log_scale_2, self.shear)]
            a, b, c, d = butterfly.block_coefficients(*params)
        return a * mask + (1.0 - mask), b * mask, c * mask, d * mask + (1.0 - mask)

    def _apply(self, x, coefficients, levels):
        flat = tf.reshape(x, [-1, self._size])
        return tf.reshape(butterfly.apply_factors(flat, coefficients, levels), tf.shape(x))

    def _forward_and_log_det(self, x):
        a, b, c, d = self._coefficients()
        log_det = tf.reduce_sum(tf.math.log(tf.abs(a * d - b * c)))
        z = self._apply(x, (a, b, c, d), range(self._num_levels))
        return z, batch_log_det(tf.cast(log_det, x.dtype), x, self.event_ndims)

    def _inverse_and_log_det(self, z):
        a, b, c, d = self._coefficients()
        det = a * d - b * c
        inverse = (d / det, -b / det, -c / det, a / det)
        x = self._apply(z, inverse, reversed(range(self._num_levels)))
        log_det = -tf.reduce_sum(tf.math.log(tf.abs(det)))
        return x, batch_log_det(tf.cast(log_det, z.dtype), z, self.event_ndims)

    def get_config(self):
        return {**super().get_config(), "levels": self.levels, "blocks": self.blocks, "seed": self.seed}
