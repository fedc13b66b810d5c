"""Activation normalisation of sequences (or spectra): one scale and bias per position and channel."""

from __future__ import annotations

import keras

from tfinv.layers.bases.act_norm_layer import ActNormLayer


@keras.saving.register_keras_serializable(package="tfinv")
class SequenceActNorm(ActNormLayer):
    """``z[t, c] = (x[t, c] + b[t, c]) * exp(log_s[t, c])`` for every position ``t`` and channel ``c``.

    Inverse: ``x = z * exp(-log_s) - b``.
    Log-det: ``sum_{t, c} log_s[t, c]`` for every sequence.
    Shapes: ``(B, T, C) -> (B, T, C)``; event_ndims = 2.

    After a `RealDFT` the positions are frequencies: ``initialize(x)`` then standardises every
    Fourier coefficient over the batch (zero mean, unit variance), the trained counterpart of
    the spectrum standardisation in Alaa et al.'s reference code (which fixes the data's mean and
    standard deviation instead). Glow's ActNorm shares one scale per channel over all positions;
    here a spectrum's variance differs by orders of magnitude between frequencies, so each gets
    its own. Without ``initialize`` the layer starts as the identity.

    A coefficient that is constant on the initialisation batch (std below ``min_std``) keeps
    scale 1 and a `RuntimeWarning` names the layer and the positions.

    Args:
        epsilon: floor added to the standard deviation at initialisation.
        min_std: entries with a smaller batch standard deviation count as constant.

    References: Kingma & Dhariwal, "Glow", arXiv:1807.03039, §3.1 (ActNorm); Alaa, Chan & van der
    Schaar, "Generative Time-series Modeling with Fourier Flows", ICLR 2021.
    """

    event_ndims = 2
    parameter_ndims = 2
    unit = "position"
