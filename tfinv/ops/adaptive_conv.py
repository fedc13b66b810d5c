"""Per-example, per-channel (depthwise) circular convolutions and their Fourier-domain inverse.

The math of `tfinv.layers.DataAdaptiveConv`: every example ``b`` has its own ``k x k`` kernel per
channel ``c``, ``taps[b, t, c]`` at the offsets ``(s_h, s_w)`` of `tfinv.ops.fourier.tap_offsets`
(row-major over the ``k x k`` window, the centre tap unshifted). The map is the circular
cross-correlation

    y[b, h, w, c] = sum_t taps[b, t, c] x[b, (h + s_h) mod H, (w + s_w) mod W, c]

and, channel by channel, it is diagonal in the Fourier basis: ``Y(u, v) = K(u, v) X(u, v)`` with
the *scalar* ``K_bc(u, v) = sum_t taps[b, t, c] exp(+2 pi i (u s_h / H + v s_w / W))`` (the
convention of `tfinv.ops.fourier.conv_spectrum`). Hence

* inverse: ``x = irfft2d(rfft2d(y) / K)``: a complex division per frequency, written with real
  tensors, ``(a + ib) / (c + id) = ((ac + bd) + i(bc - ad)) / (c^2 + d^2)``;
* ``log|det dy/dx| = sum_{u, v} sum_c log|K_bc(u, v)|`` over all ``H x W`` frequencies, from the
  half spectrum (``K(-u, -v) = conj K(u, v)`` for real taps) as ``1/2 log(Re^2 + Im^2)``.

Everything is real matmuls, slices and element-wise ops (the DFTs are `tfinv.ops.fourier`'s
matmul transforms): it compiles under XLA and converts to standard ONNX.

`bounded_taps` gives kernels whose spectrum provably stays away from zero.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfinv.ops import fourier

__all__ = [
    "bounded_taps",
    "complex_divide",
    "depthwise_log_abs_det",
    "depthwise_periodic_conv2d",
    "depthwise_periodic_deconv2d",
    "depthwise_spectrum",
]


def bounded_taps(raw: tf.Tensor, kernel_size: int, bound: float) -> tf.Tensor:
    """Kernels ``delta + p`` with ``sum_t |p_t| < bound``: ``p = bound * raw / (1 + sum_t |raw_t|)``.

    ``raw`` ``(B, k * k, C)`` -> taps ``(B, k * k, C)``; ``delta`` is 1 at the centre tap.
    Guarantee (triangle inequality, any ``raw``): ``|K(u, v) - 1| <= sum_t |p_t| < bound``, so
    ``1 - bound < |K(u, v)| < 1 + bound`` at every frequency, the deconvolution amplifies by at
    most ``1 / (1 - bound)`` and each ``log|K|`` lies in ``(log(1 - bound), log(1 + bound))``.
    ``raw = 0`` gives the identity kernel. A single tap can still take almost all of the budget.
    """
    if not 0.0 < bound < 1.0:
        raise ValueError(f"bounded_taps needs 0 < bound < 1, got {bound}")
    k = int(kernel_size)
    centre = ((k - 1) // 2) * (k + 1)  # the tap at offset (0, 0), row-major
    delta = np.zeros((k * k, 1), np.float64)
    delta[centre] = 1.0
    total = tf.reduce_sum(tf.abs(raw), axis=-2, keepdims=True)
    return tf.constant(delta, raw.dtype) + bound * raw / (1.0 + total)


def depthwise_periodic_conv2d(x: tf.Tensor, taps: tf.Tensor, kernel_size: int) -> tf.Tensor:
    """``y = K_b * x_b`` channel by channel: ``x`` ``(B, H, W, C)``, ``taps`` ``(B, k * k, C)``.

    Wrap-pads ``x`` and sums ``k^2`` shifted slices weighted per example and channel (Slice, Mul
    and Add in ONNX; a per-example kernel is not a standard ``Conv``)."""
    k = int(kernel_size)
    height, width = int(x.shape[1]), int(x.shape[2])
    offsets = fourier.tap_offsets(k)
    before, after = int(-offsets[0]), int(offsets[-1])
    padded = fourier.circular_pad(x, (before, after), (before, after))
    out = None
    for i in range(k):
        for j in range(k):
            weight = taps[:, i * k + j][:, None, None, :]
            term = weight * padded[:, i : i + height, j : j + width, :]
            out = term if out is None else out + term
    return out


def _phases(kernel_size: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``cos``/``sin`` of ``2 pi (u s_h / H + v s_w / W)``, each ``(H * (W // 2 + 1), k * k)``."""
    offsets = fourier.tap_offsets(kernel_size)
    s_h, s_w = (g.ravel() for g in np.meshgrid(offsets, offsets, indexing="ij"))
    cols = width // 2 + 1
    angle = (2.0 * np.pi * np.arange(height)[:, None, None] * s_h[None, None, :] / height
             + 2.0 * np.pi * np.arange(cols)[None, :, None] * s_w[None, None, :] / width)
    return np.cos(angle).reshape(height * cols, -1), np.sin(angle).reshape(height * cols, -1)


def depthwise_spectrum(
    taps: tf.Tensor, kernel_size: int, height: int, width: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """``(Re K, Im K)`` of every example's kernels on the half spectrum, each
    ``(B, H, W // 2 + 1, C)``: one matmul of the taps with constant phase tables per part."""
    cos, sin = _phases(kernel_size, height, width)
    channels = int(taps.shape[-1])
    shape = [-1, height, width // 2 + 1, channels]
    re = tf.matmul(tf.constant(cos, taps.dtype), taps)  # (HV, n) @ (B, n, C) -> (B, HV, C)
    im = tf.matmul(tf.constant(sin, taps.dtype), taps)
    return tf.reshape(re, shape), tf.reshape(im, shape)


def complex_divide(
    a_re: tf.Tensor, a_im: tf.Tensor, b_re: tf.Tensor, b_im: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """``(a_re + i a_im) / (b_re + i b_im)`` with real tensors (no complex dtype reaches ONNX)."""
    norm = b_re * b_re + b_im * b_im
    return (a_re * b_re + a_im * b_im) / norm, (a_im * b_re - a_re * b_im) / norm


def depthwise_log_abs_det(re: tf.Tensor, im: tf.Tensor, width: int) -> tf.Tensor:
    """``sum_{u, v, c} log|K(u, v)|`` per example over the full spectrum, from the half spectrum
    ``(re, im)`` ``(B, H, W // 2 + 1, C)`` (mirrored columns counted twice) -> ``(B,)``."""
    per_frequency = 0.5 * tf.math.log(re * re + im * im)
    weights = fourier.half_spectrum_weights(int(width))[None, None, :, None]
    return tf.reduce_sum(per_frequency * tf.constant(weights, re.dtype), axis=[1, 2, 3])


def depthwise_periodic_deconv2d(
    y: tf.Tensor, re: tf.Tensor, im: tf.Tensor
) -> tf.Tensor:
    """Inverse of `depthwise_periodic_conv2d` given the kernels' half spectrum ``(re, im)``:
    ``x = irfft2d(rfft2d(y) / K)``, ``(B, H, W, C) -> (B, H, W, C)``."""
    y_re, y_im = fourier.rfft2d(y)
    x_re, x_im = complex_divide(y_re, y_im, re, im)
    return fourier.irfft2d(x_re, x_im, int(y.shape[2]))
