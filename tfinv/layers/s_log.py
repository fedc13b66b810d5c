"""The S-Log gate of Karami et al.: a bijective element-wise nonlinearity with a sparsity-inducing log-det."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.core.channel_parameter import add_log_parameter, positive_initial_value
from tfinv.core.invertible_layer import InvertibleLayer


@keras.saving.register_keras_serializable(package="tfinv")
class SLog(InvertibleLayer):
    """``z = sign(x) log(alpha_c |x| + 1)`` element-wise, ``alpha_c = exp(log_alpha_c) > 0`` trained.

    The "S-Log gate" (sign-symmetric logarithm): odd, increasing, ``f'(0) = alpha``, and
    logarithmic growth in both directions. It is bijective on the whole real line (unbounded
    domain and range) for every ``alpha > 0``.

    Why this function (Karami et al.): in the log-likelihood, a layer's
    ``log|f'(x)|`` acts as a regularizer on its output. Asking it to be the ``l1`` (sparsity)
    penalty ``log f'(x) = log alpha - |f(x)|`` gives the differential equation
    ``f' = alpha exp(-|f|)``, whose solution through ``f(0) = 0`` is this gate.

    Inverse: ``x = sign(z) (exp(|z|) - 1) / alpha_c``.
    Log-det: ``sum_{h,w,c} log f'(x) = sum (log alpha_c - log(alpha_c |x| + 1))``
    ``= sum (log alpha_c - |z|)``: the ``l1`` penalty on the output (computed from ``|z|``).
    Shapes: ``(B, H, W, C) -> (B, H, W, C)``; log-det ``(B,)``.

    Numerics: ``log(1 + t)`` and ``exp(t) - 1`` are written out (tf2onnx 1.17 leaves TF's Log1p
    and Expm1 as non-standard nodes of the same names); near 0 they lose relative, not absolute, precision (``~1e-7`` absolute in
    float32). The inverse overflows float32 for ``|z| > 88``, far beyond trained activations.

    Args:
        initial_alpha: starting ``alpha > 0`` (1: slope 1 at the origin).
        per_channel: one ``alpha`` per channel (default) or one scalar.

    References: Karami, Schuurmans, Sohl-Dickstein, Dinh & Duckworth, "Invertible Convolutional
    Flow", NeurIPS 2019 (pointwise nonlinear bijectors designed from a regularizer; the S-Log
    gate).
    """

    event_ndims = 3

    def __init__(self, initial_alpha: float = 1.0, per_channel: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.initial_alpha = positive_initial_value("SLog", "initial_alpha", initial_alpha)
        self.per_channel = bool(per_channel)

    def build(self, input_shape):
        self.log_alpha = add_log_parameter(
            self, "log_alpha", self.initial_alpha, self.per_channel, input_shape)
        super().build(input_shape)

    @property
    def alpha(self) -> tf.Tensor:
        """The slope(s) at the origin, ``exp(log_alpha)``."""
        return tf.exp(self.log_alpha)

    def _forward_and_log_det(self, x):
        log_alpha = tf.cast(self.log_alpha, x.dtype)  # broadcasts over the channel axis
        z = tf.sign(x) * tf.math.log(1.0 + tf.exp(log_alpha) * tf.abs(x))
        return z, tf.reduce_sum(log_alpha - tf.abs(z), axis=[-3, -2, -1])

    def _inverse_and_log_det(self, z):
        log_alpha = tf.cast(self.log_alpha, z.dtype)
        magnitude = tf.abs(z)
        x = tf.sign(z) * (tf.exp(magnitude) - 1.0) * tf.exp(-log_alpha)
        return x, tf.reduce_sum(magnitude - log_alpha, axis=[-3, -2, -1])

    def get_config(self):
        return {
            **super().get_config(),
            "initial_alpha": self.initial_alpha,
            "per_channel": self.per_channel,
        }
