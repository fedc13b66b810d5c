"""FInC unit: four channel groups, each convolved in parallel in its own corner orientation."""

from __future__ import annotations

import keras

from tfinv.layers.bases.triangular_conv_layer import TriangularConvLayer
from tfinv.ops import oriented_conv as oc

#: Orientation of each channel group, in channel order (FInC's top-left, top-right,
#: bottom-left, bottom-right padded convolutions).
GROUP_ORIENTATIONS = ("TL", "TR", "BL", "BR")


@keras.saving.register_keras_serializable(package="tfinv")
class FInCConv(TriangularConvLayer):
    """``z = (K_TL * pad_TL(x_1), K_TR * pad_TR(x_2), K_BL * pad_BL(x_3), K_BR * pad_BR(x_4))``:
    the channels split into four equal groups ``x_g``; group ``g`` is convolved with its own
    ``k x k`` ``C/4 -> C/4`` kernel, zero-padded by ``k - 1`` on two sides (top-left, top-right,
    bottom-left, bottom-right), so each group's map is triangular in its own pixel order. The
    bottom-right-most tap of every kernel (the tap on the output pixel) is upper-triangular over
    the group's channels with a **unit diagonal**. The four groups run as one convolution (a
    block-diagonal kernel after flipping each group into the top-left orientation; see
    `tfinv.ops.oriented_conv`).

    Inverse: the four groups' triangular substitutions at once, as one solve (FInC's parallel
    inversion: every tap is up and/or left, so all pixels of an anti-diagonal depend only on
    earlier ones; ``order="wavefront"``: ``H + W - 1`` steps; the default ``order="rows"``: ``H``
    steps, one image row each; ``order="sequential"``: pixel by pixel, the reference's baseline).
    Log-det: 0 (unit diagonals: the unit preserves volume). In FInC Flow the unit is followed by
    ActNorm and an invertible 1x1 convolution, which carry the log-det and mix the groups;
    ``GlowStep(linear="finc")`` is ``ActNorm -> FInCConv -> InvConv1x1 -> coupling``.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``C`` divisible by 4 and ``H, W >= k``;
    log-det ``(B,)``.

    Differences from the reference (aditya-v-kallappa/FInCFlow, ``FastFlowUnit``): the reference's
    step order is FInC unit, ActNorm, 1x1 convolution, coupling (tfinv's Glow step puts ActNorm
    first); its inverse runs on CUDA or Cython, here in TF. `CInCChainConv` keeps tfinv's earlier
    chain of full-channel corner convolutions.

    Args:
        kernel_size: ``k`` (3 in the paper).
        init_scale: standard deviation of the initial off-diagonal taps (0.05, as the reference).
        seed, order, fit_kernel_to_image: as in `CInCConv`.

    References: Kallappa, Nagar & Varma, "FInC Flow: Fast and Invertible k x k Convolutions for
    Normalizing Flows", arXiv:2301.09266, §4 (the FInC Flow unit).
    """

    anchor = "corner"
    num_kernels = 4
    diagonal = "unit"

    def _kernel_channels(self, channels: int) -> int:
        return channels // 4

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels % 4 or channels < 4:
            raise ValueError(f"{type(self).__name__} '{self.name}' splits the channels into four groups: "
                             f"expected C divisible by 4, got input shape {tuple(input_shape)}")
        super().build(input_shape)

    def _forward_and_log_det(self, x):
        return oc.grouped_conv(x, self.kernels(), GROUP_ORIENTATIONS), self._log_det(x)

    def _inverse_and_log_det(self, z):
        return oc.grouped_solve(z, self.kernels(), GROUP_ORIENTATIONS, self.order), self._log_det(z)
