"""Affine coupling with a soft-clamped scale (the cINN paper's GLOW-style coupling)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from tfinv.layers.bases.coupling_layer import CouplingLayer
from tfinv.ops import coupling


@keras.saving.register_keras_serializable(package="tfinv")
class SoftClampAffineCoupling(CouplingLayer):
    """``z_a = x_a``, ``z_b = x_b * exp(log s(x_a)) + t(x_a)`` with the soft-clamped log-scale
    ``log s = (2 alpha / pi) * atan(h(x_a) / alpha)`` in ``(-alpha, alpha)``.

    Inverse: ``x_b = (z_b - t(z_a)) * exp(-log s(z_a))``. Both directions multiply by at most
    ``exp(alpha)`` whatever the conditioner outputs, so sampling cannot overflow through an
    unbounded ``1 / s`` (Glow's ``s = sigmoid(h + 2)`` in `AffineCoupling` is bounded above but
    not away from 0: its inverse divides by ``s``, and a large negative ``h`` gives ``inf``).
    Log-det: ``sum log s(x_a)`` over the transformed entries, exact for the clamped ``log s``.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)``; log-det ``(B,)``.

    The conditioner outputs ``(t, h)`` interleaved as ``2 * C_b`` channels. Differs from the
    paper's block (two couplings, each half transformed once per block) in being one coupling
    (a `GlowStep` supplies the permutation between couplings). See
    `tfinv.layers.bases.coupling_layer.CouplingLayer` for the masks, conditioner and context.

    Args:
        clamp: ``alpha > 0``, the bound of ``|log s|`` (FrEIA's default 2.0).
        **kwargs: see `CouplingLayer`.

    References: Ardizzone et al., "Guided Image Generation with Conditional Invertible Neural
    Networks", arXiv:1907.02392 (soft clamp, §3); Dinh et al., "Density estimation using Real
    NVP", arXiv:1605.08803.
    """

    params_per_channel = 2

    def __init__(self, clamp: float = 2.0, **kwargs: Any):
        super().__init__(**kwargs)
        clamp = float(clamp)
        if not np.isfinite(clamp) or clamp <= 0:
            raise ValueError(f"SoftClampAffineCoupling needs a finite clamp > 0, got {clamp}")
        self.clamp = clamp

    def _couple(self, x_b, theta):
        return coupling.clamped_affine_forward(x_b, theta[..., 0::2], theta[..., 1::2], self.clamp)

    def _uncouple(self, y_b, theta):
        return coupling.clamped_affine_inverse(y_b, theta[..., 0::2], theta[..., 1::2], self.clamp)

    def get_config(self):
        return {**super().get_config(), "clamp": self.clamp}
