"""A k x k convolution with symmetric (mirror) padding and an even kernel, inverted with the DCT."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfinv.layers.bases.fourier_conv_layer import FourierConvLayer, _parameter_only
from tfinv.ops import fourier


@keras.saving.register_keras_serializable(package="tfinv")
class SymmetricConv(FourierConvLayer):
    """``z = K *_s x (+ b)``: a ``k x k`` ``C -> C`` cross-correlation with half-sample symmetric
    padding (``x[-1] = x[0]``, ``x[-2] = x[1]``, ..., as ``tf.pad(mode="SYMMETRIC")``) and an
    even kernel, ``K[p + a, p + b] = K[p - a, p + b] = K[p + a, p - b]`` (``k = 2p + 1``).

    Why the even kernel: symmetric padding is a circular convolution of the ``2H x 2W`` symmetric
    extension of ``x``, restricted to the original ``H x W``. With an even kernel the extended
    result is again symmetric, so nothing is lost by the restriction, and the 2-D DCT-II
    diagonalises the map (Martucci's rule: DCT-II signal convolved with a DCT-I (even) kernel
    gives a DCT-II signal). A general kernel would not be diagonalised by any fast transform.
    The layer stores the ``(p + 1) x (p + 1)`` quadrant of ``C x C`` taps and mirrors it.

    Inverse: ``DCT(z - b)(k, l) = K(k, l) DCT(x)(k, l)`` with the *real* ``C x C`` blocks
    ``K(k, l) = sum_{i, j} K[i, j]^T cos(pi k s_i / H) cos(pi l s_j / W)`` (tap offsets ``s``),
    so ``x = IDCT(K(k, l)^-1 DCT(z - b))``. The block inverses depend only on the weights (at
    export they are computed once and embedded as constants); the orthonormal DCTs are real
    matmuls.
    Log-det: ``sum_{k, l} log|det K(k, l)|`` over the ``H x W`` frequencies: the orthonormal DCT
    makes the Jacobian block-diagonal with these blocks. Each ``log|det|`` comes from a Cholesky
    factorisation of the block's Gram matrix, or QR when a block is ill-conditioned (see
    ``log_det_method`` in `PeriodicConv`; never ``slogdet``/``det``/``lu``), broadcast to the
    batch since the Jacobian does not depend on ``x``; in ONNX it is a folded constant.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` (more batch axes are fine); log-det ``(B,)``. ``H``
    and ``W`` must be static and at least the effective kernel size ``(k - 1) * dilation + 1``;
    ``k`` must be odd.

    The even kernel has ``(p + 1)^2`` free ``C x C`` taps instead of ``k^2`` (4 instead of 9 at
    ``k = 3``): the price of a real, DCT-diagonal spectrum (real ``C x C`` blocks, where
    `PeriodicConv` needs complex ones, so its log-det and inverse cost about half). Symmetric
    padding, unlike circular, adds no wrap-around artefacts at the image borders.

    Export, timing and singular kernels are handled as in `PeriodicConv`: the forward is a
    mirror-padded (slices and small constant gathers concatenated) ``VALID`` convolution, a
    standard ``Conv`` in ONNX; the inverse uses DCT matmuls in every mode; `check_invertible`
    (run on eager inverses and at export, or as a graph assertion with ``validate_args``) raises
    ``ValueError`` naming the frequency ``(k, l)`` of a numerically singular block.

    Args:
        kernel_size: odd ``k``.
        dilation: spacing between taps.
        use_bias: add a per-channel bias ``b`` after the convolution.
        init_scale: standard deviation of the initial noise on the non-identity quadrant entries
            (the centre tap starts at ``I``).
        seed: seed of that noise.
        singular_tolerance: relative singular-value threshold of `check_invertible`.
        log_det_method: ``"auto"``, ``"cholesky"`` (fast) or ``"qr"`` (robust), as in
            `PeriodicConv`.

    References:
        1. Karami, Schuurmans, Sohl-Dickstein, Dinh & Duckworth, "Invertible Convolutional
           Flow", NeurIPS 2019 (symmetric convolution, inverted with the DCT).
        2. Martucci, "Symmetric convolution and the discrete sine and cosine transforms", IEEE
           Trans. Signal Processing 42(5), 1994.
        3. Hoogeboom, van den Berg & Welling, "Emerging Convolutions for Generative Normalizing
           Flows", arXiv:1901.11137 (the periodic counterpart).
    """

    _odd_kernel = True
    _frequency_name = "DCT frequency (k, l)"

    def _build_kernel(self, channels: int) -> None:
        half = (self.kernel_size - 1) // 2 + 1
        rng = np.random.default_rng(self.seed)
        quadrant = self.init_scale * rng.standard_normal((half, half, channels, channels))
        quadrant[0, 0] += np.eye(channels)
        self.quadrant = self.add_weight(
            name="quadrant", shape=(half, half, channels, channels),
            initializer=keras.initializers.Constant(quadrant),
        )

    # ------------------------------------------------------------------ spectrum (parameters only)
    def kernel(self) -> tf.Tensor:
        """The even ``(k, k, C, C)`` kernel mirrored from the stored quadrant."""
        return fourier.symmetric_kernel(self.quadrant)

    def spectrum(self) -> tf.Tensor:
        """The real blocks ``K(k, l)``, ``(H, W, C, C)``."""
        height, width, _ = self.input_event_shape
        return fourier.symmetric_conv_spectrum(self.kernel(), height, width, self.dilation)

    def _inverse_blocks_source(self) -> tf.Tensor:
        return self.spectrum()

    def _log_det_value(self) -> tf.Tensor:
        return _parameter_only(
            lambda: tf.reduce_sum(fourier.logabsdet(self.spectrum(), self.log_det_method)))

    def singular_values(self) -> tf.Tensor:
        """Singular values of every block ``K(k, l)``, ``(H, W, C)``, descending."""
        return tf.linalg.svd(self.spectrum(), compute_uv=False)

    # ------------------------------------------------------------------ maps
    def _convolution(self):
        kernel = self.kernel()
        return lambda images: fourier.symmetric_conv2d(images, kernel, self.dilation)

    def _deconvolve(self, images, inverse_blocks):
        return fourier.idct2d(fourier.apply_blocks(inverse_blocks, fourier.dct2d(images)))
