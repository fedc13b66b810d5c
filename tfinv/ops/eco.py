"""Explicitly orthogonal convolutions (ECO): a kernel built from unitary frequency blocks.

A ``C -> C`` cross-correlation with a ``kh x kw`` kernel whose taps are dilated by
``dh = H / kh`` and ``dw = W / kw``, on an ``H x W`` image with circular (wrap-around) padding,

    z[h, w] = sum_{s < kh, t < kw} K[s, t]^T x[(h + s dh) mod H, (w + t dw) mod W],

is block-diagonalised by the 2-D DFT, and because each tap moves a pixel by a multiple of
``H / kh`` (``W / kw``), the block at frequency ``(u, v)`` depends only on ``(u mod kh, v mod kw)``:

    B(u, v) = sum_{s, t} K[s, t]^T exp(2 pi i (u s / kh + v t / kw)).

So the whole ``HWC x HWC`` map is orthogonal iff the ``kh kw`` blocks ``B(u, v)`` are unitary,
and a real kernel needs ``B(-u, -v) = conj B(u, v)``. Conversely any such blocks give the kernel
by a ``kh x kw`` inverse DFT:

    K[s, t]^T = (1 / (kh kw)) sum_{u, v} (Re B(u, v) cos theta + Im B(u, v) sin theta),
    theta = 2 pi (u s / kh + v t / kw).

This module builds the blocks from free parameters with real arithmetic only: a self-conjugate
frequency (``2u = 0 mod kh`` and ``2v = 0 mod kw``) gets a real orthogonal block, every other
conjugate pair one unitary block ``U`` (its partner ``conj U``), ``U`` the Cayley transform of a
skew-Hermitian ``X + iY`` computed on its real ``2C x 2C`` embedding ``[[X, -Y], [Y, X]]`` (the
embedding commutes with products and inverses, so the result is the embedding of a unitary).
No complex tensor and no FFT reach the graph (ONNX accepts neither); the Cayley solve acts on
parameters only (an exporter folds it into a constant).

The inverse of the layer's map is its adjoint, the correlation with the kernel
``K'[s, t] = K[-s mod kh, -t mod kw]^T``.

References: Yu, Li, Cai & Li, "Constructing Orthogonal Convolutions in an Explicit Manner",
ICLR 2022 (openreview Zr5W2LSRhD); Sedghi, Gupta & Long, "The Singular Values of Convolutional
Layers", arXiv:1805.10408 (the block-diagonalisation of circular convolutions).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfinv.ops import orthogonal
from tfinv.ops.fourier import circular_pad

__all__ = ["frequency_pairs", "unitary_blocks", "kernel_from_blocks", "eco_kernel", "adjoint_kernel",
           "dilated_circular_conv2d", "block_spectrum", "largest_divisor_at_most"]


def largest_divisor_at_most(n: int, k: int) -> int:
    """The largest divisor of ``n`` that is at most ``k`` (``>= 1``)."""
    return max(d for d in range(1, min(n, k) + 1) if n % d == 0)


def frequency_pairs(kh: int, kw: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """``(self_conjugate, representatives)`` of the ``kh x kw`` frequency grid, row-major:
    the frequencies equal to their own negatives, and one frequency of every other pair
    ``{(u, v), (-u, -v)}`` (the first in row-major order)."""
    real, pairs = [], []
    for u in range(kh):
        for v in range(kw):
            partner = ((-u) % kh, (-v) % kw)
            if partner == (u, v):
                real.append((u, v))
            elif (u, v) < partner:
                pairs.append((u, v))
    return real, pairs


def _assembly(kh: int, kw: int) -> tuple[np.ndarray, np.ndarray]:
    """For every grid frequency (row-major): the index of its block in ``[real..., pairs...]``
    and the sign of its imaginary part (``-1`` for a pair's partner)."""
    real, pairs = frequency_pairs(kh, kw)
    source = np.zeros(kh * kw, np.int64)
    sign = np.ones(kh * kw)
    for i, (u, v) in enumerate(real):
        source[u * kw + v] = i
    for j, (u, v) in enumerate(pairs):
        source[u * kw + v] = len(real) + j
        pu, pv = (-u) % kh, (-v) % kw
        source[pu * kw + pv] = len(real) + j
        sign[pu * kw + pv] = -1.0
    return source, sign


def unitary_blocks(real_raw: tf.Tensor, pair_raw: tf.Tensor, kh: int, kw: int,
                   method: str = "cayley") -> tuple[tf.Tensor, tf.Tensor]:
    """``(re, im)`` of the ``kh kw`` unitary blocks, each ``(kh, kw, C, C)``, from free parameters.

    Args:
        real_raw: ``(n_real, C, C)``: one orthogonal block per self-conjugate frequency
            (`tfinv.ops.orthogonal.orthogonal_matrix` of it under ``method``).
        pair_raw: ``(n_pairs, 2, C, C)``: a unitary block per conjugate pair, the real part
            parameterising ``X = skew(raw[0])`` and the imaginary part ``Y = sym(raw[1])``; or
            ``(n_pairs, 1, C, C)``: a real orthogonal block per pair (ECO's reference form,
            a real and even spectrum, i.e. a point-symmetric kernel).
        method: ``"cayley"`` or ``"exp"`` (`tfinv.ops.orthogonal.orthogonal_matrix`).
    """
    if method not in ("cayley", "exp"):
        raise ValueError(f"ECO blocks need method 'cayley' or 'exp', got {method!r}")
    channels = real_raw.shape[-1]
    real_q = orthogonal.orthogonal_matrix(real_raw, method)
    blocks_re = [real_q]
    blocks_im = [tf.zeros_like(real_q)]
    if pair_raw.shape[0]:
        if pair_raw.shape[1] == 1:
            q = orthogonal.orthogonal_matrix(pair_raw[:, 0], method)
            blocks_re.append(q)
            blocks_im.append(tf.zeros_like(q))
        else:
            x = orthogonal.skew_symmetric(pair_raw[:, 0])
            y = 0.5 * (pair_raw[:, 1] + tf.linalg.matrix_transpose(pair_raw[:, 1]))
            embedded = tf.concat([tf.concat([x, -y], axis=-1), tf.concat([y, x], axis=-1)], axis=-2)
            q = orthogonal.orthogonal_matrix(embedded, method)  # the embedding of a unitary
            blocks_re.append(q[:, :channels, :channels])
            blocks_im.append(q[:, channels:, :channels])
    stacked_re = tf.concat(blocks_re, axis=0)
    stacked_im = tf.concat(blocks_im, axis=0)
    source, sign = _assembly(kh, kw)
    re = tf.gather(stacked_re, source)
    im = tf.gather(stacked_im, source) * tf.constant(sign, stacked_im.dtype)[:, None, None]
    shape = [kh, kw, channels, channels]
    return tf.reshape(re, shape), tf.reshape(im, shape)


def _phases(kh: int, kw: int) -> np.ndarray:
    """``theta[u, v, s, t] = 2 pi (u s / kh + v t / kw)``."""
    u = np.arange(kh)[:, None, None, None]
    v = np.arange(kw)[None, :, None, None]
    s = np.arange(kh)[None, None, :, None]
    t = np.arange(kw)[None, None, None, :]
    return 2.0 * np.pi * (u * s / kh + v * t / kw)


def kernel_from_blocks(re: tf.Tensor, im: tf.Tensor) -> tf.Tensor:
    """The real ``(kh, kw, C_in, C_out)`` kernel whose dilated circular correlation has the
    frequency blocks ``re + i im`` (``(kh, kw, C_out, C_in)`` each, conjugate-symmetric): the
    ``kh x kw`` inverse DFT written as two real contractions."""
    kh, kw = re.shape[0], re.shape[1]
    theta = _phases(kh, kw)
    cos = tf.constant(np.cos(theta) / (kh * kw), re.dtype)
    sin = tf.constant(np.sin(theta) / (kh * kw), re.dtype)
    # K[s, t]^T = sum_uv re cos + im sin; the einsum writes K[s, t] (in, out) directly
    return tf.einsum("uvst,uvoi->stio", cos, re) + tf.einsum("uvst,uvoi->stio", sin, im)


def block_spectrum(kernel: np.ndarray) -> np.ndarray:
    """The complex blocks ``B(u, v)`` (``(kh, kw, C_out, C_in)``) of a ``(kh, kw, C_in, C_out)``
    kernel (numpy; for checks and fitting, never on a graph)."""
    kh, kw = kernel.shape[:2]
    phase = np.exp(1j * _phases(kh, kw))  # (u, v, s, t)
    return np.einsum("uvst,stio->uvoi", phase, np.asarray(kernel, np.float64))


def eco_kernel(real_raw: tf.Tensor, pair_raw: tf.Tensor, kh: int, kw: int, method: str = "cayley") -> tf.Tensor:
    """`kernel_from_blocks` of `unitary_blocks`: the kernel of an exactly orthogonal dilated
    circular convolution, ``(kh, kw, C, C)``."""
    return kernel_from_blocks(*unitary_blocks(real_raw, pair_raw, kh, kw, method))


def adjoint_kernel(kernel: tf.Tensor) -> tf.Tensor:
    """``K'[s, t] = K[-s mod kh, -t mod kw]^T``: the kernel of the adjoint (transposed) map."""
    kh, kw = kernel.shape[0], kernel.shape[1]
    flipped = tf.gather(tf.gather(kernel, (-np.arange(kh)) % kh, axis=0), (-np.arange(kw)) % kw, axis=1)
    return tf.transpose(flipped, [0, 1, 3, 2])


def dilated_circular_conv2d(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """``z[h, w] = sum_{s, t} K[s, t]^T x[(h + s H / kh) mod H, (w + t W / kw) mod W]`` for
    ``(B, H, W, C)`` and a ``(kh, kw, C, C')`` kernel, ``kh | H`` and ``kw | W``.

    With ``h = b dh + a`` (``dh = H / kh``, ``a < dh``) a tap moves ``b`` by ``s`` modulo ``kh``
    and keeps the phase ``a``: the map is a plain (undilated) circular ``kh x kw`` correlation of
    each of the ``dh dw`` phase sub-images of size ``kh x kw``. So: reshape the phases into the
    batch, wrap-pad by ``kh - 1``, ``kw - 1``, one ``VALID`` ``Conv``, reshape back. (TF's CPU
    kernels refuse the gradient of a dilated convolution with respect to its input, and this
    form is plain reshapes, transposes and one convolution in ONNX.)
    """
    height, width, channels = int(x.shape[-3]), int(x.shape[-2]), int(x.shape[-1])
    kh, kw = int(kernel.shape[0]), int(kernel.shape[1])
    if height % kh or width % kw:
        raise ValueError(f"a dilated circular convolution needs kernel sizes dividing (H, W) = "
                         f"({height}, {width}), got ({kh}, {kw})")
    dh, dw = height // kh, width // kw
    out = int(kernel.shape[-1])
    phases = tf.reshape(x, [-1, kh, dh, kw, dw, channels])
    phases = tf.reshape(tf.transpose(phases, [0, 2, 4, 1, 3, 5]), [-1, kh, kw, channels])
    padded = circular_pad(phases, (0, kh - 1), (0, kw - 1))
    z = tf.nn.conv2d(padded, kernel, strides=1, padding="VALID")
    z = tf.transpose(tf.reshape(z, [-1, dh, dw, kh, kw, out]), [0, 3, 1, 4, 2, 5])
    return tf.reshape(z, [-1, height, width, out])
