"""Activation normalisation of vectors: a per-feature affine map with data-dependent initialisation."""

from __future__ import annotations

import keras

from tfinv.layers.bases.act_norm_layer import ActNormLayer


@keras.saving.register_keras_serializable(package="tfinv")
class VectorActNorm(ActNormLayer):
    """``z[..., i] = (x[..., i] + b_i) * exp(log_s_i)`` for each feature ``i`` of the last axis.

    Inverse: ``x = z * exp(-log_s) - b``.
    Log-det: ``sum_i log_s_i`` for every vector (shape ``x.shape[:-1]``).
    Shapes: ``(..., n) -> (..., n)``; event_ndims = 1, so the leading axes are batch axes and one
    set of parameters is shared by all of them (in `MixerFlowBlock`: by every channel, or every
    patch).

    ``initialize(x)`` sets ``b`` and ``log_s`` so that every feature of the output has zero mean
    and unit variance over all leading axes of ``x``; without it the layer starts as the identity.

    A feature that is constant on the initialisation batch (std below ``min_std``) keeps scale
    1 and a warning names the layer and the feature (see `tfinv.ops.act_norm.initial_parameters`).

    Args:
        epsilon: floor added to the standard deviation at initialisation.
        min_std: features with a smaller batch standard deviation count as constant.

    References: Kingma & Dhariwal, "Glow", arXiv:1807.03039, §3.1; English et al., "MixerFlow",
    arXiv:2310.16777 (ActNorm initialisation of the mixing flows).
    """

    event_ndims = 1
    prefers_xla_on_cpu = True  # benchmarks/speed.py --vector
    unit = "feature"
