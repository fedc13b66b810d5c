"""`tfinv.ops.fourier` alone, against NumPy references (numpy.fft, dense linear algebra)."""

import numpy as np
import pytest
import tensorflow as tf

from tfinv.ops import fourier

SHAPES = [(2, 4, 4, 3), (2, 6, 5, 2), (1, 5, 7, 1), (1, 1, 2, 2)]


def _rng(seed=0):
    return np.random.default_rng(seed)


def _max_err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _dense_circular_correlation(x, kernel, dilation=1):
    """``y[h, w] = sum_ij kernel[i, j]^T x[h + s_i, w + s_j]`` (indices mod H, W), with np.roll."""
    y = 0.0
    offsets_h = fourier.tap_offsets(kernel.shape[0], dilation)
    offsets_w = fourier.tap_offsets(kernel.shape[1], dilation)
    for i, sh in enumerate(offsets_h):
        for j, sw in enumerate(offsets_w):
            shifted = np.roll(x, shift=(-sh, -sw), axis=(1, 2))
            y = y + shifted @ kernel[i, j]
    return y


def _dct2_reference(x):
    """Orthonormal DCT-II along axes 1, 2 from the FFT of the symmetric extension (no matrices)."""
    out = np.asarray(x, np.float64)
    for axis in (1, 2):
        n = out.shape[axis]
        extended = np.concatenate([out, np.flip(out, axis)], axis=axis)
        spectrum = np.fft.fft(extended, axis=axis)
        k = np.arange(n).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        dct = 0.5 * np.real(np.take(spectrum, np.arange(n), axis=axis) * np.exp(-1j * np.pi * k / (2 * n)))
        out = dct * np.where(k == 0, np.sqrt(1.0 / n), np.sqrt(2.0 / n))
    return out


# --------------------------------------------------------------------------- transforms
@pytest.mark.parametrize("shape", SHAPES)
def test_rfft2d_matches_numpy(shape):
    x = _rng().standard_normal(shape)
    re, im = fourier.rfft2d(tf.constant(x))
    expected = np.fft.rfft2(x, axes=(1, 2))
    assert re.shape == expected.shape
    assert _max_err(re, expected.real) < 1e-12 and _max_err(im, expected.imag) < 1e-12
    re32, im32 = fourier.rfft2d(tf.constant(x, tf.float32))
    assert re32.dtype == im32.dtype == tf.float32
    scale = max(1.0, np.abs(expected).max())
    assert _max_err(re32, expected.real) < 1e-5 * scale and _max_err(im32, expected.imag) < 1e-5 * scale


@pytest.mark.parametrize("shape", SHAPES)
def test_irfft2d_matches_numpy_and_inverts_rfft2d(shape):
    rng = _rng(1)
    height, width = shape[1:3]
    spectrum = np.fft.rfft2(rng.standard_normal(shape), axes=(1, 2))
    # Arbitrary (not conjugate-symmetric) half spectra are read as irfft2 reads them.
    spectrum = spectrum + 0.3 * (rng.standard_normal(spectrum.shape) + 1j * rng.standard_normal(spectrum.shape))
    expected = np.fft.irfft2(spectrum, s=(height, width), axes=(1, 2))
    got = fourier.irfft2d(tf.constant(spectrum.real), tf.constant(spectrum.imag), width)
    assert _max_err(got, expected) < 1e-12
    x = rng.standard_normal(shape).astype(np.float32)
    assert _max_err(fourier.irfft2d(*fourier.rfft2d(tf.constant(x)), width), x) < 1e-5


@pytest.mark.parametrize("shape", SHAPES)
def test_dct2d_is_the_orthonormal_dct_ii_and_idct2d_inverts_it(shape):
    x = _rng(2).standard_normal(shape)
    got = fourier.dct2d(tf.constant(x))
    assert _max_err(got, _dct2_reference(x)) < 1e-12
    assert _max_err(fourier.idct2d(got), x) < 1e-12
    for n in (1, 4, 5):
        d = fourier.dct_matrix(n)
        assert _max_err(d @ d.T, np.eye(n)) < 1e-12


def test_half_spectrum_weights_count_every_frequency_once():
    for n in range(1, 9):
        weights = fourier.half_spectrum_weights(n)
        assert weights.shape == (n // 2 + 1,) and weights.sum() == n


# --------------------------------------------------------------------------- complex blocks
def _complex_blocks(shape, seed=3):
    rng = _rng(seed)
    n = shape[-1]
    return rng.standard_normal(shape) + np.eye(n) * 2, rng.standard_normal(shape)


def test_complex_embedding_determinant_product_and_round_trip():
    a, b = _complex_blocks((5, 3, 3))
    m = np.asarray(fourier.complex_embedding(tf.constant(a), tf.constant(b)))
    z = a + 1j * b
    np.testing.assert_allclose(np.linalg.det(m), np.abs(np.linalg.det(z)) ** 2, rtol=1e-10)
    v = _rng(4).standard_normal((5, 3)) + 1j * _rng(5).standard_normal((5, 3))
    mv = np.einsum("fij,fj->fi", m, np.concatenate([v.real, v.imag], -1))
    zv = np.einsum("fij,fj->fi", z, v)
    assert _max_err(mv, np.concatenate([zv.real, zv.imag], -1)) < 1e-12
    re, im = fourier.complex_from_embedding(tf.constant(m))
    assert _max_err(re, a) == 0 and _max_err(im, b) == 0


@pytest.mark.parametrize("method", ["qr", "cholesky", "auto"])
def test_logabsdet_matches_slogdet(method):
    rng = _rng(6)
    m = rng.standard_normal((7, 6, 6)) + 3 * np.eye(6)
    m[0] *= -1  # a negative determinant: only |det| matters
    expected = np.linalg.slogdet(m)[1]
    assert _max_err(fourier.logabsdet(tf.constant(m), method), expected) < 1e-10
    got32 = fourier.logabsdet(tf.constant(m, tf.float32), method)
    assert _max_err(got32, expected) < 1e-4
    a, b = _complex_blocks((4, 3, 3))
    expected_c = np.linalg.slogdet(a + 1j * b)[1]
    got_c = fourier.complex_logabsdet(tf.constant(a), tf.constant(b), method)
    assert _max_err(got_c, expected_c) < 1e-10


def test_logabsdet_rejects_unknown_method():
    with pytest.raises(ValueError, match=r"method must be one of \('auto', 'cholesky', 'qr'\), got 'lu'"):
        fourier.logabsdet(tf.eye(2), "lu")


def test_auto_logabsdet_falls_back_to_qr_on_ill_conditioned_blocks():
    """float32 Cholesky of a Gram matrix loses ~cond^2 * eps and fails (NaN) near cond 1e4+;
    "auto" then recomputes by QR. Below that it stays Cholesky, within 1e-4 relative here."""
    rng = _rng(18)
    n = 16
    u = np.linalg.qr(rng.standard_normal((8, n, n)))[0]
    v = np.linalg.qr(rng.standard_normal((8, n, n)))[0]
    for cond, falls_back in ((1e3, False), (1e5, True)):
        m = u @ (np.geomspace(1.0, 1.0 / cond, n)[:, None] * v)
        m[1:] = np.eye(n) + 0.1 * rng.standard_normal((7, n, n))  # one bad block among good ones
        expected = np.linalg.slogdet(m)[1]
        m32 = tf.constant(m, tf.float32)
        auto = np.asarray(fourier.logabsdet(m32, "auto"))
        assert np.all(np.abs(auto - expected) < 1e-4 * np.maximum(1.0, np.abs(expected)))
        cholesky = np.asarray(fourier.logabsdet(m32, "cholesky"))
        assert np.isnan(cholesky[0]) == falls_back
        qr = np.asarray(fourier.logabsdet(m32, "qr"))
        assert np.array_equal(auto, qr if falls_back else cholesky)
        assert bool(fourier.auto_takes_qr(m32)) == falls_back
        jitted = np.asarray(tf.function(lambda t: fourier.logabsdet(t, "auto"), jit_compile=True)(m32))
        assert np.all(np.abs(jitted - expected) < 2e-4 * np.maximum(1.0, np.abs(expected)))


def test_complex_inverse_and_block_products():
    a, b = _complex_blocks((2, 3, 4, 4))
    re, im = fourier.complex_inverse(tf.constant(a), tf.constant(b))
    expected = np.linalg.inv(a + 1j * b)
    assert _max_err(re, expected.real) < 1e-12 and _max_err(im, expected.imag) < 1e-12

    rng = _rng(7)
    x = rng.standard_normal((5, 2, 3, 4)) + 1j * rng.standard_normal((5, 2, 3, 4))
    got = fourier.apply_blocks(tf.constant(a), tf.constant(x.real))
    assert _max_err(got, np.einsum("uvoi,buvi->buvo", a, x.real)) < 1e-12
    out_re, out_im = fourier.apply_complex_blocks(
        fourier.complex_embedding(tf.constant(a), tf.constant(b)), tf.constant(x.real), tf.constant(x.imag)
    )
    expected = np.einsum("uvoi,buvi->buvo", a + 1j * b, x)
    assert _max_err(out_re, expected.real) < 1e-12 and _max_err(out_im, expected.imag) < 1e-12


# --------------------------------------------------------------------------- kernel spectra
@pytest.mark.parametrize(
    "height, width, kernel_size, dilation",
    [(4, 4, 3, 1), (6, 5, 3, 1), (6, 5, 3, 2), (5, 7, 2, 1), (3, 3, 3, 1), (4, 6, 4, 1), (2, 2, 3, 1)],
)
def test_conv_spectrum_is_the_fft_of_the_embedded_kernel(height, width, kernel_size, dilation):
    """The k x k taps zero-embedded (and wrapped) in H x W, then numpy.fft.fft2. The last case
    has a kernel larger than the image: its taps alias and the spectrum still matches."""
    kernel = _rng(8).standard_normal((kernel_size, kernel_size, 3, 2))
    embedded = fourier.embed_kernel(kernel, height, width, dilation)
    expected = np.fft.fft2(embedded, axes=(0, 1)).transpose(0, 1, 3, 2)  # (H, W, O, I)
    re, im = fourier.conv_spectrum(tf.constant(kernel), height, width, dilation, half=False)
    assert re.shape == (height, width, 2, 3)
    assert _max_err(re, expected.real) < 1e-12 and _max_err(im, expected.imag) < 1e-12
    re_half, im_half = fourier.conv_spectrum(tf.constant(kernel), height, width, dilation)
    assert _max_err(re_half, expected.real[:, : width // 2 + 1]) < 1e-12
    assert _max_err(im_half, expected.imag[:, : width // 2 + 1]) < 1e-12
    emb = fourier.conv_spectrum_embedding(tf.constant(kernel), height, width, dilation)
    assert _max_err(emb, fourier.complex_embedding(re_half, im_half)) == 0


@pytest.mark.parametrize("shape, kernel_size, dilation", [((2, 4, 4, 3), 3, 1), ((2, 6, 5, 2), 3, 2),
                                                          ((1, 5, 7, 2), 2, 1)])
def test_periodic_conv2d_is_circular_correlation_and_diagonal_in_fourier(shape, kernel_size, dilation):
    rng = _rng(9)
    c = shape[-1]
    x = rng.standard_normal(shape)
    kernel = rng.standard_normal((kernel_size, kernel_size, c, c))
    y = np.asarray(fourier.periodic_conv2d(tf.constant(x), tf.constant(kernel), dilation))
    assert _max_err(y, _dense_circular_correlation(x, kernel, dilation)) < 1e-12
    # Convolution theorem: Y(u, v) = K(u, v) X(u, v) on the half spectrum.
    re, im = fourier.conv_spectrum(tf.constant(kernel), shape[1], shape[2], dilation)
    k_hat = np.asarray(re) + 1j * np.asarray(im)
    y_hat = np.einsum("uvoi,buvi->buvo", k_hat, np.fft.rfft2(x, axes=(1, 2)))
    assert _max_err(np.fft.rfft2(y, axes=(1, 2)), y_hat) < 1e-11


def test_padding_matches_numpy_pad_modes():
    x = _rng(10).standard_normal((2, 5, 4, 3))
    for pads in [((1, 1), (1, 1)), ((2, 1), (0, 3)), ((0, 0), (2, 2)), ((4, 5), (4, 4))]:
        np_pads = ((0, 0),) + pads + ((0, 0),)
        assert _max_err(fourier.circular_pad(tf.constant(x), *pads), np.pad(x, np_pads, mode="wrap")) == 0
        assert _max_err(fourier.symmetric_pad(tf.constant(x), *pads), np.pad(x, np_pads, mode="symmetric")) == 0
    with pytest.raises(ValueError, match="symmetric padding of 6/0 needs a size >= the padding, got 5"):
        fourier.symmetric_pad(tf.constant(x), (6, 0), (0, 0))


def test_symmetric_kernel_is_even():
    quadrant = tf.constant(_rng(11).standard_normal((3, 3, 2, 2)))
    kernel = np.asarray(fourier.symmetric_kernel(quadrant))
    assert kernel.shape == (5, 5, 2, 2)
    assert _max_err(kernel, kernel[::-1]) == 0 and _max_err(kernel, kernel[:, ::-1]) == 0
    assert _max_err(kernel[2:, 2:], quadrant) == 0


@pytest.mark.parametrize("shape, kernel_size, dilation", [((2, 4, 4, 3), 3, 1), ((2, 6, 5, 2), 3, 2),
                                                          ((1, 7, 5, 2), 5, 1), ((1, 3, 3, 2), 1, 1)])
def test_symmetric_conv_is_diagonal_in_the_dct_basis(shape, kernel_size, dilation):
    """Mirror padding + even kernel: dct2d(y)[k, l] = K(k, l) dct2d(x)[k, l] with real blocks."""
    rng = _rng(12)
    c = shape[-1]
    x = rng.standard_normal(shape)
    quadrant = rng.standard_normal((kernel_size // 2 + 1, kernel_size // 2 + 1, c, c))
    kernel = fourier.symmetric_kernel(tf.constant(quadrant))
    y = np.asarray(fourier.symmetric_conv2d(tf.constant(x), kernel, dilation))
    p = (kernel_size // 2) * dilation
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="symmetric")
    reference = tf.nn.conv2d(padded, kernel, strides=1, padding="VALID", dilations=dilation)
    assert _max_err(y, reference) < 1e-12
    blocks = np.asarray(fourier.symmetric_conv_spectrum(kernel, shape[1], shape[2], dilation))
    assert blocks.shape == (shape[1], shape[2], c, c)
    expected = np.einsum("uvoi,buvi->buvo", blocks, _dct2_reference(x))
    assert _max_err(_dct2_reference(y), expected) < 1e-11


def test_a_general_kernel_is_not_diagonalised_by_the_dct():
    """Why SymmetricConv mirrors its kernel: without evenness the DCT relation fails."""
    rng = _rng(13)
    x = rng.standard_normal((1, 5, 5, 1))
    kernel = rng.standard_normal((3, 3, 1, 1))
    y = np.asarray(fourier.symmetric_conv2d(tf.constant(x), tf.constant(kernel)))
    blocks = np.asarray(fourier.symmetric_conv_spectrum(tf.constant(kernel), 5, 5))
    mismatch = _max_err(_dct2_reference(y), np.einsum("uvoi,buvi->buvo", blocks, _dct2_reference(x)))
    assert mismatch > 1e-2


# --------------------------------------------------------------------------- XLA
def test_transforms_and_log_det_compile_under_xla():
    x = tf.constant(_rng(14).standard_normal((2, 6, 5, 2)), tf.float32)
    kernel = tf.constant(_rng(15).standard_normal((3, 3, 2, 2)) * 0.1 + np.eye(2) * (np.arange(9) == 4).reshape(3, 3, 1, 1),
                         tf.float32)

    def fn(x, kernel):
        emb = fourier.conv_spectrum_embedding(kernel, 6, 5)
        re, im = fourier.rfft2d(x)
        re, im = fourier.apply_complex_blocks(tf.linalg.inv(emb), re, im)
        x_back = fourier.irfft2d(re, im, 5)
        return x_back, fourier.logabsdet(emb), fourier.logabsdet(emb, "qr"), fourier.idct2d(fourier.dct2d(x))

    eager = fn(x, kernel)
    jitted = tf.function(fn, jit_compile=True)(x, kernel)
    for a, b in zip(eager, jitted):
        assert _max_err(a, b) < 1e-5
    assert _max_err(eager[1], eager[2]) < 1e-5


@pytest.mark.parametrize("shape", [(2, 4, 4, 3), (2, 6, 5, 2), (1, 5, 7, 2), (3, 2, 1, 2)])
def test_circulant_apply_is_the_unfused_fourier_product(shape):
    """The fused form equals irfft2d(K rfft2d(x)) and, for a kernel's spectrum, the convolution."""
    rng = _rng(16)
    c = shape[-1]
    k = 3 if min(shape[1:3]) >= 3 else 1
    kernel = rng.standard_normal((k, k, c, c + 1))  # C_in != C_out is allowed
    x = tf.constant(rng.standard_normal(shape))
    blocks = fourier.conv_spectrum_embedding(tf.constant(kernel), shape[1], shape[2])
    got = fourier.circulant_apply(x, blocks)
    assert got.shape == shape[:3] + (c + 1,)
    assert _max_err(got, fourier.periodic_conv2d(x, tf.constant(kernel))) < 1e-12
    re, im = fourier.apply_complex_blocks(blocks, *fourier.rfft2d(x))
    assert _max_err(got, fourier.irfft2d(re, im, shape[2])) < 1e-12


@pytest.mark.parametrize("method", ["cholesky", "qr", "auto"])
@pytest.mark.parametrize("height, width, kernel_size, dilation", [(4, 4, 3, 1), (6, 5, 3, 2), (5, 7, 2, 1)])
def test_conv_log_abs_det_sums_every_frequency(height, width, kernel_size, dilation, method):
    kernel = _rng(17).standard_normal((kernel_size, kernel_size, 3, 3)) * 0.3
    kernel[(kernel_size - 1) // 2, (kernel_size - 1) // 2] += np.eye(3)
    full = np.fft.fft2(fourier.embed_kernel(kernel, height, width, dilation), axes=(0, 1))
    expected = np.linalg.slogdet(full.transpose(0, 1, 3, 2))[1].sum()
    got = fourier.conv_log_abs_det(tf.constant(kernel), height, width, dilation, method)
    assert abs(float(got) - expected) < 1e-10
    got32 = fourier.conv_log_abs_det(tf.constant(kernel, tf.float32), height, width, dilation, method)
    assert abs(float(got32) - expected) < 1e-4 * max(1.0, abs(expected))
