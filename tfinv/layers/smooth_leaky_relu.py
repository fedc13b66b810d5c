"""The smooth leaky ReLU ("SneakyReLU") of Finzi et al., a bijective element-wise activation."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.ops import activations


@keras.saving.register_keras_serializable(package="tfinv")
class SmoothLeakyReLU(InvertibleLayer):
    """``z = (x + a (sqrt(1 + x^2) - 1)) / (1 + a)`` element-wise, with ``a = (1 - s) / (1 + s)``.

    A smooth leaky ReLU: slope 1 for large positive ``x``, slope ``s`` (``negative_slope``) for
    large negative ``x``, ``f(0) = 0``, and ``f' > 0`` everywhere for every ``s > 0``.
    Evaluated as ``z = sqrt(s) (sinh(asinh(x) + beta) - sinh(beta))`` with
    ``beta = log(1/s) / 2``, an exact rewrite without cancellation (see `tfinv.ops.activations`).

    Inverse (closed form): ``x = sinh(asinh(z / sqrt(s) + sinh(beta)) - beta)``.
    Log-det: ``sum log f'(x)`` over the event with
    ``f'(x) = (1 + a x / sqrt(1 + x^2)) / (1 + a)``.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)``; log-det ``(B,)``; with ``event_ndims=1``,
    ``(B, D) -> (B, D)`` (the nonlinearity of fully connected flows).

    Args:
        negative_slope: ``s > 0``, the asymptotic slope for ``x -> -inf`` (fixed, not trained).
            ``s = 1`` is the identity.
        event_ndims: rank of one event (3 for images, 1 for vectors).

    References: Finzi, Izmailov, Maddox, Kirichenko & Wilson, "Invertible Convolutional
    Networks", ICML 2019 Workshop on Invertible Neural Nets and Normalizing Flows (no arXiv id;
    https://invertibleworkshop.github.io/accepted_papers/pdfs/INNF_2019_paper_26.pdf);
    used in Izmailov et al., "Semi-Supervised Learning with Normalizing Flows", arXiv:1912.13025.
    """

    event_ndims = 3

    def __init__(self, negative_slope: float = 0.1, event_ndims: int = 3, **kwargs):
        if int(event_ndims) < 1:
            raise ValueError(f"SmoothLeakyReLU needs event_ndims >= 1, got {event_ndims}")
        self.event_ndims = int(event_ndims)  # instance override, before the bijector is set up
        super().__init__(**kwargs)
        negative_slope = float(negative_slope)
        if not negative_slope > 0:
            raise ValueError(f"SmoothLeakyReLU needs negative_slope > 0, got {negative_slope}")
        self.negative_slope = negative_slope

    def _forward_and_log_det(self, x):
        z, log_derivative = activations.smooth_leaky_relu_forward(x, self.negative_slope)
        return z, tf.reduce_sum(log_derivative, axis=list(range(-self.event_ndims, 0)))

    def _inverse_and_log_det(self, z):
        x, log_derivative = activations.smooth_leaky_relu_inverse(z, self.negative_slope)
        return x, tf.reduce_sum(log_derivative, axis=list(range(-self.event_ndims, 0)))

    def get_config(self):
        return {**super().get_config(), "negative_slope": self.negative_slope, "event_ndims": self.event_ndims}
