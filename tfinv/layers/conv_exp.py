"""The convolution exponential as an invertible layer."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.layers.bases.conv_exp_layer import ConvExpBasisLayer
from tfinv.core.invertible_layer import batch_log_det
from tfinv.ops import conv_exp as ops

@keras.saving.register_keras_serializable(package="tfinv")
class ConvExp(ConvExpBasisLayer):
    """``z = exp(M) x = sum_{n=0}^{K} M^n x / n!``, ``M`` a zero-padded k x k C -> C convolution.

    ``M`` uses the kernel rescaled to a spectral-norm bound ``b``:
    ``kernel * b / max(sigma, b)``, ``sigma`` the power-iteration estimate of ``||M||_2`` on the
    layer's ``H x W`` images (parameters only: an exporter folds it). With ``||M|| <= b`` the
    K-term series is within float32 round-off of ``exp(M)`` (see `tfinv.ops.conv_exp`).

    Inverse: ``x = exp(-M) z``: the same series with ``-M`` (no solver).
    Log-det: ``log|det exp(M)| = tr(M) = H * W * sum_c kernel[k//2, k//2, c, c]``, broadcast to
    the batch; the inverse's is its negative.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``H, W >= kernel_size``; log-det ``(B,)``.

    The power iteration restarts every call from a fixed, seeded vector saved with the weights
    (``power_vector``, not trained), so the layer has no hidden state: outputs depend on the
    weights only, and jit, export and ``.keras`` files agree. (Spectral normalisation as in
    Miyato et al. instead carries one iteration per training step in a persistent vector.)

    Args:
        kernel_size: odd spatial size ``k`` of the kernel.
        spectral_bound: ``b``, the bound on ``||M||_2`` enforced by rescaling.
        terms: ``K``, the number of series terms; default: the smallest K whose truncation
            error is below ``2^-24`` for ``||M|| <= 1.5 b`` (b=0.5 -> K=9).
        power_iterations: power-iteration steps per call (from a fixed, seeded start vector).
        init_scale: standard deviation scale of the initial kernel.
        seed: seed of the initial kernel and of the power-iteration start.
        fit_kernel_to_image: if True, images smaller than the kernel use the largest odd kernel
            that fits (``min(k, H, W)``, e.g. 1 on 2 x 2 images) instead of raising ``ValueError``.

    References: Hoogeboom, Garcia Satorras, Tomczak & Welling, "The Convolution Exponential and
    Generalized Sylvester Flows", NeurIPS 2020, arXiv:2006.01910, §3.
    """

    event_ndims = 3

    def __init__(self, kernel_size: int = 3, spectral_bound: float = 0.5, terms: int | None = None,
                 power_iterations: int = 10, init_scale: float = 0.1, seed: int = 0,
                 fit_kernel_to_image: bool = False, **kwargs):
        self.fit_kernel_to_image = bool(fit_kernel_to_image)
        super().__init__(kernel_size=kernel_size, spectral_bound=spectral_bound, terms=terms,
                         power_iterations=power_iterations, init_scale=init_scale, seed=seed, **kwargs)

    def build(self, input_shape):
        self._build_conv_exp_weights(input_shape)
        super().build(input_shape)

    def _log_det(self, kernel, x):
        height, width = self.input_event_shape[:2]
        return batch_log_det(ops.conv_trace(kernel, height, width), x, self.event_ndims)

    def _forward_and_log_det(self, x):
        kernel = tf.cast(self.effective_kernel(), x.dtype)
        return ops.conv_exp(x, kernel, self.terms), self._log_det(kernel, x)

    def _inverse_and_log_det(self, z):
        kernel = tf.cast(self.effective_kernel(), z.dtype)
        return ops.conv_exp(z, -kernel, self.terms), -self._log_det(kernel, z)

    def get_config(self):
        return {**super().get_config(), "fit_kernel_to_image": self.fit_kernel_to_image}
