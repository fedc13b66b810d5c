"""Densely connected cross-unit coupling (DenseFlow's, with data in place of noise)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.layers.affine_coupling import AffineCoupling
from tfinv.nets.glow_conv_net import GlowConvNet
from tfinv.ops import coupling


@keras.saving.register_keras_serializable(package="tfinv")
class CrossUnitCoupling(InvertibleLayer):
    """A chain of ``k`` invertible units on a growing representation, fed one channel group of the
    input at a time. The input is split on channels as ``[x_0, d_1, ..., d_{k-1}]``
    (``C_0 = C - (k - 1) G`` channels, then ``k - 1`` groups of ``G``). With ``u_0 = x_0``:

    ``h_i = [x_0, o_0, ..., o_{i-1}]`` (the block input and every previous unit's output),
    ``e_i = (d_i + t_i(h_i)) * s_i(h_i)`` (cross-unit coupling, ``s_i = sigmoid(. + 2)``),
    ``u_i = [o_{i-1}, e_i]``, ``o_i = unit_i(u_i)``; the output is ``z = o_{k-1}``.
    Each ``unit_i`` is an affine coupling on ``C_0 + i G`` channels (alternating halves).

    Inverse: run the units backwards, ``[o_{i-1}, e_i] = unit_i^{-1}(o_i)``, down to ``x_0``. That
    gives back every ``h_i``, and then ``d_i = e_i / s_i(h_i) - t_i(h_i)``.
    Log-det: exact, the units' log-dets plus ``sum_i sum log s_i(h_i)``. The map
    ``(x_0, d) -> (x_0, e)`` is triangular (``e_i`` depends on ``d_i`` and on ``x_0, e_{<i}``),
    and ``(x_0, e) -> z`` is the chain of units.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)``, ``C = C_0 + (k - 1) G`` with ``C_0 >= 2``;
    log-det ``(B,)``.

    Our variant: DenseFlow (Grcić et al.) pads every unit's input with *noise*,
    ``e_i = mu_i(h_i) + sigma_i(h_i) eta``. That map is stochastic and dimension-increasing and
    only gives a variational lower bound, so it does not fit the bijector contract (see
    `tfinv.models.residual_flow`). Here ``d_i`` is part of the data, so the block is a ``D -> D``
    bijection with an exact log-det. The dense connectivity of the cross-unit conditioner
    ``(t_i, s_i)`` is DenseFlow's. Our ``h_i`` also includes unit ``i-1``'s output (the reference
    code stops at unit ``i-2``), and the units are single affine couplings, not DenseFlow's
    glow-like modules with Nyström self-attention.

    Args:
        units: ``k >= 2``.
        growth: ``G >= 1``, channels revealed before each unit after the first.
        hidden_channels: width of the units' and the cross-unit conditioners' networks.

    References: Grcić, Grubišić & Šegvić, "Densely connected normalizing flows", arXiv:2010.02502,
    §3 (cross-unit coupling).
    """

    event_ndims = 3

    def __init__(self, units: int = 3, growth: int = 2, hidden_channels: int = 16, **kwargs):
        super().__init__(**kwargs)
        if int(units) < 2:
            raise ValueError(f"CrossUnitCoupling needs units >= 2, got {units}")
        if int(growth) < 1:
            raise ValueError(f"CrossUnitCoupling needs growth >= 1, got {growth}")
        self.units = int(units)
        self.growth = int(growth)
        self.hidden_channels = int(hidden_channels)
        self.unit_layers = [AffineCoupling(parity=i % 2, hidden_channels=self.hidden_channels, name=f"unit_{i}")
                            for i in range(self.units)]
        self.cross = [GlowConvNet(self.hidden_channels, 2 * self.growth, name=f"cross_{i}")
                      for i in range(1, self.units)]

    def build(self, input_shape):
        *_, height, width, channels = (int(s) if s is not None else None for s in input_shape)
        self.base_channels = channels - (self.units - 1) * self.growth
        if self.base_channels < 2:
            raise ValueError(
                f"CrossUnitCoupling '{self.name}' needs C - (units - 1) * growth >= 2 input channels for "
                f"the first unit, got C = {channels} with units = {self.units}, growth = {self.growth}")
        for i, unit in enumerate(self.unit_layers):
            unit.build((None, height, width, self.base_channels + i * self.growth))
        for i, net in enumerate(self.cross, start=1):
            # h_i: x_0 and the outputs of units 0..i-1 (unit j has C_0 + j G channels).
            net.build((None, height, width,
                       self.base_channels + sum(self.base_channels + j * self.growth for j in range(i))))
        super().build(input_shape)

    def _split(self, x):
        sizes = [self.base_channels] + [self.growth] * (self.units - 1)
        return tf.split(x, sizes, axis=-1)

    def _theta(self, i, history):
        theta = self.cross[i - 1](tf.concat(history, axis=-1))
        return theta[..., 0::2], theta[..., 1::2]

    def _forward_and_log_det(self, x):
        x_0, *revealed = self._split(x)
        history, current = [x_0], x_0
        total = tf.zeros(tf.shape(x)[:1], self.log_det_dtype)
        for i, unit in enumerate(self.unit_layers):
            if i > 0:
                e, log_scale = coupling.affine_forward(revealed[i - 1], *self._theta(i, history))
                total += tf.cast(tf.reduce_sum(log_scale, axis=[1, 2, 3]), total.dtype)
                current = tf.concat([current, e], axis=-1)
            current, log_det = unit.forward_and_log_det(current)
            total += tf.cast(log_det, total.dtype)
            history.append(current)
        return current, total

    def _inverse_and_log_det(self, z):
        total = tf.zeros(tf.shape(z)[:1], self.log_det_dtype)
        outputs, padded = [z], []
        current = z
        for i in reversed(range(self.units)):
            current, log_det = self.unit_layers[i].inverse_and_log_det(current)
            total += tf.cast(log_det, total.dtype)
            if i > 0:
                current, e = current[..., :-self.growth], current[..., -self.growth:]
                padded.insert(0, e)
                outputs.insert(0, current)
        # outputs = [o_0, ..., o_{k-1}], current = x_0: every h_i is known.
        history, revealed = [current], []
        for i in range(1, self.units):
            history.append(outputs[i - 1])
            d, log_scale = coupling.affine_inverse(padded[i - 1], *self._theta(i, history))
            total -= tf.cast(tf.reduce_sum(log_scale, axis=[1, 2, 3]), total.dtype)
            revealed.append(d)
        return tf.concat([current] + revealed, axis=-1), total

    def get_config(self):
        return {**super().get_config(), "units": self.units, "growth": self.growth,
                "hidden_channels": self.hidden_channels}
