"""The convolutional (generalised) Sylvester flow, with the convolution exponential as basis change."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from tfinv.layers.bases.conv_exp_layer import ConvExpBasisLayer
from tfinv.core.invertible_layer import batch_log_det
from tfinv.ops import conv_exp as ops


def autoregressive_mask(kernel_size: int, channels: int) -> np.ndarray:
    """``(k, k, C, C)`` 0/1 mask of a strictly autoregressive convolution in raster order
    ``(h, w, c)``: taps above, or left of the centre on its row, see every channel; the centre tap
    maps input channel ``i`` to output channel ``j`` only if ``i < j``."""
    c = kernel_size // 2
    mask = np.zeros((kernel_size, kernel_size, channels, channels), np.float32)
    mask[:c] = 1.0
    mask[c, :c] = 1.0
    mask[c, c] = np.triu(np.ones((channels, channels), np.float32), 1)
    return mask


@keras.saving.register_keras_serializable(package="tfinv")
class ConvSylvester(ConvExpBasisLayer):
    """``z = x + exp(-M) f(exp(M) x)``: a generalised Sylvester flow ``x + Q^-1 f(Q x)`` whose
    basis change ``Q = exp(M)`` is a convolution exponential (see `ConvExp`, same ``M``).

    The inner map is autoregressive in raster order ``(h, w, c)``::

        f(u) = gamma * tanh(a(u)),   a(u) = alpha * u + T u + bias,

    ``T`` a strictly autoregressive (masked) ``k x k`` convolution, ``alpha``, ``gamma`` and
    ``bias`` per channel. ``df/du`` is triangular with diagonal ``gamma alpha tanh'(a)``.
    ``gamma = rho * tanh(g) / L`` with ``L = max(|alpha| + sum |T_kernel|, 1e-3)`` per output
    channel, so every row of ``df/du`` has absolute sum ``<= rho < 1``: ``f`` is a contraction in
    the max-norm (Lipschitz ``rho``, the ``contraction`` argument).

    Inverse: with ``y = exp(M) z`` the equation is ``u + f(u) = y``; ``u`` is found by the fixed
    point iteration ``u <- y - f(u)`` from ``u = y``, a fixed number of times (unrolled: XLA and
    ONNX friendly). It converges because ``f`` is a ``rho``-contraction (Banach):
    ``max|u_n - u*| <= rho^n max|f(u*)| <= rho^n max|gamma|``; the default count is the smallest
    ``n`` with ``rho^n <= 2^-24`` (rho=0.5 -> 24). Then ``x = exp(-M) u``.
    Log-det: ``det(I + Q^-1 J_f Q) = det(I + J_f)`` (Sylvester / similarity), and ``J_f`` is
    triangular, so ``log|det| = sum_{h,w,c} log(1 + gamma alpha tanh'(a(exp(M) x)))``; each factor
    is ``>= 1 - rho > 0``. The inverse's log-det is its negative at ``u``.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``H, W >= kernel_size``; log-det ``(B,)``.

    Relation to the paper: §4 there uses the same structure ``x + Q^-1 f_AR(Q x)`` with
    ``Q`` = convolution exponential (times a Householder 1x1 convolution), and a deeper masked
    convolutional network as ``f_AR`` made contractive by spectral normalisation, inverted by
    fixed-point iteration. Here ``f_AR`` is the one-layer Sylvester form
    ``gamma * tanh(triangular conv)`` whose contraction is guaranteed by construction (a row-sum
    bound, no power iteration), and ``Q`` is the convolution exponential alone.

    Args:
        kernel_size: odd kernel size of ``M`` (the convolution exponential).
        autoregressive_kernel_size: odd kernel size of the masked convolution ``T``.
        spectral_bound, terms, power_iterations, init_scale: as in `ConvExp`.
        contraction: ``rho`` in (0, 1), the Lipschitz bound of ``f``.
        fixed_point_iterations: inverse iterations; default ``ceil(log(2^-24) / log(rho))``.
        seed: seed of the initial weights. ``g`` starts at 0, so the layer starts as identity.

    References: Hoogeboom, Garcia Satorras, Tomczak & Welling, "The Convolution Exponential and
    Generalized Sylvester Flows", NeurIPS 2020, arXiv:2006.01910, §4; van den Berg et al.,
    "Sylvester Normalizing Flows", arXiv:1803.05649.
    """

    event_ndims = 3

    def __init__(self, kernel_size: int = 3, autoregressive_kernel_size: int = 3,
                 spectral_bound: float = 0.5, terms: int | None = None, power_iterations: int = 10,
                 contraction: float = 0.5, fixed_point_iterations: int | None = None,
                 init_scale: float = 0.1, seed: int = 0, **kwargs):
        super().__init__(kernel_size=kernel_size, spectral_bound=spectral_bound, terms=terms,
                         power_iterations=power_iterations, init_scale=init_scale, seed=seed, **kwargs)
        self.autoregressive_kernel_size = int(autoregressive_kernel_size)
        self.contraction = float(contraction)
        if not 0.0 < self.contraction < 1.0:
            raise ValueError(f"ConvSylvester needs 0 < contraction < 1, got {self.contraction}")
        k = self.autoregressive_kernel_size
        if k < 1 or k % 2 == 0:
            raise ValueError(f"ConvSylvester needs an odd autoregressive_kernel_size >= 1, got {k}")
        if fixed_point_iterations is None:
            fixed_point_iterations = math.ceil(math.log(2.0**-24) / math.log(self.contraction))
        self.fixed_point_iterations = int(fixed_point_iterations)
        if self.fixed_point_iterations < 1:
            raise ValueError(
                f"ConvSylvester needs fixed_point_iterations >= 1, got {self.fixed_point_iterations}"
            )

    def build(self, input_shape):
        height, width, channels = self._build_conv_exp_weights(input_shape)
        if height < self.autoregressive_kernel_size or width < self.autoregressive_kernel_size:
            k = self.autoregressive_kernel_size
            raise ValueError(f"ConvSylvester needs spatial size >= autoregressive_kernel_size "
                             f"{k} x {k}, got (H, W) = ({height}, {width})")
        k = self.autoregressive_kernel_size
        rng = np.random.default_rng(self.seed + 1)
        mask = autoregressive_mask(k, channels)
        const = keras.initializers.Constant
        self.mask = mask  # a numpy constant: embeds in exported graphs, not a weight
        self.autoregressive_kernel = self.add_weight(
            name="autoregressive_kernel", shape=mask.shape,
            initializer=const(mask * self.init_scale * rng.standard_normal(mask.shape) / k),
        )
        self.alpha = self.add_weight(name="alpha", shape=(channels,), initializer="ones")
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros")
        self.gate = self.add_weight(name="gate", shape=(channels,), initializer="zeros")
        super().build(input_shape)

    def _inner(self, dtype):
        """``(T kernel, alpha, gamma, bias)`` with ``|gamma| (|alpha| + sum|T|) <= rho``."""
        masked = tf.cast(self.autoregressive_kernel * self.mask, dtype)
        alpha = tf.cast(self.alpha, dtype)
        lipschitz = tf.maximum(tf.abs(alpha) + tf.reduce_sum(tf.abs(masked), axis=[0, 1, 2]), 1e-3)
        gamma = self.contraction * tf.tanh(tf.cast(self.gate, dtype)) / lipschitz
        return masked, alpha, gamma, tf.cast(self.bias, dtype)

    @staticmethod
    def _preactivation(u, inner):
        masked, alpha, _, bias = inner
        return alpha * u + ops.conv(u, masked) + bias

    def _log_det(self, u, inner):
        _, alpha, gamma, _ = inner
        h = tf.tanh(self._preactivation(u, inner))
        # log(1 + .) rather than log1p: ONNX has no Log1p; the argument is >= 1 - rho.
        return tf.reduce_sum(tf.math.log(1.0 + gamma * alpha * (1.0 - h * h)), axis=[-3, -2, -1])

    def _forward_and_log_det(self, x):
        kernel = tf.cast(self.effective_kernel(), x.dtype)
        inner = self._inner(x.dtype)
        u = ops.conv_exp(x, kernel, self.terms)
        f = inner[2] * tf.tanh(self._preactivation(u, inner))
        z = x + ops.conv_exp(f, -kernel, self.terms)
        return z, batch_log_det(self._log_det(u, inner), x, self.event_ndims)

    def _inverse_and_log_det(self, z):
        kernel = tf.cast(self.effective_kernel(), z.dtype)
        inner = self._inner(z.dtype)
        y = ops.conv_exp(z, kernel, self.terms)
        u = y
        for _ in range(self.fixed_point_iterations):
            u = y - inner[2] * tf.tanh(self._preactivation(u, inner))
        x = ops.conv_exp(u, -kernel, self.terms)
        return x, batch_log_det(-self._log_det(u, inner), z, self.event_ndims)

    def get_config(self):
        return {**super().get_config(), "autoregressive_kernel_size": self.autoregressive_kernel_size,
                "contraction": self.contraction, "fixed_point_iterations": self.fixed_point_iterations}
