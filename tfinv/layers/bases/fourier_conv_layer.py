"""Shared machinery of the Fourier-domain convolutions (`PeriodicConv`, `SymmetricConv`).

Both layers are a ``k x k`` ``C -> C`` convolution (plus an optional per-channel bias) that a
fixed orthogonal transform (the DFT for circular padding, the DCT for symmetric padding) makes
block-diagonal: one ``C x C`` block per frequency. The blocks depend only on the weights, so the
log-det is ``sum log|det block|`` broadcast to the batch, and the inverse multiplies the
transformed ``z - b`` by the block inverses. Parameter-only values (block inverses, log-det) are
embedded as constants at export; a numerically singular spectrum is rejected by
`FourierConvLayer.check_invertible` (eager inverses, export tracing, or a graph assertion with
``validate_args``).

Subclasses give the kernel parameterisation (``_build_kernel``), the spectrum
(``singular_values``, ``_inverse_blocks_source``, ``_log_det_value``) and the maps in the
spatial/frequency domain (``_convolution``, ``_deconvolve``), plus the class attributes
``_odd_kernel`` (only odd ``kernel_size`` allowed) and ``_frequency_name`` (how
`check_invertible` names a block).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfinv.core.export_mode import is_exporting
from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.ops import fourier


def _parameter_only(fn):
    """``fn()`` (a computation on the weights only) as a graph constant while exporting, else
    ``fn()`` itself. At export the weights are fixed, so the ONNX graph only needs the value, and
    computing it eagerly keeps its ops (Cholesky, the QR fallback's ``If``, matrix inverses) out of
    tf2onnx's hands."""
    if not is_exporting():
        return fn()
    with tf.init_scope():
        value = np.asarray(fn())
    return tf.constant(value)


def _per_image(fn, x: tf.Tensor) -> tf.Tensor:
    """``fn`` on ``(B, H, W, C)``; inputs with several batch axes are flattened and restored."""
    if x.shape.rank == 4:
        return fn(x)
    batch_shape = tf.shape(x)[:-3]
    y = fn(tf.reshape(x, [-1, *(int(d) for d in x.shape[-3:])]))  # static event shape kept
    return tf.reshape(y, tf.concat([batch_shape, tf.shape(y)[1:]], axis=0))


class FourierConvLayer(InvertibleLayer):
    """Base of `PeriodicConv` and `SymmetricConv` (see module docstring).

    Args:
        kernel_size: ``k`` (odd only if the subclass sets ``_odd_kernel``).
        dilation: spacing between taps.
        use_bias: add a per-channel bias ``b`` after the convolution.
        init_scale: standard deviation of the initial noise on the non-identity kernel entries.
        seed: seed of that noise.
        singular_tolerance: relative singular-value threshold of `check_invertible`.
        log_det_method: ``"auto"``, ``"cholesky"`` (fast) or ``"qr"`` (robust).
    """

    event_ndims = 3
    full_precision = True  # solvers/FFTs have no half-precision kernels
    _odd_kernel: bool = False
    _frequency_name: str = "frequency"

    def __init__(
        self,
        kernel_size: int = 3,
        dilation: int = 1,
        use_bias: bool = False,
        init_scale: float = 0.01,
        seed: int = 0,
        singular_tolerance: float = 1e-5,
        log_det_method: str = "auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.kernel_size = int(kernel_size)
        self.dilation = int(dilation)
        self.use_bias = bool(use_bias)
        self.init_scale = float(init_scale)
        self.seed = int(seed)
        self.singular_tolerance = float(singular_tolerance)
        self.log_det_method = str(log_det_method)
        self._validate_hyperparameters()

    def _validate_hyperparameters(self) -> None:
        name = type(self).__name__
        if self.kernel_size < 1 or (self._odd_kernel and self.kernel_size % 2 == 0):
            need = "an odd kernel_size >= 1" if self._odd_kernel else "kernel_size >= 1"
            raise ValueError(f"{name} needs {need}, got {self.kernel_size}")
        if self.dilation < 1:
            raise ValueError(f"{name} needs dilation >= 1, got {self.dilation}")
        if not 0.0 <= self.singular_tolerance < 1.0:
            raise ValueError(f"{name} needs 0 <= singular_tolerance < 1, got {self.singular_tolerance}")
        if self.log_det_method not in fourier.LOG_DET_METHODS:
            raise ValueError(
                f"{name} log_det_method must be one of {fourier.LOG_DET_METHODS}, got {self.log_det_method!r}"
            )

    def _spatial_checks(self, input_shape) -> tuple[int, int, int]:
        """Validates the event shape against the kernel."""
        height, width, channels = self.input_event_shape
        name = f"{type(self).__name__} '{self.name}'"
        if height is None or width is None or channels is None:
            raise ValueError(f"{name} needs a static event shape (H, W, C), got {tuple(input_shape)}")
        span = fourier.effective_kernel_size(self.kernel_size, self.dilation)
        if span > height or span > width:
            raise ValueError(
                f"{name} needs H and W >= the effective kernel size {span} "
                f"(kernel_size={self.kernel_size}, dilation={self.dilation}), got (H, W) = "
                f"({height}, {width})"
            )
        return int(height), int(width), int(channels)

    def build(self, input_shape):
        _, _, channels = self._spatial_checks(input_shape)
        self._build_kernel(channels)
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros")
        super().build(input_shape)

    # ------------------------------------------------------------------ subclass hooks
    def _build_kernel(self, channels: int) -> None:
        """Creates the kernel weight(s) for ``channels`` channels."""
        raise NotImplementedError

    def singular_values(self) -> tf.Tensor:
        """Singular values of every frequency block, descending along the last axis."""
        raise NotImplementedError

    def _inverse_blocks_source(self) -> tf.Tensor:
        """The (real) blocks whose matrix inverses `_deconvolve` applies."""
        raise NotImplementedError

    def _log_det_value(self) -> tf.Tensor:
        """``sum log|det block|`` over all frequencies (a scalar)."""
        raise NotImplementedError

    def _convolution(self):
        """The forward convolution (without bias) as a function of ``(B, H, W, C)`` images."""
        raise NotImplementedError

    def _deconvolve(self, images: tf.Tensor, inverse_blocks: tf.Tensor) -> tf.Tensor:
        """Applies the inverse blocks to ``(B, H, W, C)`` images in the frequency domain."""
        raise NotImplementedError

    # ------------------------------------------------------------------ spectrum diagnostics
    def min_singular_value(self) -> tf.Tensor:
        """Smallest singular value over all frequency blocks (0 iff the layer is singular)."""
        return tf.reduce_min(self.singular_values())

    def condition_number(self) -> tf.Tensor:
        """Condition number of the whole convolution: ``max sigma / min sigma`` over all blocks."""
        values = self.singular_values()
        return tf.reduce_max(values) / tf.reduce_min(values)

    def check_invertible(self) -> None:
        """Raises ``ValueError`` (naming the frequency) if some block's smallest singular value is
        at most ``singular_tolerance`` times the largest singular value of the whole spectrum.
        Runs eagerly, also when called while tracing."""
        with tf.init_scope():
            singular_values = np.asarray(self.singular_values())
        smallest = singular_values.min(axis=-1)
        largest = float(singular_values.max())
        worst = np.unravel_index(int(np.argmin(smallest)), smallest.shape)
        ratio = float(smallest[worst]) / largest if largest > 0 else 0.0
        if not ratio > self.singular_tolerance:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' is numerically singular: the "
                f"{self._frequency_name} block at {tuple(int(i) for i in worst)} has smallest "
                f"singular value {float(smallest[worst]):.3e}, {ratio:.3e} times the largest "
                f"({largest:.3e}), not above singular_tolerance={self.singular_tolerance:g}; its "
                f"inverse would be meaningless in {self.compute_dtype}"
            )

    def _singularity_guard(self) -> list:
        """Runs `check_invertible` where it can (eager calls, export tracing: the weights are
        then readable); in other graphs adds an assertion only with ``validate_args``.
        Returns the control dependencies for the inverse."""
        if tf.executing_eagerly() or is_exporting():
            self.check_invertible()
            return []
        if self.validate_args:
            values = self.singular_values()
            ratio = tf.reduce_min(values) / tf.reduce_max(values)
            return [tf.debugging.assert_greater(
                ratio, tf.cast(self.singular_tolerance, ratio.dtype),
                message=f"{type(self).__name__} '{self.name}' is numerically singular",
            )]
        return []

    # ------------------------------------------------------------------ maps
    def _forward_and_log_det(self, x):
        z = _per_image(self._convolution(), x)
        if self.use_bias:
            z = z + self.bias
        return z, batch_log_det(self._log_det_value(), x, self.event_ndims)

    def _inverse_and_log_det(self, z):
        with tf.control_dependencies(self._singularity_guard()):
            inverse_blocks = _parameter_only(lambda: tf.linalg.inv(self._inverse_blocks_source()))
        x = _per_image(lambda images: self._deconvolve(images, inverse_blocks),
                       z - self.bias if self.use_bias else z)
        return x, -batch_log_det(self._log_det_value(), z, self.event_ndims)

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            "dilation": self.dilation,
            "use_bias": self.use_bias,
            "init_scale": self.init_scale,
            "seed": self.seed,
            "singular_tolerance": self.singular_tolerance,
            "log_det_method": self.log_det_method,
        }
