"""CInC: the characterisable invertible k x k convolution with top-left zero padding."""

from __future__ import annotations

import keras

from tfinv.layers.bases.triangular_conv_layer import TriangularConvLayer


@keras.saving.register_keras_serializable(package="tfinv")
class CInCConv(TriangularConvLayer):
    """``z = K * pad_tl(x)``: a ``k x k`` ``C -> C`` convolution on ``x`` zero-padded by ``k - 1``
    rows on top and ``k - 1`` columns on the left, so output ``(i, j)`` reads the input window
    whose bottom-right corner is ``(i, j)``.

    CInC's characterisation: this map is triangular in raster order, and invertible iff the
    bottom-right tap ``K[k-1, k-1]`` restricted to the channel order (``K[k-1, k-1, c, o] = 0``
    for ``c > o``) has a nonzero diagonal. The layer enforces both *by construction* throughout
    training: the mask zeroes the forbidden entries and the diagonal is ``sign * exp(log_scale)``
    (never 0 for any finite weight).

    Inverse: forward substitution (`tfinv.ops.triangular_conv.solve`), row by row (``H``
    matmul steps, default), by anti-diagonal wavefronts ``i + j = t`` (``H + W - 1`` steps) or pixel by pixel (``order="sequential"``,
    the paper's algorithm, ``H * W`` steps).
    Log-det: ``H * W * sum(log_scale)``.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``H, W >= k``; log-det ``(B,)``.

    Args:
        kernel_size: ``k`` (3 in the paper; any ``k >= 1`` works).
        init_scale: standard deviation of the initial (seeded) kernel entries.
        seed: seed of that initialisation.
        order: ``"wavefront"`` or ``"sequential"`` schedule of the inverse.
        fit_kernel_to_image: shrink the kernel on images smaller than ``k`` instead of raising.

    References: Nagar, Dufraisse & Varma, "CInC Flow: Characterizable Invertible 3x3
    Convolution", arXiv:2107.01358. The paper's Quad-coupling is `QuadCoupling`; a CInC Flow
    step is ``GlowStep(linear="cinc", coupling="quad")`` (``Glow(..., coupling="quad")``).
    """

    anchor = "corner"
    num_kernels = 1

    def _forward_and_log_det(self, x):
        return self._conv(x, self.kernels()[0]), self._log_det(x)

    def _inverse_and_log_det(self, z):
        return self._solve(z, self.kernels()[0]), -self._log_det(z)
