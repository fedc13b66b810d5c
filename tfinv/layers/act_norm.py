"""Glow's activation normalisation: a per-channel affine map with data-dependent initialisation."""

from __future__ import annotations

import keras

from tfinv.layers.bases.act_norm_layer import ActNormLayer


@keras.saving.register_keras_serializable(package="tfinv")
class ActNorm(ActNormLayer):
    """``z = (x + b) * exp(log_s)`` per channel.

    Inverse: ``x = z * exp(-log_s) - b``.
    Log-det: ``H * W * sum(log_s)`` (the Jacobian is diagonal and the same at every pixel).
    Shapes: ``(B, H, W, C) -> (B, H, W, C)``; log-det ``(B,)``.

    Initialisation is an explicit step, never hidden in a call: ``initialize(x)`` sets ``b`` and
    ``log_s`` so that the output on the batch ``x`` has zero mean and unit variance per channel.
    Without it the layer starts as the identity.

    A channel that is constant on the initialisation batch (std below ``min_std``, e.g. a
    border pixel that is always 0 in non-dequantised data) keeps scale 1 instead of ``1/epsilon``,
    and a `RuntimeWarning` names the layer and the channel.

    Args:
        epsilon: floor added to the batch standard deviation at initialisation.
        min_std: channels with a smaller batch standard deviation count as constant.

    References: Kingma & Dhariwal, "Glow", arXiv:1807.03039, §3.1.
    """

    event_ndims = 3
