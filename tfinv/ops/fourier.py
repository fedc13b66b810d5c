"""Fourier- and cosine-domain math for invertible convolutions, with real tensors only.

Everything here is stateless TensorFlow on channels-last images ``(B, H, W, C)``.

* **Transforms as matmuls.** The 2-D DFT of a real image is two real matrix products per part
  (cos/sin matrices, NumPy constants); the orthonormal 2-D DCT-II is two. These run under XLA and
  convert to plain ONNX ``MatMul`` (tf2onnx converts neither ``RFFT2D``/``IRFFT2D`` nor complex
  tensors). Real and imaginary parts travel as separate tensors; no complex dtype appears.
* **Half spectrum.** A real image's spectrum is conjugate-symmetric, ``X(-u, -v) = conj X(u, v)``,
  so only the columns ``v = 0 .. W // 2`` are kept (as NumPy's ``rfft2``).
* **Kernel spectra.** A ``k x k`` ``C -> C`` kernel acts, at frequency ``(u, v)``, as a ``C x C``
  block ``K(u, v)`` (complex for circular padding, real for symmetric padding); the whole
  convolution is block-diagonal in that basis.
* **Complex blocks.** ``A + iB`` is handled through its real embedding ``[[A, -B], [B, A]]``,
  whose determinant is ``|det(A + iB)|^2`` and whose inverse is the embedding of the inverse.
  ``log|det|`` comes from Cholesky (of the Gram matrix) or QR: never ``slogdet``/``det``/``lu``,
  which XLA and ONNX reject. Inverses (`tf.linalg.inv`) are meant for *parameters only*: at
  export the layers turn them (and log-dets) into constants, so no solver reaches ONNX.

Conventions: ``dft`` is ``X(u) = sum_h x(h) exp(-2 pi i u h / N)`` (NumPy's), the inverse carries
``1/N``; the DCT is orthonormal DCT-II (``scipy.fft.dct(norm="ortho")``). Kernels have TF's
``conv2d`` layout ``(k_h, k_w, C_in, C_out)`` and cross-correlation semantics; blocks are
``(C_out, C_in)`` so that ``out = block @ in``.

References: Hoogeboom, van den Berg & Welling, "Emerging convolutions for generative normalizing
flows", arXiv:1901.11137 (periodic convolutions decoupled per frequency); Karami et al.,
"Invertible Convolutional Flow", NeurIPS 2019 (circular and symmetric convolutions);
Martucci, "Symmetric convolution and the discrete sine and cosine transforms", IEEE Trans.
Signal Processing 42(5), 1994 (DCT-II signal, DCT-I kernel: the convolution-multiplication
property used for symmetric padding).
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

__all__ = [
    "apply_blocks",
    "apply_complex_blocks",
    "auto_takes_qr",
    "circulant_apply",
    "circular_pad",
    "complex_embedding",
    "complex_from_embedding",
    "complex_inverse",
    "complex_logabsdet",
    "conv_log_abs_det",
    "conv_spectrum",
    "conv_spectrum_embedding",
    "dct2d",
    "dct_matrix",
    "dft_matrices",
    "effective_kernel_size",
    "embed_kernel",
    "half_spectrum_weights",
    "idct2d",
    "irdft_matrices",
    "irfft2d",
    "logabsdet",
    "periodic_conv2d",
    "rdft_matrices",
    "rfft2d",
    "symmetric_conv2d",
    "symmetric_conv_spectrum",
    "symmetric_kernel",
    "symmetric_pad",
    "tap_offsets",
]


# --------------------------------------------------------------------------- geometry
def tap_offsets(kernel_size: int, dilation: int = 1) -> np.ndarray:
    """Spatial offsets of a kernel's taps: tap ``i`` reads ``x[h + offsets[i]]``.

    The centre tap (index ``(k - 1) // 2``) has offset 0, as with ``padding="SAME"``.
    """
    k = int(kernel_size)
    return (np.arange(k) - (k - 1) // 2) * int(dilation)


def effective_kernel_size(kernel_size: int, dilation: int = 1) -> int:
    """Span of a dilated kernel: ``(k - 1) * dilation + 1``."""
    return (int(kernel_size) - 1) * int(dilation) + 1


# --------------------------------------------------------------------------- matrices (NumPy)
@functools.lru_cache(maxsize=64)
def dft_matrices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(cos, sin)`` of ``2 pi u h / n``, both ``(n, n)`` float64: ``DFT = cos - i sin``."""
    angle = 2.0 * np.pi * np.outer(np.arange(n), np.arange(n)) / n
    return np.cos(angle), np.sin(angle)


@functools.lru_cache(maxsize=64)
def rdft_matrices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``v = 0 .. n // 2`` of `dft_matrices`: the real-input (half-spectrum) DFT."""
    cos, sin = dft_matrices(n)
    return cos[: n // 2 + 1], sin[: n // 2 + 1]


def half_spectrum_weights(n: int) -> np.ndarray:
    """How often each kept column ``v = 0 .. n // 2`` occurs in the full spectrum.

    Columns ``0`` and (``n`` even) ``n / 2`` are their own mirror images; the others stand for
    ``v`` and ``n - v``.
    """
    weights = np.full(n // 2 + 1, 2.0)
    weights[0] = 1.0
    if n % 2 == 0:
        weights[-1] = 1.0
    return weights


@functools.lru_cache(maxsize=64)
def irdft_matrices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(cos, sin)``, ``(n, n // 2 + 1)``, with ``x = cos @ re - sin @ im`` the inverse of
    `rdft_matrices` for a conjugate-symmetric spectrum (the ``1/n`` and the mirror weights are
    included; the imaginary parts of self-mirrored columns are ignored, as in ``irfft``)."""
    cos, sin = rdft_matrices(n)
    weights = half_spectrum_weights(n)[:, None] / n
    return (cos * weights).T, (sin * weights).T


@functools.lru_cache(maxsize=64)
def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II, ``(n, n)`` float64: ``D[k, j] = s_k cos(pi k (j + 1/2) / n)``.

    ``D`` is orthogonal, so the inverse (DCT-III) is ``D.T``.
    """
    k = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    scale = np.where(k == 0, np.sqrt(1.0 / n), np.sqrt(2.0 / n))
    return scale * np.cos(np.pi * k * (j + 0.5) / n)


def _const(array: np.ndarray, dtype) -> tf.Tensor:
    # Created at trace time from NumPy: embedded as a graph constant (a module-level tf.constant
    # captured by a tf.function would become an extra ONNX input).
    return tf.constant(np.asarray(array), dtype=dtype)


# --------------------------------------------------------------------------- transforms
def _along_height(matrix: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """``matrix @ x`` along axis 1 of ``(B, H, W, C)``: ``(M, H) -> (B, M, W, C)``."""
    height, width, channels = (int(s) for s in x.shape[1:])
    flat = tf.reshape(x, [-1, height, width * channels])  # static event shape: no Shape ops
    out = tf.matmul(matrix, flat)
    return tf.reshape(out, [-1, int(matrix.shape[0]), width, channels])


def _along_width(matrix: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """``matrix @ x`` along axis 2 of ``(B, H, W, C)``: ``(M, W) -> (B, H, M, C)``."""
    return tf.matmul(matrix, x)  # rank-2 @ rank-4 broadcasts over (B, H)


def rfft2d(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Half spectrum of a real image over axes 1, 2: ``(B, H, W, C) -> (re, im)``, each
    ``(B, H, W // 2 + 1, C)``; equals ``numpy.fft.rfft2(x, axes=(1, 2))``."""
    height, width = int(x.shape[1]), int(x.shape[2])
    cos_w, sin_w = rdft_matrices(width)
    cos_h, sin_h = dft_matrices(height)
    t_re = _along_width(_const(cos_w, x.dtype), x)
    t_im = -_along_width(_const(sin_w, x.dtype), x)
    # (cos - i sin)(a + ib) = (cos a + sin b) + i (cos b - sin a), along H.
    ch, sh = _const(cos_h, x.dtype), _const(sin_h, x.dtype)
    re = _along_height(ch, t_re) + _along_height(sh, t_im)
    im = _along_height(ch, t_im) - _along_height(sh, t_re)
    return re, im


def irfft2d(re: tf.Tensor, im: tf.Tensor, width: int) -> tf.Tensor:
    """Inverse of `rfft2d`: ``(re, im)`` of shape ``(B, H, width // 2 + 1, C)`` -> real
    ``(B, H, width, C)``; equals ``numpy.fft.irfft2(re + 1j * im, s=(H, width), axes=(1, 2))``."""
    height = int(re.shape[1])
    cos_h, sin_h = dft_matrices(height)
    ch, sh = _const(cos_h / height, re.dtype), _const(sin_h / height, re.dtype)
    # (cos + i sin)(a + ib) / H = (cos a - sin b) + i (cos b + sin a), along H.
    t_re = _along_height(ch, re) - _along_height(sh, im)
    t_im = _along_height(ch, im) + _along_height(sh, re)
    cos_w, sin_w = irdft_matrices(int(width))
    return _along_width(_const(cos_w, re.dtype), t_re) - _along_width(_const(sin_w, re.dtype), t_im)


def dct2d(x: tf.Tensor) -> tf.Tensor:
    """Orthonormal 2-D DCT-II over axes 1, 2 of ``(B, H, W, C)`` (``scipy.fft.dctn(norm="ortho")``)."""
    x = _along_width(_const(dct_matrix(int(x.shape[2])), x.dtype), x)
    return _along_height(_const(dct_matrix(int(x.shape[1])), x.dtype), x)


def idct2d(x: tf.Tensor) -> tf.Tensor:
    """Inverse of `dct2d` (orthonormal DCT-III: the transposed matrices)."""
    x = _along_width(_const(dct_matrix(int(x.shape[2])).T, x.dtype), x)
    return _along_height(_const(dct_matrix(int(x.shape[1])).T, x.dtype), x)


# --------------------------------------------------------------------------- complex blocks
def complex_embedding(re: tf.Tensor, im: tf.Tensor) -> tf.Tensor:
    """``A + iB`` (``(..., m, n)`` each) -> the real ``(..., 2m, 2n)`` matrix ``[[A, -B], [B, A]]``.

    It maps ``[Re x; Im x]`` to ``[Re(Mx); Im(Mx)]``; products and inverses carry over, and
    ``det([[A, -B], [B, A]]) = |det(A + iB)|^2``.
    """
    top = tf.concat([re, -im], axis=-1)
    bottom = tf.concat([im, re], axis=-1)
    return tf.concat([top, bottom], axis=-2)


def complex_from_embedding(matrix: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Inverse of `complex_embedding`: ``(re, im)`` read from the left block column."""
    m = matrix.shape[-2] // 2
    n = matrix.shape[-1] // 2
    return matrix[..., :m, :n], matrix[..., m:, :n]


#: `logabsdet`'s "auto" method falls back to QR when some Cholesky factor's diagonal spreads by more
#: than this factor (min / max), or is not finite. The spread bounds ``1 / cond(M)`` from above,
#: so "auto" is a safety net against NaN and gross errors, not a precision guarantee. Measured in
#: float32 on PeriodicConv/SymmetricConv spectra at 32x32x16 (error of the summed log-det, nats):
#: spread 1.6e-1 (cond 18): 2e-5; 1.1e-2 (cond 564): 2e-3; 5.5e-3 (cond 1947): 8e-4;
#: 2.9e-3 (cond 5012): 0.29; NaN at cond 4e4. QR stayed within 6e-4 in all of these.
AUTO_PIVOT_RATIO = 3e-3

LOG_DET_METHODS = ("auto", "cholesky", "qr")


def _cholesky_of_gram_diagonal(matrix: tf.Tensor) -> tf.Tensor:
    return tf.linalg.diag_part(tf.linalg.cholesky(tf.matmul(matrix, matrix, transpose_a=True)))


def auto_takes_qr(matrix: tf.Tensor) -> tf.Tensor:
    """Whether ``logabsdet(matrix, "auto")`` recomputes by QR (a boolean scalar tensor)."""
    return _takes_qr(_cholesky_of_gram_diagonal(matrix))


def _takes_qr(diag: tf.Tensor) -> tf.Tensor:
    spread = tf.reduce_min(diag, axis=-1) / tf.reduce_max(diag, axis=-1)
    # NaN compares False: a failed factorisation also takes QR.
    return tf.logical_not(tf.reduce_all(spread > tf.cast(AUTO_PIVOT_RATIO, spread.dtype)))


def logabsdet(matrix: tf.Tensor, method: str = "auto") -> tf.Tensor:
    """``log|det M|`` of square real matrices ``(..., n, n)``, without ``slogdet``/``det``/``lu``.

    ``"qr"``: ``sum log|diag R|`` of ``M = QR``; backward stable, but TF's batched QR is about
    5x slower than Cholesky on CPU. ``"cholesky"``: ``sum log diag L`` with ``L L^T = M^T M``;
    fast, but the Gram matrix squares the condition number (see `AUTO_PIVOT_RATIO`).
    ``"auto"``: Cholesky, and QR for the whole batch (a ``tf.cond``: QR runs only then) if some
    factor is not finite or its diagonal spreads by more than `AUTO_PIVOT_RATIO`.
    """
    if method not in LOG_DET_METHODS:
        raise ValueError(f"logabsdet method must be one of {LOG_DET_METHODS}, got {method!r}")

    def by_qr():
        r = tf.linalg.qr(matrix)[1]
        return tf.reduce_sum(tf.math.log(tf.abs(tf.linalg.diag_part(r))), axis=-1)

    if method == "qr":
        return by_qr()
    diag = _cholesky_of_gram_diagonal(matrix)
    by_cholesky = tf.reduce_sum(tf.math.log(diag), axis=-1)
    if method == "cholesky":
        return by_cholesky
    return tf.cond(_takes_qr(diag), by_qr, lambda: by_cholesky)


def complex_logabsdet(re: tf.Tensor, im: tf.Tensor, method: str = "auto") -> tf.Tensor:
    """``log|det(A + iB)|`` = half of ``log|det [[A, -B], [B, A]]|``."""
    return 0.5 * logabsdet(complex_embedding(re, im), method)


def complex_inverse(re: tf.Tensor, im: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(A + iB)^-1`` through the real embedding; for parameters only (folded at export)."""
    return complex_from_embedding(tf.linalg.inv(complex_embedding(re, im)))


def apply_blocks(blocks: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """Per-frequency matrix-vector products: ``out[b, u, v] = blocks[u, v] @ x[b, u, v]``.

    ``blocks`` ``(U, V, O, I)``, ``x`` ``(B, U, V, I)`` -> ``(B, U, V, O)``: one batched matmul
    over the frequencies (``MatMul`` in ONNX).
    """
    xt = tf.transpose(x, [1, 2, 0, 3])  # (U, V, B, I)
    out = tf.matmul(xt, blocks, transpose_b=True)  # (U, V, B, O)
    return tf.transpose(out, [2, 0, 1, 3])


def apply_complex_blocks(
    embedded_blocks: tf.Tensor, re: tf.Tensor, im: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """`apply_blocks` for complex blocks given as real embeddings ``(U, V, 2O, 2I)`` and a
    complex input ``(re, im)``, each ``(B, U, V, I)``: one real matmul does the complex product."""
    out = apply_blocks(embedded_blocks, tf.concat([re, im], axis=-1))
    o = embedded_blocks.shape[-2] // 2
    return out[..., :o], out[..., o:]


def circulant_apply(x: tf.Tensor, embedded_blocks: tf.Tensor) -> tf.Tensor:
    """The real block-circulant operator with half-spectrum blocks ``E(u, v)`` applied to ``x``:
    ``irfft2d(E(u, v) rfft2d(x)(u, v))``, ``(B, H, W, C_in) -> (B, H, W, C_out)``.

    ``embedded_blocks`` are real embeddings ``(H, W // 2 + 1, 2 C_out, 2 C_in)`` (as from
    `conv_spectrum_embedding`; the blocks of a real operator are conjugate-symmetric).

    A fused `rfft2d` -> per-frequency product -> `irfft2d` with five matmuls instead of twelve
    and no slicing or concatenation of data: real and imaginary parts are stacked on the height
    axis, where the complex DFT along H is one real ``2H x 2H`` matmul (``[[cos, sin], [-sin,
    cos]]`` forward, ``[[cos, -sin], [sin, cos]] / H`` inverse), and on a broadcast axis for the
    half-spectrum transforms along W. Same flops as the unfused form; measured as fast or faster
    in TensorFlow and onnxruntime (2 CPU cores, 16x16 and 32x32 images).
    """
    height, width, channels = (int(s) for s in x.shape[1:])
    cols = width // 2 + 1
    n_out = int(embedded_blocks.shape[-2]) // 2
    dtype = x.dtype
    cos_w, sin_w = rdft_matrices(width)
    cos_h, sin_h = dft_matrices(height)
    # Along W: (2, V, W) @ (B, 1, H, W, C) -> [T_re, T_im] as (B, 2, H, V, C) = (B, 2H, V * C).
    t = tf.matmul(_const(np.stack([cos_w, -sin_w])[None, :, None], dtype), x[:, None])
    t = tf.reshape(t, [-1, 2 * height, cols * channels])
    # Along H: (cos - i sin)(T_re + i T_im), stacked: [Re X; Im X].
    spectrum = tf.matmul(_const(np.block([[cos_h, sin_h], [-sin_h, cos_h]]), dtype), t)
    # Frequencies to the front, [Re, Im] next to the channels: (H, V, B, 2C), then Y = E X.
    spectrum = tf.reshape(spectrum, [-1, 2, height, cols, channels])
    spectrum = tf.reshape(tf.transpose(spectrum, [2, 3, 0, 1, 4]), [height, cols, -1, 2 * channels])
    spectrum = tf.matmul(spectrum, embedded_blocks, transpose_b=True)
    spectrum = tf.reshape(spectrum, [height, cols, -1, 2, n_out])
    spectrum = tf.reshape(tf.transpose(spectrum, [2, 3, 0, 1, 4]), [-1, 2 * height, cols * n_out])
    # Inverse along H: (cos + i sin) / H (Re Y + i Im Y), stacked again.
    rows = tf.matmul(_const(np.block([[cos_h, -sin_h], [sin_h, cos_h]]) / height, dtype), spectrum)
    rows = tf.reshape(rows, [-1, 2, height, cols, n_out])
    # Half-spectrum inverse along W: x = Cw Re - Sw Im (mirror weights and 1/W in Cw, Sw).
    icos_w, isin_w = irdft_matrices(width)
    parts = tf.matmul(_const(np.stack([icos_w, -isin_w])[None, :, None], dtype), rows)
    return tf.reduce_sum(parts, axis=1)


# --------------------------------------------------------------------------- kernel spectra
def embed_kernel(kernel: np.ndarray, height: int, width: int, dilation: int = 1) -> np.ndarray:
    """NumPy reference: the ``(H, W, C_in, C_out)`` image ``e`` with ``e[-s_h, -s_w]`` holding
    the tap at offset ``(s_h, s_w)`` (indices mod ``H``, ``W``; taps that alias are summed).

    Its spectrum ``numpy.fft.fft2(e, axes=(0, 1))`` (transposed to ``(C_out, C_in)``) is
    `conv_spectrum`: cross-correlation is a convolution with the flipped, embedded kernel.
    """
    kernel = np.asarray(kernel)
    kh, kw = kernel.shape[:2]
    out = np.zeros((height, width) + kernel.shape[2:], kernel.dtype)
    for i, sh in enumerate(tap_offsets(kh, dilation)):
        for j, sw in enumerate(tap_offsets(kw, dilation)):
            out[(-sh) % height, (-sw) % width] += kernel[i, j]
    return out


def _tap_grid(kernel_size_h: int, kernel_size_w: int, dilation: int) -> np.ndarray:
    """``(k_h * k_w, 2)`` offsets ``(s_h, s_w)`` of the taps, row-major like the kernel."""
    grid = np.meshgrid(tap_offsets(kernel_size_h, dilation), tap_offsets(kernel_size_w, dilation),
                       indexing="ij")
    return np.stack([g.ravel() for g in grid], axis=1)


def _embedded_spectrum_of_taps(
    taps: tf.Tensor, offsets: np.ndarray, height: int, width: int, half: bool
) -> tf.Tensor:
    """Real embeddings of ``sum_t taps[t]^T exp(2 pi i (u s_t / H + v r_t / W))``.

    ``taps`` ``(n, I, O)`` at ``offsets`` ``(n, 2)`` -> ``(H, V, 2O, 2I)``. One matmul of the
    taps with the per-frequency rotations ``[[cos, -sin], [sin, cos]]`` (the embedding of
    ``exp(i theta)``), one transpose.
    """
    n, n_in, n_out = (int(d) for d in taps.shape)
    cols = width // 2 + 1 if half else width
    angle = (2.0 * np.pi * np.arange(height)[:, None, None] * offsets[None, None, :, 0] / height
             + 2.0 * np.pi * np.arange(cols)[None, :, None] * offsets[None, None, :, 1] / width)
    cos, sin = np.cos(angle), np.sin(angle)  # (H, V, n)
    rotation = np.stack([np.stack([cos, -sin], 2), np.stack([sin, cos], 2)], 2)  # (H, V, 2, 2, n)
    flat = tf.matmul(_const(rotation.reshape(-1, n), taps.dtype), tf.reshape(taps, [n, n_in * n_out]))
    blocks = tf.reshape(flat, [height, cols, 2, 2, n_in, n_out])  # (u, v, r, s, c, o)
    # M[(r, o), (s, c)] = rotation[r, s] * taps[c, o]
    blocks = tf.transpose(blocks, [0, 1, 2, 5, 3, 4])
    return tf.reshape(blocks, [height, cols, 2 * n_out, 2 * n_in])


def conv_spectrum_embedding(
    kernel: tf.Tensor, height: int, width: int, dilation: int = 1, half: bool = True
) -> tf.Tensor:
    """`conv_spectrum` as real embeddings ``[[A, -B], [B, A]]``: ``(H, V, 2 C_out, 2 C_in)``,
    built directly (fewer ops than assembling it from ``(re, im)``): the form the inverse uses."""
    kh, kw, n_in, n_out = (int(d) for d in kernel.shape)
    taps = tf.reshape(kernel, [kh * kw, n_in, n_out])
    return _embedded_spectrum_of_taps(taps, _tap_grid(kh, kw, dilation), height, width, half)


def conv_log_abs_det(
    kernel: tf.Tensor, height: int, width: int, dilation: int = 1, method: str = "auto"
) -> tf.Tensor:
    """``log|det|`` of the whole circular convolution, a scalar: ``sum_{u, v} log|det K(u, v)|``
    over all ``H x W`` frequencies.

    Uses the half spectrum (``K(-u, -v) = conj K(u, v)``, so the other columns are counted twice)
    and ``log|det K| = 1/2 log|det [[A, -B], [B, A]]|`` (`logabsdet`; no ``slogdet``/``det``/``lu``).
    """
    embedded = conv_spectrum_embedding(kernel, height, width, dilation, half=True)
    per_block = 0.5 * logabsdet(embedded, method)  # (H, V)
    return tf.reduce_sum(per_block * _const(half_spectrum_weights(width), per_block.dtype))


def conv_spectrum(
    kernel: tf.Tensor, height: int, width: int, dilation: int = 1, half: bool = True
) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-frequency blocks of the circular cross-correlation ``y = conv2d(x, kernel)``.

    ``K(u, v) = sum_taps kernel[i, j]^T exp(+2 pi i (u s_i / H + v s_j / W))`` (tap offsets
    ``s`` from `tap_offsets`), so that ``Y(u, v) = K(u, v) X(u, v)`` for the DFTs of `rfft2d`.
    Computed from the ``k x k`` taps directly (no ``H x W`` embedding). Returns ``(re, im)``,
    each ``(H, V, C_out, C_in)`` with ``V = W // 2 + 1`` if ``half`` else ``W``.
    """
    return complex_from_embedding(conv_spectrum_embedding(kernel, height, width, dilation, half))


def symmetric_kernel(quadrant: tf.Tensor) -> tf.Tensor:
    """Mirrors a quadrant ``q`` of shape ``(p + 1, p + 1, C_in, C_out)`` into the even
    ``(2p + 1, 2p + 1, C_in, C_out)`` kernel ``k[p + a, p + b] = q[|a|, |b|]``."""
    p = int(quadrant.shape[0]) - 1
    index = np.abs(np.arange(-p, p + 1))
    return tf.gather(tf.gather(quadrant, index, axis=0), index, axis=1)


def symmetric_conv_spectrum(kernel: tf.Tensor, height: int, width: int, dilation: int = 1) -> tf.Tensor:
    """Per-frequency *real* blocks of the convolution with symmetric (half-sample) padding and an
    even kernel: ``K(k, l) = sum_taps kernel[i, j]^T cos(pi k s_i / H) cos(pi l s_j / W)``, so
    that ``dct2d(y)[k, l] = K(k, l) dct2d(x)[k, l]``. Returns ``(H, W, C_out, C_in)``.

    The kernel must be even (``kernel[p + a, p + b] = kernel[p - a, p + b] = kernel[p + a, p - b]``,
    e.g. from `symmetric_kernel`); the symmetric extension of ``x`` to ``2H x 2W`` is then
    circularly convolved with a kernel that keeps the result symmetric, and the DCT-II
    diagonalises the map (Martucci's DCT-II * DCT-I -> DCT-II rule).
    """
    kh, kw = int(kernel.shape[0]), int(kernel.shape[1])
    ch = np.cos(np.pi * np.outer(np.arange(height), tap_offsets(kh, dilation)) / height)
    cw = np.cos(np.pi * np.outer(np.arange(width), tap_offsets(kw, dilation)) / width)
    phase = np.einsum("ui,vj->uvij", ch, cw).reshape(height * width, kh * kw)
    n_in, n_out = int(kernel.shape[2]), int(kernel.shape[3])
    taps = tf.reshape(kernel, [kh * kw, n_in * n_out])
    flat = tf.matmul(_const(phase, kernel.dtype), taps)
    return tf.transpose(tf.reshape(flat, [height, width, n_in, n_out]), [0, 1, 3, 2])


# --------------------------------------------------------------------------- padded convolutions
def _pad_index(n: int, before: int, after: int, mode: str) -> np.ndarray:
    index = np.arange(-before, n + after)
    if mode == "circular":
        return index % n
    # half-sample symmetric: x[-1] = x[0], x[-2] = x[1], x[n] = x[n - 1] (tf.pad "SYMMETRIC")
    if before > n or after > n:
        raise ValueError(f"symmetric padding of {before}/{after} needs a size >= the padding, got {n}")
    index = np.where(index < 0, -1 - index, index)
    return np.where(index >= n, 2 * n - 1 - index, index)


def _take(x: tf.Tensor, index: np.ndarray, axis: int) -> tf.Tensor:
    """``x`` at ``index`` along ``axis``: a slice when the indices are consecutive, else a
    constant ``Gather``."""
    if len(index) and np.all(np.diff(index) == 1):
        begin = [0] * len(x.shape)
        size = [-1] * len(x.shape)
        begin[axis], size[axis] = int(index[0]), len(index)
        return tf.slice(x, begin, size)
    return tf.gather(x, index, axis=axis)


def _pad(x: tf.Tensor, pads: tuple[tuple[int, int], tuple[int, int]], mode: str) -> tf.Tensor:
    # Slices (or small constant gathers) concatenated to the image: plain ONNX, and faster than
    # one gather of the whole padded image. (tf.pad's SYMMETRIC has no ONNX Pad mode, and ONNX's
    # "wrap" needs opset 19.)
    for axis, (before, after) in zip((1, 2), pads):
        if before or after:
            n = int(x.shape[axis])
            index = _pad_index(n, before, after, mode)
            parts = [_take(x, index[:before], axis)] if before else []
            parts.append(x)
            if after:
                parts.append(_take(x, index[before + n :], axis))
            x = tf.concat(parts, axis=axis)
    return x


def _same_pads(kernel_size: int, dilation: int) -> tuple[int, int]:
    offsets = tap_offsets(kernel_size, dilation)
    return int(-offsets[0]), int(offsets[-1])


def circular_pad(x: tf.Tensor, pad_h: tuple[int, int], pad_w: tuple[int, int]) -> tf.Tensor:
    """Wrap-around padding of axes 1 and 2 by ``(before, after)`` pixels (each at most the size)."""
    return _pad(x, (pad_h, pad_w), "circular")


def symmetric_pad(x: tf.Tensor, pad_h: tuple[int, int], pad_w: tuple[int, int]) -> tf.Tensor:
    """Half-sample symmetric padding of axes 1 and 2 (``tf.pad(mode="SYMMETRIC")``)."""
    return _pad(x, (pad_h, pad_w), "symmetric")


def periodic_conv2d(x: tf.Tensor, kernel: tf.Tensor, dilation: int = 1) -> tf.Tensor:
    """Circular cross-correlation of ``(B, H, W, C_in)`` with ``(k, k, C_in, C_out)``: wrap-pad,
    then a ``VALID`` convolution (a standard ``Conv`` in ONNX)."""
    pads = (_same_pads(kernel.shape[0], dilation), _same_pads(kernel.shape[1], dilation))
    padded = circular_pad(x, *pads)
    return tf.nn.conv2d(padded, kernel, strides=1, padding="VALID", dilations=dilation)


def symmetric_conv2d(x: tf.Tensor, kernel: tf.Tensor, dilation: int = 1) -> tf.Tensor:
    """Cross-correlation with half-sample symmetric padding (odd kernel sizes)."""
    pads = (_same_pads(kernel.shape[0], dilation), _same_pads(kernel.shape[1], dilation))
    padded = symmetric_pad(x, *pads)
    return tf.nn.conv2d(padded, kernel, strides=1, padding="VALID", dilations=dilation)
