"""ButterflyFlow's invertible butterfly layer along the channels."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.ops import butterfly

IMPLEMENTATIONS = ("auto", "factors", "dense")
#: ``implementation="auto"`` multiplies by the dense ``C x C`` matrix up to this many channels.
DENSE_MAX_CHANNELS = 512


@keras.saving.register_keras_serializable(package="tfinv")
class ButterflyLayer(InvertibleLayer):
    """``z[h, w] = B_L ... B_2 B_1 x[h, w]`` at every pixel: ``L`` butterfly factors along the
    channels, factor ``k`` (stride ``2^(k-1)``) mixing every channel pair ``(i, i + 2^(k-1))``
    with its own 2x2 matrix ``[[a, b], [c, d]]``.

    A full butterfly (``L = ceil(log2 C)``) connects every output channel to every input channel
    with ``2 C log2 C`` parameters and ``O(C log C)`` work per pixel; a smaller ``L`` mixes
    within blocks of ``2^L`` channels. Each 2x2 block is ``R(t) @ [[exp(s1), u], [0, exp(s2)]]``
    (see `tfinv.ops.butterfly`), so ``ad - bc = exp(s1 + s2) > 0``: invertible for every value
    of the parameters.

    Inverse: ``x = B_1^-1 ... B_L^-1 z``; every ``B_k^-1`` is the butterfly factor of the 2x2
    inverses ``[[d, -b], [-c, a]] / (ad - bc)`` (closed form, elementwise: no solver).
    Log-det: ``H * W * sum_k sum_pairs log|ad - bc| = H * W * sum(s1 + s2)``.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``C >= 2``; log-det ``(B,)``.

    Channel counts that are not powers of two are zero-padded to the next power of two inside
    the layer, with every 2x2 block that touches a padded channel fixed to the identity
    (partial levels); the output has ``C`` channels again.

    The rotation angles start uniform in ``[-pi, pi)`` (seeded), scales at 1 and shears at 0:
    the layer starts as a random orthogonal butterfly, well conditioned and not the identity.

    Args:
        levels: number of factors ``L``, ``1 <= L <= ceil(log2 C)``; ``None`` means the full
            ``ceil(log2 C)``.
        seed: seed of the initial rotation angles.
        implementation: ``"auto"``, ``"factors"`` or ``"dense"`` (see above).

    Raises:
        ValueError: at build, if ``C < 2`` or ``levels`` is out of range.

    References: Meng, Zhou, Choi, Dao & Ermon, "ButterflyFlow: Building Invertible Layers with
    Butterfly Matrices", arXiv:2209.13774, §3 (invertible butterfly layers).
    """

    event_ndims = 3

    def __init__(self, levels: int | None = None, seed: int = 0, implementation: str = "auto", **kwargs):
        super().__init__(**kwargs)
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"ButterflyLayer implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}"
            )
        self.implementation = implementation
        if levels is not None and (isinstance(levels, bool) or int(levels) != levels or int(levels) < 1):
            raise ValueError(f"ButterflyLayer levels must be an integer >= 1 or None, got {levels!r}")
        self.levels = None if levels is None else int(levels)
        self.seed = int(seed)

    def build(self, input_shape):
        channels = self.input_event_shape[-1]
        if channels is None or channels < 2:
            raise ValueError(
                f"ButterflyLayer '{self.name}' needs C >= 2 channels, got input shape {tuple(input_shape)}"
            )
        full = butterfly.max_levels(channels)
        levels = full if self.levels is None else self.levels
        if levels > full:
            raise ValueError(
                f"ButterflyLayer '{self.name}': levels must be <= ceil(log2 C) = {full} for C = "
                f"{channels}, got {levels}"
            )
        self._num_levels = levels
        # Constant (numpy): the exporter embeds it; it also zeroes the masked pairs' gradients.
        self._mask = butterfly.pair_mask(channels, levels)
        shape = (levels, butterfly.padded_size(channels) // 2)
        angles = np.random.default_rng(self.seed).uniform(-math.pi, math.pi, shape) * self._mask
        self.angle = self.add_weight(name="angle", shape=shape,
                                     initializer=keras.initializers.Constant(angles))
        self.log_scale_1 = self.add_weight(name="log_scale_1", shape=shape, initializer="zeros")
        self.log_scale_2 = self.add_weight(name="log_scale_2", shape=shape, initializer="zeros")
        self.shear = self.add_weight(name="shear", shape=shape, initializer="zeros")
        super().build(input_shape)

    def _params(self):
        """The block parameters with blocks that touch padded channels forced to the identity."""
        mask = tf.constant(self._mask, dtype=self.angle.dtype)
        return [p * mask for p in (self.angle, self.log_scale_1, self.log_scale_2, self.shear)]

    def _log_det(self, x):
        _, log_scale_1, log_scale_2, _ = self._params()
        pixels = math.prod(self.input_event_shape[:-1])
        return batch_log_det(pixels * tf.reduce_sum(log_scale_1 + log_scale_2), x, self.event_ndims)

    def _dense(self) -> bool:
        if self.implementation == "auto":
            return self.input_event_shape[-1] <= DENSE_MAX_CHANNELS
        return self.implementation == "dense"

    def _apply(self, x, coefficients, levels):
        channels = self.input_event_shape[-1]
        flat = tf.reshape(x, [-1, channels])
        if self._dense():
            flat = tf.matmul(flat, butterfly.dense_matrix(coefficients, levels, channels))
        else:
            flat = butterfly.apply_factors(flat, coefficients, levels)
        return tf.reshape(flat, tf.shape(x))

    def _forward_and_log_det(self, x):
        coefficients = butterfly.block_coefficients(*self._params())
        levels = range(self._num_levels)
        return self._apply(x, coefficients, levels), self._log_det(x)

    def _inverse_and_log_det(self, z):
        coefficients = butterfly.inverse_block_coefficients(*self._params())
        levels = reversed(range(self._num_levels))
        return self._apply(z, coefficients, levels), -self._log_det(z)

    def get_config(self):
        return {**super().get_config(), "levels": self.levels, "seed": self.seed,
                "implementation": self.implementation}
