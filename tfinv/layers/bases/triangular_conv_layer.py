"""Shared weights and checks of the masked-convolution layers (`EmergingConv`,
`RasterEmergingConv`, `CInCConv`, `FInCConv`, `CInCChainConv`, `InverseConv`, `InverseFlowUnit`);
the math lives in `tfinv.ops.triangular_conv` and `tfinv.ops.oriented_conv`."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.ops import triangular_conv as tc

ORDERS = tc.ORDERS


class TriangularConvLayer(InvertibleLayer):
    """Owns ``num_kernels`` masked ``k x k`` kernels, each with its anchor diagonal
    parameterised as ``sign * exp(log_scale)`` (``sign`` fixed): the map is invertible for every
    value of the trainable weights, so training cannot reach a singular kernel.

    ``fit_kernel_to_image=True`` shrinks the kernel on images smaller than ``kernel_size``
    (largest size that fits, odd for the centred mask) instead of raising ``ValueError``."""

    event_ndims = 3
    #: ``"center"`` (raster / PixelCNN mask) or ``"corner"`` (top-left padded conv).
    anchor = "corner"
    num_kernels = 1
    #: ``"free"``: anchor diagonal ``sign * exp(log_scale)`` (trainable); ``"unit"``: fixed at 1
    #: (no ``log_scale`` weights, log-det 0: FInC's unit).
    diagonal = "free"
    #: The kernel size must be odd (always for the ``"center"`` anchor).
    odd_kernel_size = False

    def _stored_kernel_size(self, k: int) -> int:
        """Spatial size of the stored kernels for an (image-fitted) ``kernel_size`` ``k``."""
        return k

    def _kernel_channels(self, channels: int) -> int:
        """``C`` of the stored ``(k, k, C, C)`` kernels for an input with ``channels`` channels."""
        return channels

    def __init__(self, kernel_size: int = 3, init_scale: float = 0.05, seed: int = 0,
                 order: str = "rows", fit_kernel_to_image: bool = False, **kwargs):
        super().__init__(**kwargs)
        kernel_size = int(kernel_size)
        odd = self.anchor == "center" or self.odd_kernel_size
        if kernel_size < 1 or (odd and kernel_size % 2 == 0):
            kind = "an odd" if odd else "a positive"
            raise ValueError(f"{type(self).__name__} needs {kind} kernel_size, got {kernel_size}")
        if order not in ORDERS:
            raise ValueError(f"{type(self).__name__} order must be one of {ORDERS}, got {order!r}")
        self.kernel_size = kernel_size
        self.init_scale = float(init_scale)
        self.seed = int(seed)
        self.order = order
        self.fit_kernel_to_image = bool(fit_kernel_to_image)

    def build(self, input_shape):
        h, w, c = self.input_event_shape
        k = self.kernel_size
        if self.fit_kernel_to_image and h is not None and w is not None:
            # deep levels of a multi-scale flow have tiny images: largest size whose stored
            # kernels fit (odd for the centred raster mask and the emerging squares)
            while k > 1 and self._stored_kernel_size(k) > min(h, w):
                k -= 1
            if (self.anchor == "center" or self.odd_kernel_size) and k % 2 == 0:
                k -= 1
        if h is None or w is None or c is None:
            raise ValueError(f"{type(self).__name__} needs static (H, W, C), got {self.input_event_shape}")
        k = self._stored_kernel_size(k)
        if h < k or w < k:
            raise ValueError(
                f"{type(self).__name__} needs H >= {k} and W >= {k} (kernel_size), got ({h}, {w})")
        c = self._kernel_channels(c)
        rng = np.random.default_rng(self.seed)
        const = keras.initializers.Constant
        self._raw = []
        for n in range(self.num_kernels):
            kernel = self.add_weight(
                name=f"kernel_{n}", shape=(k, k, c, c),
                initializer=const(self.init_scale * rng.standard_normal((k, k, c, c))))
            if self.diagonal == "unit":
                self._raw.append((kernel, None, None))
                continue
            log_scale = self.add_weight(name=f"log_scale_{n}", shape=(c,), initializer="zeros")
            sign = self.add_weight(name=f"sign_{n}", shape=(c,), initializer="ones", trainable=False)
            self._raw.append((kernel, log_scale, sign))
        super().build(input_shape)

    def kernels(self) -> list[tf.Tensor]:
        """The masked kernels, anchor diagonal ``sign * exp(log_scale)`` (or 1, ``diagonal="unit"``)."""
        if self.diagonal == "unit":
            return [tc.masked_kernel(k, self.anchor, tf.ones(k.shape[-1:], k.dtype)) for k, _, _ in self._raw]
        return [tc.masked_kernel(k, self.anchor, s * tf.exp(ls)) for k, ls, s in self._raw]

    def _log_det(self, x) -> tf.Tensor:
        if self.diagonal == "unit":
            return batch_log_det(0.0, x, self.event_ndims)
        h, w, _ = self.input_event_shape
        total = tf.add_n([tf.reduce_sum(ls) for _, ls, _ in self._raw])
        return batch_log_det(float(h * w) * total, x, self.event_ndims)

    def _conv(self, x, kernel):
        return tc.masked_conv(x, kernel, self.anchor)

    def _solve(self, y, kernel):
        return tc.solve(y, kernel, self.anchor, self.order)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size,
                "init_scale": self.init_scale, "seed": self.seed, "order": self.order,
                "fit_kernel_to_image": self.fit_kernel_to_image}
