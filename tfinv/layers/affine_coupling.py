"""Affine coupling layer (RealNVP / Glow)."""

from __future__ import annotations

import keras

from tfinv.layers.bases.coupling_layer import CouplingLayer
from tfinv.ops import coupling


@keras.saving.register_keras_serializable(package="tfinv")
class AffineCoupling(CouplingLayer):
    """``z_a = x_a``, ``z_b = (x_b + t(x_a)) * s(x_a)`` with ``s = sigmoid(h(x_a) + 2)``.

    Inverse: ``x_b = z_b / s(z_a) - t(z_a)`` (``z_a = x_a``, so the conditioner sees the same input).
    Log-det: ``sum log s(x_a)`` over the transformed entries.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)``; log-det ``(B,)``.

    The conditioner outputs ``(t, h)`` interleaved as ``2 * C_b`` channels. Glow's sigmoid scale
    keeps ``s`` in ``(0, 1)``, which trains more stably than ``exp``.
    See `tfinv.layers.bases.coupling_layer.CouplingLayer` for the masks and the conditioner argument.

    References: Dinh et al., "Density estimation using Real NVP", arXiv:1605.08803;
    Kingma & Dhariwal, "Glow", arXiv:1807.03039, §3.3.
    """

    params_per_channel = 2

    def _couple(self, x_b, theta):
        return coupling.affine_forward(x_b, theta[..., 0::2], theta[..., 1::2])

    def _uncouple(self, y_b, theta):
        return coupling.affine_inverse(y_b, theta[..., 0::2], theta[..., 1::2])
