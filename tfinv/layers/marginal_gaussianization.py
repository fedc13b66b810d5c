"""RBIG's marginal Gaussianization: a fitted monotone map per dimension (or channel) to N(0, 1)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.ops import gaussianization

SHARING = ("element", "channel")


@keras.saving.register_keras_serializable(package="tfinv")
class MarginalGaussianization(InvertibleLayer):
    """``z = g_d(x)`` elementwise, ``g_d`` a strictly increasing piecewise-linear map fitted so that
    ``g_d(x_d) ~ N(0, 1)``: ``z = Phi^-1(F_d(x))`` for the CDF estimate ``F_d = Phi o g_d``.

    ``g_d`` passes through ``(q_i, z_i)``: ``K - 2`` values ``z_i`` evenly spaced over
    ``[Phi^-1(1/(2N)), Phi^-1(1 - 1/(2N))]`` (``N`` fitted samples) and ``q_i`` the empirical
    ``Phi(z_i)``-quantile of dimension ``d``, plus one knot on each side on the line of the mean
    slope; linear between knots and beyond them (Gaussian tails), see
    `tfinv.ops.gaussianization.fit_marginal_knots` and `piecewise_linear`. Fitting is the explicit
    data-dependent step ``initialize(x)`` (no gradient; the knots are non-trainable weights);
    before it the map is the identity.

    Inverse: the same map with the knots swapped, ``x = q_i + (z - z_i) / a_i`` on the segment of
    ``z`` (exact).
    Log-det: ``sum_d log a_{i(d)}``, the slope of each element's segment: ``log F_d'(x) -
    log phi(z)`` exactly, since ``F_d' = phi(g_d) g_d'``.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)``; log-det ``(B,)``. ``sharing="element"``: one map per
    ``(h, w, c)`` (RBIG's per-dimension marginals); ``"channel"``: one per channel, fitted on all
    pixels (stationary images).

    Where this differs from RBIG (Laparra et al. 2011, and its reference code): RBIG interpolates
    the empirical CDF (a histogram density) and applies ``Phi^-1`` to it; here the composite
    ``Phi^-1 o F`` is interpolated between the quantile knots. The estimate still interpolates the
    empirical CDF at the knots, the log-det is exact, and no ``Phi^-1`` (which ONNX lacks) is
    evaluated at run time.

    Args:
        num_knots: ``K``, knots per map (>= 4).
        sharing: ``"element"`` or ``"channel"``.

    References: Laparra, Camps-Valls & Malo, "Iterative Gaussianization: from ICA to Random
    Rotations", IEEE Trans. Neural Networks 22(4), 2011 (arXiv:1602.00229); Chen & Gopinath,
    "Gaussianization", NeurIPS 2000.
    """

    event_ndims = 3

    def __init__(self, num_knots: int = 40, sharing: str = "element", **kwargs):
        super().__init__(**kwargs)
        if int(num_knots) < 4:
            raise ValueError(f"MarginalGaussianization needs num_knots >= 4, got {num_knots}")
        if sharing not in SHARING:
            raise ValueError(f"MarginalGaussianization sharing must be one of {SHARING}, got {sharing!r}")
        self.num_knots = int(num_knots)
        self.sharing = sharing

    def _map_shape(self) -> tuple[int, ...]:
        height, width, channels = self.input_event_shape
        return (height, width, channels) if self.sharing == "element" else (channels,)

    def build(self, input_shape):
        shape = self._map_shape() + (self.num_knots,)
        identity = np.broadcast_to(np.linspace(-3.0, 3.0, self.num_knots), shape)
        self.knots_in = self.add_weight(name="knots_in", shape=shape, trainable=False,
                                        initializer=keras.initializers.Constant(identity))
        self.knots_out = self.add_weight(name="knots_out", shape=shape, trainable=False,
                                         initializer=keras.initializers.Constant(identity))
        super().build(input_shape)

    def _initialize(self, x):
        samples = np.asarray(x, np.float64).reshape((-1,) + (
            (int(np.prod(self.input_event_shape)),) if self.sharing == "element" else (self.input_event_shape[-1],)))
        knots_in, knots_out = gaussianization.fit_marginal_knots(samples, self.num_knots)
        shape = self._map_shape() + (self.num_knots,)
        self.knots_in.assign(knots_in.reshape(shape))
        self.knots_out.assign(knots_out.reshape(shape))

    def _apply(self, x, knots_in, knots_out):
        y, log_slope = gaussianization.piecewise_linear(x, tf.cast(knots_in, x.dtype), tf.cast(knots_out, x.dtype))
        return y, tf.reduce_sum(log_slope, axis=[-3, -2, -1])

    def _forward_and_log_det(self, x):
        return self._apply(x, self.knots_in, self.knots_out)

    def _inverse_and_log_det(self, z):
        return self._apply(z, self.knots_out, self.knots_in)

    def get_config(self):
        return {**super().get_config(), "num_knots": self.num_knots, "sharing": self.sharing}
