"""A fixed orthonormal circular convolution (convolutional RBIG's rotation), inverted by its adjoint."""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.layers.bases.fourier_conv_layer import _per_image
from tfinv.ops import eco

#: the largest ``max |sigma - 1|`` a kernel may have (float32 rounding of an exact one is ~1e-7)
ORTHONORMAL_TOLERANCE = 1e-5


@keras.saving.register_keras_serializable(package="tfinv")
class OrthonormalConv(InvertibleLayer):
    """``z[h, w] = sum_{s, t} K[s, t]^T x[(h + s H/kh) mod H, (w + t W/kw) mod W]``: a fixed
    ``C -> C`` circular correlation (taps dilated by ``H/kh``, ``W/kw``; a full-size ``H x W``
    kernel has dilation 1, a ``1 x 1`` kernel is a rotation of the channels) whose kernel is
    orthonormal: every ``C x C`` block of its DFT (`tfinv.ops.eco.block_spectrum`) is unitary.

    The kernel is given, not trained: `tfinv.models.fit_rbig` learns one by reconstruction loss
    and projects it onto the orthonormal ones (`tfinv.ops.gaussianization.nearest_orthogonal_circular_kernel`),
    or sets a PCA/random rotation. A kernel farther than ``ORTHONORMAL_TOLERANCE`` from
    orthonormal is refused (``ValueError``), so the map is orthogonal to rounding.

    Inverse: the adjoint correlation, kernel ``K[-s mod kh, -t mod kw]^T`` (exactly the inverse
    of an orthonormal kernel).
    Log-det: 0, with the batch shape.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``kh | H``, ``kw | W``; log-det ``(B,)``.

    Where this differs from convolutional RBIG (Laparra et al. 2022): the paper's convolution is
    zero-padded and only approximately orthonormal after its reconstruction-loss training (its
    reference computes the log-det by ``slogdet`` of the dense convolution matrix and the inverse
    by a dense matrix inverse); here the padding is circular and the kernel exactly orthonormal
    (after projection), so the log-det is 0 and the transpose is the inverse.

    Args:
        kernel: ``(kh, kw, C, C)`` orthonormal kernel (cyclic taps ``0 .. k - 1``), or ``None``
            (then ``kernel_size`` gives the shape and the layer starts as the identity; a saved
            layer's kernel comes back with its weights).
        kernel_size: ``(kh, kw)`` when ``kernel`` is ``None``.

    References: Laparra, Hepburn, Johnson & Malo, "Orthonormal Convolutions for the Rotation
    Based Iterative Gaussianization", ICIP 2022 (arXiv:2206.03860).
    """

    event_ndims = 3

    def __init__(self, kernel: np.ndarray | None = None, kernel_size: Sequence[int] = (1, 1), **kwargs):
        super().__init__(**kwargs)
        self._initial_kernel = None if kernel is None else np.asarray(kernel, np.float64)
        if self._initial_kernel is not None:
            if self._initial_kernel.ndim != 4 or self._initial_kernel.shape[2] != self._initial_kernel.shape[3]:
                raise ValueError(f"OrthonormalConv needs a kernel (kh, kw, C, C), "
                                 f"got shape {self._initial_kernel.shape}")
            error = orthonormality_error(self._initial_kernel)
            if error > ORTHONORMAL_TOLERANCE:
                raise ValueError(f"OrthonormalConv needs an orthonormal kernel (max |sigma - 1| <= "
                                 f"{ORTHONORMAL_TOLERANCE}), got {error:.3g}")
            kernel_size = self._initial_kernel.shape[:2]
        self.kernel_size = tuple(int(k) for k in kernel_size)

    def build(self, input_shape):
        height, width, channels = self.input_event_shape
        kh, kw = self.kernel_size
        if height % kh or width % kw:
            raise ValueError(f"OrthonormalConv '{self.name}' needs H and W divisible by the kernel size "
                             f"({kh}, {kw}), got (H, W) = ({height}, {width})")
        if self._initial_kernel is not None and self._initial_kernel.shape[2] != channels:
            raise ValueError(f"OrthonormalConv '{self.name}' has a kernel for {self._initial_kernel.shape[2]} "
                             f"channels, got an input with {channels}")
        initial = self._initial_kernel
        if initial is None:
            initial = np.zeros((kh, kw, channels, channels))
            initial[0, 0] = np.eye(channels)
        self.kernel = self.add_weight(name="kernel", shape=initial.shape, trainable=False,
                                      initializer=keras.initializers.Constant(initial))
        super().build(input_shape)

    def _forward_and_log_det(self, x):
        kernel = tf.cast(self.kernel, x.dtype)
        return (_per_image(lambda images: eco.dilated_circular_conv2d(images, kernel), x),
                batch_log_det(0.0, x, self.event_ndims))

    def _inverse_and_log_det(self, z):
        kernel = tf.cast(eco.adjoint_kernel(self.kernel), z.dtype)
        return (_per_image(lambda images: eco.dilated_circular_conv2d(images, kernel), z),
                batch_log_det(0.0, z, self.event_ndims))

    def get_config(self):
        return {**super().get_config(), "kernel_size": list(self.kernel_size)}


def orthonormality_error(kernel: np.ndarray) -> float:
    """``max |sigma - 1|`` over the singular values of the kernel's DFT blocks (0: orthonormal)."""
    sigma = np.linalg.svd(eco.block_spectrum(kernel), compute_uv=False)
    return float(np.abs(sigma - 1.0).max())
