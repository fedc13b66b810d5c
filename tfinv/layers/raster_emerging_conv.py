"""Raster-mask variant of the emerging convolution: two PixelCNN-masked k x k convolutions."""

from __future__ import annotations

import keras

from tfinv.layers.bases.triangular_conv_layer import TriangularConvLayer
from tfinv.ops import triangular_conv as tc


@keras.saving.register_keras_serializable(package="tfinv")
class RasterEmergingConv(TriangularConvLayer):
    """``z = R(K_2 * R(K_1 * x))``: ``K_1``, ``K_2`` are ``k x k`` ``C -> C`` kernels with the
    raster (PixelCNN) mask centred on the output pixel, and ``R`` reverses ``H``, ``W`` and
    ``C``, so the second convolution is autoregressive in the opposite order.

    This is tfinv's variant, not the paper's layer (that is `EmergingConv`: square masks, a
    preceding 1x1 convolution, a bias). Its receptive field is not a square: with ``p = k // 2``
    it spans ``2p + 1`` rows and ``4p + 1`` columns, and for ``k = 3`` it holds 13 pixels in a
    3 x 5 window (rows of 4, 5 and 4 pixels; ``tests/test_faithful_convs.py`` measures it from
    the Jacobian). Its inverse needs a ``2i + j`` wavefront (``H + 2W`` steps) where the square
    masks need ``i + j`` (``H + W``).

    Inverse: two forward substitutions, ``x = solve_1(R solve_2(R z))``, each run as a
    wavefront (``2i + j = t`` fronts for ``k = 3``; see `tfinv.ops.triangular_conv`) or pixel by
    pixel (``order="sequential"``); both are fixed-count loops (ONNX ``Loop``).
    Log-det: ``H * W * (sum(log_scale_1) + sum(log_scale_2))``: each map is triangular with
    the centre tap's diagonal ``sign * exp(log_scale)`` repeated at every pixel.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``H, W >= k``; log-det ``(B,)``.

    Args:
        kernel_size: odd ``k``.
        init_scale: standard deviation of the initial (seeded) kernel entries.
        seed: seed of that initialisation.
        order: ``"wavefront"`` or ``"sequential"`` schedule of the inverse.
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
