"""The invertible residual block of i-ResNet and Residual Flows."""

from __future__ import annotations

import keras

from tfinv.layers.bases.residual_layer import LipschitzBranchLayer


@keras.saving.register_keras_serializable(package="tfinv")
class InvertibleResidualBlock(LipschitzBranchLayer):
    """``y = x + g(x)``, ``g`` a `LipschitzNet` (spectrally normalised convolutions, or dense
    layers for vectors, between LipSwish/CLipSwish activations) with ``Lip(g) <= c < 1``.

    Inverse: fixed-point iteration ``x <- y - g(x)`` (a loop; ONNX ``Loop``) to
    ``inverse_tolerance``; non-convergence raises `FixedPointError` in eager mode and an assertion
    under ``validate_args``, and is flagged by `inverse_with_info`.
    Log-det: ``log det(I + J_g(x)) = sum_k (-1)^{k+1} tr(J_g^k) / k``, estimated (see
    `tfinv.layers.bases.residual_layer`): Russian roulette or a truncated series with Hutchinson probes in
    training; outside training a deterministic series (exact trace, or fixed stored probes).
    Shapes: ``(B, H, W, C)`` (``vector=False``) or ``(B, D)`` (``vector=True``); log-det ``(B,)``.

    Our variant: Jacobian-vector products in forward mode instead of the paper's vector-Jacobian
    products (same estimator: ``tr`` is transpose-invariant); every linear map is bounded by
    ``c`` (so ``Lip(g) <= c^n``), as in Residual Flows' code, rather than ``g`` as a whole.

    Args:
        hidden_features: width of ``g``'s hidden layers.
        num_hidden_layers, kernel_size, activation, power_iterations, preactivation: of ``g``
            (see `LipschitzNet`).
        vector: vectors (dense layers, ``event_ndims = 1``) instead of images.
        **kwargs: the log-det, inverse and coefficient options of `ResidualLayer`.

    The maps are `ResidualLayer`'s; the branch ``g`` and its arguments are `LipschitzBranchLayer`'s.

    References: Behrmann et al., "Invertible Residual Networks", arXiv:1811.00995; Chen et al.,
    "Residual Flows for Invertible Generative Modeling", arXiv:1906.02735.
    """

    event_ndims = 3
