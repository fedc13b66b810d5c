"""A k x k convolution with circular (periodic) padding, inverted exactly in the Fourier domain."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfinv.layers.bases.fourier_conv_layer import FourierConvLayer, _parameter_only
from tfinv.ops import fourier


@keras.saving.register_keras_serializable(package="tfinv")
class PeriodicConv(FourierConvLayer):
    """``z = K * x (+ b)``: a ``k x k`` ``C -> C`` cross-correlation with circular padding.

    ``z[h, w] = sum_{i, j} K[i, j]^T x[(h + s_i) mod H, (w + s_j) mod W] + b`` with tap offsets
    ``s = (0 .. k-1) - (k - 1) // 2`` times ``dilation`` (the centre tap is unshifted).

    Inverse: in the Fourier domain the map is block-diagonal: ``Z(u, v) = K(u, v) X(u, v)`` with a
    ``C x C`` complex block ``K(u, v) = sum_{i, j} K[i, j]^T exp(2 pi i (u s_i / H + v s_j / W))``
    per frequency, so ``x = IDFT(K(u, v)^-1 DFT(z - b))``. The block inverses depend only on the
    weights (at export they are computed once and embedded as constants); the DFTs are real
    matmuls over the half spectrum.
    Log-det: ``sum_{u, v} log|det K(u, v)|`` over all ``H x W`` frequencies (the Jacobian is the
    same for every ``x``), broadcast to the batch. Each term is half the ``log|det|`` of the real
    ``2C x 2C`` embedding ``[[A, -B], [B, A]]`` of ``K(u, v) = A + iB``; the conjugate symmetry
    ``K(-u, -v) = conj K(u, v)`` halves the work. No ``slogdet``/``det``/``lu`` (XLA and ONNX
    reject them); in ONNX the log-det is a folded constant.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` (more batch axes are fine); log-det ``(B,)``. ``H``
    and ``W`` must be static and at least the effective kernel size ``(k - 1) * dilation + 1``.

    Implementation choices (timings: ``benchmarks/fourier_conv.py``, 2 CPU cores, batch 32):

    * Forward: a wrap-padded (slices concatenated to the image) ``VALID`` convolution, a standard
      ``Conv`` in ONNX. With the log-det it costs about 1.5-3x a plain ``Conv2D`` in TF graph
      mode (the log-det is recomputed from the weights on each call) and about 1.2x in
      onnxruntime.
    * ``log_det_method="auto"`` (default) factors each block's Gram matrix by Cholesky, about 5x
      faster than TF's batched QR on CPU (which is what keeps the forward within 3x of a
      ``Conv2D``), and recomputes everything by QR (``sum log|diag R|``, backward stable) only
      when some block is ill-conditioned (a Cholesky factor whose diagonal spreads beyond
      `tfinv.ops.fourier.AUTO_PIVOT_RATIO`, or NaN; in practice a layer condition number of a few
      thousand), where the Gram matrix's squared condition number would cost accuracy.
      ``"cholesky"`` and ``"qr"`` force one method.
    * Inverse: one code path everywhere (eager, graph, XLA, export): the DFTs are real matmuls
      fused with the per-frequency products (`tfinv.ops.fourier.circulant_apply`, five matmuls).
      tf2onnx converts neither ``RFFT2D``/``IRFFT2D`` nor complex tensors, and at flow image
      sizes the matmul DFT measured within about 30% of ``tf.signal.rfft2d``/``irfft2d`` with a
      complex ``einsum`` (faster at ``C = 16``, slower at ``C = 4``), so a separate FFT path for
      TF was not worth two numerics. `tfinv.core.is_exporting` only turns the parameter-only
      values (block inverses, log-det) into constants and runs the singularity check below.
      The inverse costs about 3-8x a ``Conv2D`` in TF graph mode (the ``2C x 2C`` block inverses
      are recomputed on each call) and 1.2-8x in onnxruntime (the ``O(N^2)`` DFT matmuls).
    * XLA on CPU compiles every op here, but its batched Cholesky/QR/inverse are about 10x slower
      than TF's own kernels (measured): on CPU prefer ``jit_compile=False`` for these layers.
    * Near-singular kernels: circular convolutions are not invertible for every kernel (e.g. a
      ``K(u, v)`` with a zero eigenvalue). The layer starts near the identity (centre tap ``I``
      plus ``init_scale`` Gaussian noise), and maximum-likelihood training keeps it away from
      singularity since ``-log|det|`` grows without bound there. `min_singular_value` and
      `condition_number` report the distance; `check_invertible` raises ``ValueError`` naming
      the frequency when some block's smallest singular value is at most
      ``singular_tolerance`` times the largest singular value of the spectrum. That check runs
      on every eager inverse and when an export traces the inverse (so no meaningless ONNX
      sampling graph is written); inside ``tf.function`` graphs it runs only with
      ``validate_args=True`` (as a graph assertion, which XLA drops). Otherwise a graph inverse
      fails only at an *exactly* singular block (TF's ``MatrixInverse`` raises "Input is not
      invertible"; XLA returns non-finite values). The forward never raises: at an exactly
      singular kernel its log-det is ``-inf`` or NaN.

    Args:
        kernel_size: ``k`` (any ``k >= 1``; an even ``k`` has one more tap after the centre).
        dilation: spacing between taps.
        use_bias: add a per-channel bias ``b`` after the convolution.
        init_scale: standard deviation of the initial noise on the non-identity kernel entries.
        seed: seed of that noise.
        singular_tolerance: relative singular-value threshold of `check_invertible`.
        log_det_method: ``"auto"``, ``"cholesky"`` (fast) or ``"qr"`` (robust); see above.

    Example::

        flow = tfinv.FlowModel([PeriodicConv(3), tfinv.layers.ActNorm()], input_shape=(8, 8, 3))

    References:
        1. Hoogeboom, van den Berg & Welling, "Emerging Convolutions for Generative Normalizing
           Flows", arXiv:1901.11137 (periodic convolutions decoupled per frequency).
        2. Finzi, Izmailov, Maddox, Kirichenko & Wilson, "Invertible Convolutional Networks",
           ICML 2019 Workshop on Invertible Neural Nets and Normalizing Flows.
        3. Karami, Schuurmans, Sohl-Dickstein, Dinh & Duckworth, "Invertible Convolutional
           Flow", NeurIPS 2019.
    """

    _odd_kernel = False
    _frequency_name = "frequency (u, v)"

    def _build_kernel(self, channels: int) -> None:
        k = self.kernel_size
        rng = np.random.default_rng(self.seed)
        kernel = self.init_scale * rng.standard_normal((k, k, channels, channels))
        centre = (k - 1) // 2
        kernel[centre, centre] += np.eye(channels)
        self.kernel = self.add_weight(
            name="kernel", shape=(k, k, channels, channels),
            initializer=keras.initializers.Constant(kernel),
        )

    # ------------------------------------------------------------------ spectrum (parameters only)
    def spectrum(self) -> tuple[tf.Tensor, tf.Tensor]:
        """``(re, im)`` of the blocks ``K(u, v)``, each ``(H, W // 2 + 1, C, C)`` (half spectrum)."""
        return fourier.complex_from_embedding(self._embedded_spectrum())

    def _embedded_spectrum(self) -> tf.Tensor:
        """The blocks as real embeddings ``[[A, -B], [B, A]]``, ``(H, W // 2 + 1, 2C, 2C)``."""
        height, width, _ = self.input_event_shape
        return fourier.conv_spectrum_embedding(self.kernel, height, width, self.dilation, half=True)

    def _inverse_blocks_source(self) -> tf.Tensor:
        return self._embedded_spectrum()

    def _log_det_value(self) -> tf.Tensor:
        height, width, _ = self.input_event_shape
        return _parameter_only(lambda: fourier.conv_log_abs_det(
            self.kernel, height, width, self.dilation, self.log_det_method))

    def singular_values(self) -> tf.Tensor:
        """Singular values of every block ``K(u, v)``, ``(H, W // 2 + 1, C)``, descending."""
        # The real embedding has each singular value of A + iB twice.
        values = tf.linalg.svd(self._embedded_spectrum(), compute_uv=False)
        return values[..., ::2]

    # ------------------------------------------------------------------ maps
    def _convolution(self):
        return lambda images: fourier.periodic_conv2d(images, self.kernel, self.dilation)

    def _deconvolve(self, images, inverse_blocks):
        return fourier.circulant_apply(images, inverse_blocks)
