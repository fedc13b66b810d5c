"""Data-adaptive convolution coupling (Karami et al.): a per-example circular convolution of one
half of the channels, with kernels predicted from the other half."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.layers.bases.coupling_layer import CouplingLayer
from tfinv.ops import adaptive_conv, coupling


@keras.saving.register_keras_serializable(package="tfinv")
class DataAdaptiveConv(CouplingLayer):
    """``z_a = x_a``, ``z_b = K(x_a) * ((x_b + t(x_a)) s(x_a))``: a coupling whose transform of
    ``x_b`` is a circular convolution with kernels that are a function of ``x_a``.

    ``K(x_a)`` is one ``k x k`` kernel per example and per transformed channel (depthwise),
    applied with circular padding; ``t`` and ``s`` are an optional element-wise shift and scale
    (``affine=True``, Glow's ``s = sigmoid(h + 2)``), the element-wise multiplication the paper
    combines with its convolutions. The conditioner (default `tfinv.nets.GlowConvNet`, zero
    output at initialisation) maps ``x_a`` to ``k^2`` (+ 2 with ``affine``) maps per transformed
    channel; the kernel maps are averaged over the image, so each example gets one kernel per
    channel, ``taps = delta + bound * r / (1 + sum_taps |r|)`` (`tfinv.ops.adaptive_conv.bounded_taps`).
    At initialisation ``r = 0``: the kernel is the identity.

    Inverse: ``x_b = (K^-1 * z_b) / s - t`` with ``x_a = z_a`` (the conditioner sees the same
    input both ways): per example and channel, the deconvolution is a division by the kernel's
    spectrum, ``x_b = IDFT(DFT(z_b) / K(u, v))``, with real and imaginary parts as separate real
    tensors and the DFTs as matmuls (`tfinv.ops.adaptive_conv`): standard ONNX, no complex dtype.
    Log-det: ``sum_{u, v} sum_c log|K_c(u, v)|`` over all ``H x W`` frequencies (the per-channel
    convolution is diagonal in the Fourier basis: ``|K|^2 = Re^2 + Im^2`` from real DFT matmuls)
    plus ``sum log s`` over the transformed entries; per example, shape ``(B,)``.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``C >= 2`` and ``H, W >= kernel_size``
    (static); the channel mask only (a convolution of checkerboard squares would read the
    conditioning squares).

    Invertibility by construction: the kernel is the identity plus a perturbation whose taps sum
    to less than ``bound`` in absolute value (``0 < bound < 1``), so for every input and every
    weight ``1 - bound < |K_c(u, v)| < 1 + bound`` at every frequency. The division never meets
    a zero, the inverse amplifies by at most ``1 / (1 - bound)`` (10 at the default 0.9) and the
    log-det term per frequency stays in ``(log(1 - bound), log(1 + bound))``. No runtime guard is
    needed; the price is that only kernels in this (still rich) set are reachable: the kernel's
    overall gain is left to ``s`` and to the surrounding layers (ActNorm, `PeriodicConv`).

    Args:
        kernel_size: ``k`` of the adaptive kernels (any ``k >= 1``; ``k = 1`` is a per-example
            channel scale).
        bound: the spectrum guarantee above, ``0 < bound < 1``.
        affine: add the element-wise shift and scale before the convolution.
        parity: 0 or 1; which half of the channels conditions the other.
        conditioner: a Keras layer mapping ``(B, H, W, C_a)`` to
            ``(B, H, W, (k^2 + 2 affine) C_b)`` (per transformed channel ``c``: the ``k^2`` kernel
            maps, then shift and scale maps, interleaved channel-major, i.e. channel ``c`` owns
            outputs ``c * P .. c * P + P - 1``); ``None`` builds the default zero-initialised
            `tfinv.nets.GlowConvNet`.
        hidden_channels: width of the default conditioner.

    References:
        1. Karami, Schuurmans, Sohl-Dickstein, Dinh & Duckworth, "Invertible Convolutional
           Flow", NeurIPS 2019 (data-adaptive convolution; element-wise multiplication
           combined with convolutions).
        2. Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", arXiv:1605.08803
           (coupling layers).
    """

    def __init__(
        self,
        kernel_size: int = 3,
        bound: float = 0.9,
        affine: bool = True,
        parity: int = 0,
        conditioner: keras.layers.Layer | dict | None = None,
        hidden_channels: int = 64,
        **kwargs,
    ):
        kwargs.pop("mask", None)
        super().__init__(mask="channel", parity=parity, conditioner=conditioner,
                         hidden_channels=hidden_channels, **kwargs)
        self.kernel_size = int(kernel_size)
        self.bound = float(bound)
        self.affine = bool(affine)
        if self.kernel_size < 1:
            raise ValueError(f"DataAdaptiveConv needs kernel_size >= 1, got {kernel_size}")
        if not 0.0 < self.bound < 1.0:
            raise ValueError(f"DataAdaptiveConv needs 0 < bound < 1, got {bound}")
        # Per transformed channel: k^2 kernel maps (+ shift and scale maps).
        self.params_per_channel = self.kernel_size**2 + (2 if self.affine else 0)

    def build(self, input_shape):
        height, width, channels = self.input_event_shape
        name = f"DataAdaptiveConv '{self.name}'"
        if height is None or width is None or channels is None:
            raise ValueError(f"{name} needs a static event shape (H, W, C), got {tuple(input_shape)}")
        if height < self.kernel_size or width < self.kernel_size:
            raise ValueError(
                f"{name} needs H and W >= kernel_size {self.kernel_size}, got (H, W) = "
                f"({height}, {width})"
            )
        super().build(input_shape)

    # ------------------------------------------------------------------ parameters of x_a
    def _conditioned(self, x_a):
        """``(taps (B, k^2, C_b), shift, raw_scale)`` from the conditioner (shift/scale ``None``
        without ``affine``)."""
        theta = self._theta(x_a)
        n_params = self.params_per_channel
        k2 = self.kernel_size**2
        theta = tf.reshape(theta, [-1, *theta.shape[1:3], theta.shape[-1] // n_params, n_params])
        # One kernel per example: the kernel maps averaged over the image.
        raw = tf.transpose(tf.reduce_mean(theta[..., :k2], axis=[1, 2]), [0, 2, 1])
        taps = adaptive_conv.bounded_taps(raw, self.kernel_size, self.bound)
        if not self.affine:
            return taps, None, None
        return taps, theta[..., k2], theta[..., k2 + 1]

    def _check_rank(self, t):
        if t.shape.rank != 4:
            raise ValueError(
                f"DataAdaptiveConv '{self.name}' takes one batch axis, (B, H, W, C); got shape "
                f"{tuple(t.shape)}"
            )

    # ------------------------------------------------------------------ maps
    def _forward_and_log_det(self, x):
        self._check_rank(x)
        x_a, x_b = self._split_input(x)
        taps, shift, raw_scale = self._conditioned(x_a)
        log_det = 0.0
        if self.affine:
            x_b, log_scale = coupling.affine_forward(x_b, shift, raw_scale)
            log_det = tf.reduce_sum(log_scale, axis=[1, 2, 3])
        z_b = adaptive_conv.depthwise_periodic_conv2d(x_b, taps, self.kernel_size)
        log_det += self._conv_log_det(taps)
        return self._merge(x_a, z_b), log_det

    def _inverse_and_log_det(self, z):
        self._check_rank(z)
        z_a, z_b = self._split_input(z)
        taps, shift, raw_scale = self._conditioned(z_a)
        height, width = int(z.shape[1]), int(z.shape[2])
        re, im = adaptive_conv.depthwise_spectrum(taps, self.kernel_size, height, width)
        x_b = adaptive_conv.depthwise_periodic_deconv2d(z_b, re, im)
        log_det = -adaptive_conv.depthwise_log_abs_det(re, im, width)
        if self.affine:
            x_b, log_scale = coupling.affine_inverse(x_b, shift, raw_scale)
            log_det -= tf.reduce_sum(log_scale, axis=[1, 2, 3])
        return self._merge(z_a, x_b), log_det

    def _conv_log_det(self, taps):
        height, width, _ = self.input_event_shape
        re, im = adaptive_conv.depthwise_spectrum(taps, self.kernel_size, height, width)
        return adaptive_conv.depthwise_log_abs_det(re, im, width)

    def get_config(self):
        config = super().get_config()
        config.pop("mask")
        return {**config, "kernel_size": self.kernel_size, "bound": self.bound, "affine": self.affine}
