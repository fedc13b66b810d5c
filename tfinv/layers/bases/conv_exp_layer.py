"""Shared machinery of layers built on the convolution exponential exp(M) (`ConvExp`,
`ConvSylvester`): the kernel of ``M`` with power-iteration spectral-norm control, its checks and
weights. The math lives in `tfinv.ops.conv_exp`. Reference: Hoogeboom, Garcia Satorras, Tomczak &
Welling, "The Convolution Exponential and Generalized Sylvester Flows", arXiv:2006.01910.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.ops import conv_exp as ops

#: Power iteration approaches ``||M||`` from below; the default number of series terms is chosen
#: for ``NORM_MARGIN * spectral_bound`` so an underestimate of up to 50% still stays within
#: float32 round-off.
NORM_MARGIN = 1.5


class ConvExpBasisLayer(InvertibleLayer):
    """Base of the layers that apply ``exp(M)`` for a k x k convolution ``M`` (``||M||_2`` kept
    below ``spectral_bound`` by rescaling the kernel with a power-iteration estimate).

    Args:
        kernel_size: odd size k of ``M``'s kernel.
        spectral_bound: bound on ``||M||_2``.
        terms: series terms; ``None`` picks enough for float32 at ``NORM_MARGIN * spectral_bound``.
        power_iterations: power-iteration steps per call (from a fixed, saved start vector).
        init_scale: scale of the initial kernel noise.
        seed: seed of the initial kernel and of the power-iteration start.
    """

    event_ndims = 3

    def __init__(self, kernel_size: int = 3, spectral_bound: float = 0.5, terms: int | None = None,
                 power_iterations: int = 10, init_scale: float = 0.1, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = int(kernel_size)
        self.spectral_bound = float(spectral_bound)
        if terms is None:
            terms = ops.required_terms(NORM_MARGIN * self.spectral_bound)
        self.terms = int(terms)
        self.power_iterations = int(power_iterations)
        self.init_scale = float(init_scale)
        self.seed = int(seed)
        self._check_conv_exp_args()

    def _check_conv_exp_args(self) -> None:
        """Hyper-parameter checks shared by `ConvExp` and `ConvSylvester`."""
        name = type(self).__name__
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"{name} needs an odd kernel_size >= 1, got {self.kernel_size}")
        if not self.spectral_bound > 0:
            raise ValueError(f"{name} needs spectral_bound > 0, got {self.spectral_bound}")
        if self.terms < 1:
            raise ValueError(f"{name} needs terms >= 1, got {self.terms}")
        if self.power_iterations < 1:
            raise ValueError(f"{name} needs power_iterations >= 1, got {self.power_iterations}")

    def _build_conv_exp_weights(self, input_shape) -> tuple[int, int, int]:
        """Checks the image shape and adds the ``kernel`` and ``power_vector`` weights."""
        name = type(self).__name__
        shape = tuple(input_shape)
        if len(shape) != 4 or any(s is None for s in shape[1:]):
            raise ValueError(f"{name} needs a static image shape (B, H, W, C), got {shape}")
        height, width, channels = (int(s) for s in shape[1:])
        k = self.kernel_size
        if getattr(self, "fit_kernel_to_image", False):
            # Largest odd size <= min(k, H, W): deep levels of a multi-scale flow have tiny images.
            k = min(k, height - (height + 1) % 2, width - (width + 1) % 2)
        if height < k or width < k:
            raise ValueError(
                f"{name} needs spatial size >= kernel_size {k} x {k}, got (H, W) = ({height}, {width})"
            )
        rng = np.random.default_rng(self.seed)
        kernel = self.init_scale * rng.standard_normal((k, k, channels, channels)) / np.sqrt(k * k)
        start = rng.standard_normal((1, height, width, channels))
        const = keras.initializers.Constant
        self.kernel = self.add_weight(name="kernel", shape=kernel.shape, initializer=const(kernel))
        # Start of the power iteration: fixed (seeded), saved with the weights, never trained.
        self.power_vector = self.add_weight(
            name="power_vector", shape=start.shape, initializer=const(start / np.linalg.norm(start)),
            trainable=False,
        )
        return height, width, channels

    def effective_kernel(self) -> tf.Tensor:
        """The kernel of ``M``: the trained kernel rescaled so that ``||M||_2 <= spectral_bound``."""
        return ops.bounded_kernel(self.kernel, self.power_vector, self.spectral_bound,
                                  self.power_iterations)[0]

    def spectral_norm(self) -> tf.Tensor:
        """Power-iteration estimate of ``||M||_2`` of the effective kernel."""
        return ops.spectral_norm_estimate(self.effective_kernel(), self.power_vector,
                                          self.power_iterations)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size,
                "spectral_bound": self.spectral_bound, "terms": self.terms,
                "power_iterations": self.power_iterations, "init_scale": self.init_scale,
                "seed": self.seed}
