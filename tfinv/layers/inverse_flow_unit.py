"""Inverse-Flow's unit: the inverses of four corner-padded convolutions, chained."""

from __future__ import annotations

import keras

from tfinv.layers.bases.triangular_conv_layer import TriangularConvLayer
from tfinv.ops import oriented_conv as oc

#: Orientations in the forward (training) order of the unit.
ORIENTATIONS = ("TL", "TR", "BL", "BR")


@keras.saving.register_keras_serializable(package="tfinv")
class InverseFlowUnit(TriangularConvLayer):
    """``z = A_BR^-1 A_BL^-1 A_TR^-1 A_TL^-1 x``: ``A_o`` is the ``k x k`` ``C -> C`` convolution
    zero-padded by ``k - 1`` on the two sides of orientation ``o`` (top-left, top-right,
    bottom-left, bottom-right), each with its own kernel. Every ``A_o^-1`` is a triangular solve
    (an anti-diagonal wavefront in ``o``'s pixel order) whose gradient is one more wavefront solve
    with the adjoint kernel (Nagar & Varma's parallel backpropagation), as in `InverseConv`; chaining
    the four orientations lets every latent pixel depend on the whole image.

    Inverse (sampling): ``x = A_TL A_TR A_BL A_BR z``: four ordinary convolutions, no loop (the
    exported inverse graph is convolutions only).
    Log-det: ``-H * W * sum_o sum(log_scale_o)``: each ``A_o`` is triangular with diagonal
    ``sign * exp(log_scale_o)`` at every pixel.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``H, W >= k``; log-det ``(B,)``.

    Differences from the reference (Naagar's Inverse-Flow code, ``Inv_FlowUnit``): the diagonal of
    each anchor tap is learned as ``sign * exp(log_scale)`` (invertible for every weight value);
    the solves are TF wavefronts instead of CUDA kernels. `InverseConv` is the single-corner layer.

    Args:
        kernel_size, init_scale, seed, order, fit_kernel_to_image: as in `CInCConv`.

    References: Nagar & Varma, "Parallel Backpropagation for Inverse of a Convolution with
    Application to Normalizing Flows", AISTATS 2025 (Inverse-Flow); Kallappa, Nagar & Varma,
    arXiv:2301.09266 (the four padded orientations).
    """

    anchor = "corner"
    num_kernels = 4

    def _forward_and_log_det(self, x):
        z = x
        for kernel, orientation in zip(self.kernels(), ORIENTATIONS):
            z = oc.oriented_solve(z, kernel, orientation, self.order)
        return z, -self._log_det(x)

    def _inverse_and_log_det(self, z):
        x = z
        for kernel, orientation in reversed(list(zip(self.kernels(), ORIENTATIONS))):
            x = oc.oriented_conv(x, kernel, orientation)
        return x, self._log_det(z)
