"""Additive (volume-preserving) coupling layer (NICE)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.layers.bases.coupling_layer import CouplingLayer


@keras.saving.register_keras_serializable(package="tfinv")
class AdditiveCoupling(CouplingLayer):
    """``z_a = x_a``, ``z_b = x_b + t(x_a)``.

    Inverse: ``x_b = z_b - t(z_a)``.
    Log-det: 0 (volume preserving), returned with the batch shape.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)``; log-det ``(B,)``.

    See `tfinv.layers.bases.coupling_layer.CouplingLayer` for the masks and the conditioner argument.

    References: Dinh, Krueger & Bengio, "NICE", arXiv:1410.8516.
    """

    params_per_channel = 1

    def _couple(self, x_b, theta):
        return x_b + theta, tf.zeros_like(x_b)

    def _uncouple(self, y_b, theta):
        return y_b - theta, tf.zeros_like(y_b)
