"""Emerging convolution (the paper's form): two square-masked autoregressive convolutions and a bias."""

from __future__ import annotations

import keras

from tfinv.layers.bases.triangular_conv_layer import TriangularConvLayer
from tfinv.ops import oriented_conv as oc


@keras.saving.register_keras_serializable(package="tfinv")
class EmergingConv(TriangularConvLayer):
    """``z = K_2 * (K_1 * x) + b``: a ``k x k`` emerging convolution built from two square-masked
    autoregressive convolutions (``k`` odd, ``s = (k + 1) / 2``):

    * ``K_1`` reads the ``s x s`` square *below and to the right* of each output pixel (taps
      ``x[i + a, j + b]``, ``0 <= a, b < s``), its centre tap upper-triangular over the channels
      (output ``o`` reads channels ``c <= o``);
    * ``K_2`` reads the ``s x s`` square *above and to the left* (``x[i - a, j - b]``), its centre
      tap lower-triangular (``c >= o``);
    * ``b`` is a per-channel bias.

    Their composition sees exactly the ``k x k`` window around the pixel (the "emerging"
    receptive field of a ``k x k`` convolution). In the paper, and in ``GlowStep(linear="emerging")``,
    the layer follows an invertible 1x1 convolution (`InvConv1x1`), which mixes all channels.

    Inverse: ``x = solve_1(solve_2(z - b))``: two triangular substitutions, each run row by row
    (``order="rows"``, the default: ``H`` unrolled matmul steps; see `tfinv.ops.triangular_conv`),
    as anti-diagonal wavefronts (``order="wavefront"``: ``H + W - 1`` steps) or pixel by pixel
    (``order="sequential"``); the last two are fixed-count loops exported as ONNX ``Loop``.
    Log-det: ``H * W * (sum log|diag K_1| + sum log|diag K_2|) = H * W * (sum(log_scale_1) +
    sum(log_scale_2))``.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``H, W >= k``; log-det ``(B,)``.

    Differences from the reference (ehoogeboom/emerging): the centre diagonals are parameterised
    as ``sign * exp(log_scale)`` (the reference learns them freely, initialised near 1), so the
    layer is invertible for every value of its weights; the off-centre taps start small and
    random (``init_scale``) instead of at ``0.02`` noise; the inverse is a TF wavefront instead of
    a Cython loop on the CPU. `RasterEmergingConv` keeps tfinv's earlier raster-mask variant.

    Args:
        kernel_size: odd ``k`` of the emerging window (3 in the paper); each square mask is
            ``(k + 1) / 2`` wide.
        init_scale, seed, order, fit_kernel_to_image: as in `CInCConv` (``order``: ``"rows"``,
            ``"wavefront"`` or ``"sequential"`` schedule of the inverse).

    References: Hoogeboom, van den Berg & Welling, "Emerging Convolutions for Generative
    Normalizing Flows", ICML 2019, arXiv:1901.11137, §3.1 and Fig. 3.
    """

    anchor = "corner"
    num_kernels = 2
    odd_kernel_size = True

    def _stored_kernel_size(self, k: int) -> int:
        return (k + 1) // 2

    def build(self, input_shape):
        super().build(input_shape)
        self.bias = self.add_weight(name="bias", shape=(self.input_event_shape[-1],), initializer="zeros")

    # K_1: the corner (TL) conv conjugated by flipping H and W reads down-right, channel order kept.
    # K_2: the TL conv conjugated by reversing the channels reads up-left with a lower-triangular centre.
    def _forward_and_log_det(self, x):
        k1, k2 = self.kernels()
        u = oc.oriented_conv(x, k1, "BR")
        z = oc.reverse_channels(oc.oriented_conv(oc.reverse_channels(u), k2, "TL"))
        return z + self.bias, self._log_det(x)

    def _inverse_and_log_det(self, z):
        k1, k2 = self.kernels()
        u = oc.reverse_channels(oc.oriented_solve(oc.reverse_channels(z - self.bias), k2, "TL", self.order))
        return oc.oriented_solve(u, k1, "BR", self.order), -self._log_det(z)
