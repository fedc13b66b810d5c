"""Emerging convolution: two masked autoregressive k x k convolutions with opposite orderings."""

from __future__ import annotations

import keras

from tfinv.core.triangular_conv_layer import TriangularConvLayer
from tfinv.ops import triangular_conv as tc


@keras.saving.register_keras_serializable(package="tfinv")
class EmergingConv(TriangularConvLayer):
    """``z = R(K_2 * R(K_1 * x))``: ``K_1``, ``K_2`` are ``k x k`` ``C -> C`` kernels with the
    raster (PixelCNN) mask centred on the output pixel, and ``R`` reverses ``H``, ``W`` and
    ``C``, so the second convolution is autoregressive in the opposite order. Together they
    reach a full ``(2k - 1) x (2k - 1)`` window (the paper's "emerging" receptive field).

    Inverse: two forward substitutions, ``x = solve_1(R solve_2(R z))``, each run row by row
    (``order="rows"``: ``H`` unrolled matmul steps; see `tfinv.ops.triangular_conv`), as a
    wavefront (``2i + j = t`` fronts for ``k = 3``) or pixel by pixel (``order="sequential"``);
    the last two are fixed-count loops (ONNX ``Loop``).
    Log-det: ``H * W * (sum(log_scale_1) + sum(log_scale_2))``: each map is triangular with
    the centre tap's diagonal ``sign * exp(log_scale)`` repeated at every pixel.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``H, W >= k``; log-det ``(B,)``.

    Args:
        kernel_size: odd ``k``.
        init_scale: standard deviation of the initial (seeded) kernel entries.
        seed: seed of that initialisation.
        order: ``"rows"``, ``"wavefront"`` or ``"sequential"`` schedule of the inverse.
        fit_kernel_to_image: shrink the kernel on images smaller than ``k`` instead of raising.

    References: Hoogeboom, van den Berg & Welling, "Emerging Convolutions for Generative
    Normalizing Flows", ICML 2019, arXiv:1901.11137, §3.1.
    """

    anchor = "center"
    num_kernels = 2

    def _forward_and_log_det(self, x):
        k1, k2 = self.kernels()
        z = tc.reverse_all(self._conv(tc.reverse_all(self._conv(x, k1)), k2))
        return z, self._log_det(x)

    def _inverse_and_log_det(self, z):
        k1, k2 = self.kernels()
        u = tc.reverse_all(self._solve(tc.reverse_all(z), k2))
        return self._solve(u, k1), -self._log_det(z)
