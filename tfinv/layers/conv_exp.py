"""The convolution exponential as an invertible layer."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.ops import conv_exp as ops

#: Power iteration approaches ``||M||`` from below; the default number of series terms is chosen
#: for ``NORM_MARGIN * spectral_bound`` so an underestimate of up to 50% still stays within
#: float32 round-off.
NORM_MARGIN = 1.5


def check_conv_exp_args(layer) -> None:
    """Hyper-parameter checks shared by `ConvExp` and `ConvSylvester`."""
    name = type(layer).__name__
    if layer.kernel_size < 1 or layer.kernel_size % 2 == 0:
        raise ValueError(f"{name} needs an odd kernel_size >= 1, got {layer.kernel_size}")
    if not layer.spectral_bound > 0:
        raise ValueError(f"{name} needs spectral_bound > 0, got {layer.spectral_bound}")
    if layer.terms < 1:
        raise ValueError(f"{name} needs terms >= 1, got {layer.terms}")
    if layer.power_iterations < 1:
        raise ValueError(f"{name} needs power_iterations >= 1, got {layer.power_iterations}")


def build_conv_exp_weights(layer, input_shape) -> tuple[int, int, int]:
    """Checks the image shape and adds ``kernel`` and ``power_vector`` to ``layer``."""
    name = type(layer).__name__
    shape = tuple(input_shape)
    if len(shape) != 4 or any(s is None for s in shape[1:]):
        raise ValueError(f"{name} needs a static image shape (B, H, W, C), got {shape}")
    height, width, channels = (int(s) for s in shape[1:])
    k = layer.kernel_size
    if getattr(layer, "fit_kernel_to_image", False):
        # Largest odd size <= min(k, H, W): deep levels of a multi-scale flow have tiny images.
        k = min(k, height - (height + 1) % 2, width - (width + 1) % 2)
    if height < k or width < k:
        raise ValueError(
            f"{name} needs spatial size >= kernel_size {k} x {k}, got (H, W) = ({height}, {width})"
        )
    rng = np.random.default_rng(layer.seed)
    kernel = layer.init_scale * rng.standard_normal((k, k, channels, channels)) / np.sqrt(k * k)
    start = rng.standard_normal((1, height, width, channels))
    const = keras.initializers.Constant
    layer.kernel = layer.add_weight(name="kernel", shape=kernel.shape, initializer=const(kernel))
    # Start of the power iteration: fixed (seeded), saved with the weights, never trained.
    layer.power_vector = layer.add_weight(
        name="power_vector", shape=start.shape, initializer=const(start / np.linalg.norm(start)),
        trainable=False,
    )
    return height, width, channels


@keras.saving.register_keras_serializable(package="tfinv")
class ConvExp(InvertibleLayer):
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
        super().__init__(**kwargs)
        self.fit_kernel_to_image = bool(fit_kernel_to_image)
        self.kernel_size = int(kernel_size)
        self.spectral_bound = float(spectral_bound)
        if terms is None:
            terms = ops.required_terms(NORM_MARGIN * self.spectral_bound)
        self.terms = int(terms)
        self.power_iterations = int(power_iterations)
        self.init_scale = float(init_scale)
        self.seed = int(seed)
        check_conv_exp_args(self)

    def build(self, input_shape):
        self._record_event_shape(input_shape)
        build_conv_exp_weights(self, input_shape)
        super().build(input_shape)

    def effective_kernel(self) -> tf.Tensor:
        """The kernel of ``M``: the trained kernel rescaled so that ``||M||_2 <= spectral_bound``."""
        return ops.bounded_kernel(self.kernel, self.power_vector, self.spectral_bound,
                                  self.power_iterations)[0]

    def spectral_norm(self) -> tf.Tensor:
        """Power-iteration estimate of ``||M||_2`` of the effective kernel."""
        return ops.spectral_norm_estimate(self.effective_kernel(), self.power_vector,
                                          self.power_iterations)

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
        return {**super().get_config(), "kernel_size": self.kernel_size,
                "spectral_bound": self.spectral_bound, "terms": self.terms,
                "power_iterations": self.power_iterations, "init_scale": self.init_scale,
                "seed": self.seed, "fit_kernel_to_image": self.fit_kernel_to_image}
