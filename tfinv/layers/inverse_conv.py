"""Inverse-Flow: the inverse of a padded convolution as the forward map."""

from __future__ import annotations

import keras

from tfinv.layers.bases.triangular_conv_layer import TriangularConvLayer


@keras.saving.register_keras_serializable(package="tfinv")
class InverseConv(TriangularConvLayer):
    """``z = A^-1 x`` with ``A x = K * pad_tl(x)`` the CInC/FInC top-left padded ``k x k``
    convolution: the *forward* (training) direction is a triangular solve, run row by row
    (or as an anti-diagonal wavefront), and its gradient is another solve with the adjoint
    (flipped) kernel, not autodiff through the loop (Nagar & Varma's parallel backpropagation).

    Inverse: ``x = A z``, a single ordinary convolution: sampling costs one conv, and the
    exported inverse graph has no loop.
    Log-det: ``-H * W * sum(log_scale)``: ``A`` is triangular with diagonal
    ``sign * exp(log_scale)`` at every pixel, and the forward map is ``A^-1``.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``H, W >= k``; log-det ``(B,)``.

    Args:
        kernel_size, init_scale, seed, order, fit_kernel_to_image: as in `CInCConv`.

    References: Nagar & Varma, "Parallel Backpropagation for Inverse of a Convolution with
    Application to Normalizing Flows", AISTATS 2025; Kallappa, Nagar & Varma, arXiv:2301.09266.
    """

    anchor = "corner"
    num_kernels = 1

    def _forward_and_log_det(self, x):
        return self._solve(x, self.kernels()[0]), -self._log_det(x)

    def _inverse_and_log_det(self, z):
        return self._conv(z, self.kernels()[0]), self._log_det(z)
