"""ECO: an explicitly orthogonal k x k convolution (circular padding, taps dilated by H/k)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.layers.bases.fourier_conv_layer import _per_image
from tfinv.ops import eco

SPECTRA = ("complex", "real")


@keras.saving.register_keras_serializable(package="tfinv")
class ECOConv(InvertibleLayer):
    """``z[h, w] = sum_{s, t} K[s, t]^T x[(h + s H/k) mod H, (w + t W/k) mod W]``: a ``k x k``
    ``C -> C`` cross-correlation, circular padding, taps dilated by ``H/k`` and ``W/k``, whose
    kernel ``K`` is the ``k x k`` inverse DFT of ``k^2`` unitary ``C x C`` blocks (see
    `tfinv.ops.eco`): the map is exactly orthogonal.

    Under circular padding the 2-D DFT block-diagonalises the map and, since every tap moves by a
    multiple of ``H/k`` (``W/k``), the ``C x C`` block at frequency ``(u, v)`` is the kernel's
    ``k x k`` DFT at ``(u mod k, v mod k)``: unitary blocks make the whole ``HWC x HWC`` matrix
    orthogonal, for any weights. The blocks are Cayley transforms (or ``method="exp"``: a fixed
    Taylor series with squaring) of skew-symmetric/skew-Hermitian parameters, with
    ``B(-u, -v) = conj B(u, v)`` so that ``K`` is real. With zero padding the same kernel is
    **not** orthogonal (the dilated taps fall outside the image); this layer always pads
    circularly, so its map is the orthogonal one.

    Inverse: the adjoint (transposed) convolution, the same correlation with
    ``K'[s, t] = K[-s mod k, -t mod k]^T``: ``x = K' * z``. Both directions are one ``Conv`` of a
    wrap-padded image (standard ONNX); the kernel depends on the weights only.
    Log-det: 0 (orthogonal), with the batch shape.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``k | H`` and ``k | W`` (``kh x kw`` kernels
    for ``H != W`` with ``fit_kernel_to_image``); log-det ``(B,)``.

    Where this differs from the paper and its reference code: (1) the blocks are exactly
    orthogonal (Cayley transform computed in float64, or a fixed series for ``"exp"``), where the
    reference truncates the exponential's series after 5 (training) or 10 (evaluation) terms of a
    skew matrix normalised by a power-iteration estimate of its spectral norm, so its kernels are
    orthogonal only approximately; (2) ``spectrum="complex"`` (default) parameterises every
    orthogonal dilated circular ``k x k`` convolution reached by the Cayley map (one unitary block
    per conjugate pair of frequencies), while the reference uses real orthogonal blocks (a real,
    even spectrum: a point-symmetric kernel), available as ``spectrum="real"``; (3) images whose
    size is not a multiple of ``k`` are refused (or ``fit_kernel_to_image`` picks the largest
    divisor), where the reference pads them; (4) no stride or channel-changing variant.

    Args:
        kernel_size: ``k``: taps per axis, ``k | H`` and ``k | W``. ``k = H = W`` gives every
            orthogonal circular convolution of the image (dilation 1).
        spectrum: ``"complex"`` (general unitary blocks) or ``"real"`` (the reference's form).
        method: ``"cayley"`` (exact for every weight) or ``"exp"`` (the paper's exponential, a
            12-term series after 4 squarings: truncation error below ``1/12!`` while the skew
            parameters' norm stays under 16).
        init_scale: standard deviation of the initial (seeded) Gaussian parameters; 0 starts at
            the identity map.
        seed: seed of that initialisation.
        fit_kernel_to_image: use the largest divisor of ``H`` (``W``) not above ``k`` per axis
            instead of raising when ``k`` does not divide the image size.

    Example::

        flow = tfinv.FlowModel([ECOConv(3), tfinv.layers.ActNorm()], input_shape=(6, 6, 4))

    References: Yu, Li, Cai & Li, "Constructing Orthogonal Convolutions in an Explicit Manner",
    ICLR 2022 (openreview Zr5W2LSRhD; reference code in its supplementary material).
    """

    event_ndims = 3
    full_precision = True  # the Cayley solve has no half-precision kernel

    def __init__(self, kernel_size: int = 3, spectrum: str = "complex", method: str = "cayley",
                 init_scale: float = 0.5, seed: int = 0, fit_kernel_to_image: bool = False, **kwargs):
        super().__init__(**kwargs)
        if int(kernel_size) < 1:
            raise ValueError(f"ECOConv needs kernel_size >= 1, got {kernel_size}")
        if spectrum not in SPECTRA:
            raise ValueError(f"ECOConv spectrum must be one of {SPECTRA}, got {spectrum!r}")
        if method not in ("cayley", "exp"):
            raise ValueError(f"ECOConv method must be 'cayley' or 'exp', got {method!r}")
        self.kernel_size = int(kernel_size)
        self.spectrum = spectrum
        self.method = method
        self.init_scale = float(init_scale)
        self.seed = int(seed)
        self.fit_kernel_to_image = bool(fit_kernel_to_image)

    def build(self, input_shape):
        height, width, channels = self.input_event_shape
        if height is None or width is None or channels is None:
            raise ValueError(f"ECOConv needs a static (H, W, C), got {(height, width, channels)}")
        k = self.kernel_size
        if self.fit_kernel_to_image:
            self.kernel_shape = (eco.largest_divisor_at_most(height, k), eco.largest_divisor_at_most(width, k))
        elif height % k or width % k:
            raise ValueError(f"ECOConv '{self.name}' needs H and W divisible by kernel_size {k} (its taps "
                             f"are dilated by H/k, W/k), got (H, W) = ({height}, {width})")
        else:
            self.kernel_shape = (k, k)
        real, pairs = eco.frequency_pairs(*self.kernel_shape)
        rng = np.random.default_rng(self.seed)
        per_pair = 2 if self.spectrum == "complex" else 1
        self.real_blocks = self.add_weight(
            name="real_blocks", shape=(len(real), channels, channels),
            initializer=keras.initializers.Constant(
                self.init_scale * rng.standard_normal((len(real), channels, channels))))
        self.pair_blocks = None  # a 1 x 1 or 2 x 2 grid has only self-conjugate frequencies
        if pairs:
            self.pair_blocks = self.add_weight(
                name="pair_blocks", shape=(len(pairs), per_pair, channels, channels),
                initializer=keras.initializers.Constant(
                    self.init_scale * rng.standard_normal((len(pairs), per_pair, channels, channels))))
        super().build(input_shape)

    def kernel(self) -> tf.Tensor:
        """The ``(kh, kw, C, C)`` kernel (weights only; computed in float64: the Cayley solve's
        rounding is what keeps ``K`` orthogonal to ~1e-16 before the cast)."""
        channels = self.real_blocks.shape[-1]
        pairs = (tf.zeros((0, 1, channels, channels), tf.float64) if self.pair_blocks is None
                 else tf.cast(self.pair_blocks, tf.float64))
        k = eco.eco_kernel(tf.cast(self.real_blocks, tf.float64), pairs, *self.kernel_shape, method=self.method)
        return tf.cast(k, self.real_blocks.dtype)

    def _forward_and_log_det(self, x):
        kernel = tf.cast(self.kernel(), x.dtype)
        z = _per_image(lambda images: eco.dilated_circular_conv2d(images, kernel), x)
        return z, batch_log_det(0.0, x, self.event_ndims)

    def _inverse_and_log_det(self, z):
        kernel = tf.cast(eco.adjoint_kernel(self.kernel()), z.dtype)
        x = _per_image(lambda images: eco.dilated_circular_conv2d(images, kernel), z)
        return x, batch_log_det(0.0, z, self.event_ndims)

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "spectrum": self.spectrum,
                "method": self.method, "init_scale": self.init_scale, "seed": self.seed,
                "fit_kernel_to_image": self.fit_kernel_to_image}
