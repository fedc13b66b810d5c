"""Logit preprocessing of dequantised images, as a bijector."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.ops import logit


@keras.saving.register_keras_serializable(package="tfinv")
class LogitPreprocess(InvertibleLayer):
    """``z = logit(a + (1 - 2a) x / L)`` for dequantised counts ``x`` in ``[0, L]``.

    Inverse: ``x = (sigmoid(z) - a) L / (1 - 2a)``.
    Log-det: ``sum log((1 - 2a) / L) - log p - log(1 - p)`` with ``p = a + (1 - 2a) x / L``.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)``; log-det ``(B,)``.

    Put first in a flow whose data are integer pixel values plus uniform noise in ``[0, 1)``
    (`tfinv.data` does this): the model's density is then over counts with unit bins, and
    ``-log p(x) / (D ln 2)`` is the usual bits/dim bound of the discrete data.

    Domain: ``x`` in ``[0, L]``. With ``validate_args=True`` an input outside it raises
    ``InvalidArgumentError`` ("expects x in [0, L]"); without, it is not checked: ``x`` beyond
    ``-a L / (1 - 2a)`` or ``(1 - a) L / (1 - 2a)`` gives NaN silently, and ``x`` just outside
    ``[0, L]`` gives finite values of a density that no longer integrates to one.

    Args:
        num_levels: ``L``, number of discrete pixel values (256 for 8-bit, 17 for digits).
        alpha: margin keeping ``p`` away from 0 and 1.

    References: Dinh et al., "Density estimation using Real NVP", arXiv:1605.08803, §4.1;
    Theis et al., "A note on the evaluation of generative models", arXiv:1511.01844.
    """

    event_ndims = 3

    def __init__(self, num_levels: int = 256, alpha: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        if num_levels < 2:
            raise ValueError(f"LogitPreprocess num_levels must be >= 2, got {num_levels}")
        if not 0.0 < alpha < 0.5:
            raise ValueError(f"LogitPreprocess alpha must be in (0, 0.5), got {alpha}")
        self.num_levels = int(num_levels)
        self.alpha = float(alpha)

    def _domain_assertions(self, x, direction):
        if direction == "forward":
            return self._assert_in_range(x, 0.0, float(self.num_levels), direction)
        return []

    def _forward_and_log_det(self, x):
        z, log_det = logit.logit_forward(x, self.num_levels, self.alpha)
        return z, tf.reduce_sum(log_det, axis=[-3, -2, -1])

    def _inverse_and_log_det(self, z):
        x, log_det = logit.logit_inverse(z, self.num_levels, self.alpha)
        return x, tf.reduce_sum(log_det, axis=[-3, -2, -1])

    def get_config(self):
        return {**super().get_config(), "num_levels": self.num_levels, "alpha": self.alpha}
