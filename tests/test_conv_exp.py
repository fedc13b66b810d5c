"""The convolution exponential (`tfinv.ops.conv_exp`, `ConvExp`) and the convolutional Sylvester
flow (`ConvSylvester`): the math against dense matrices (scipy's expm), the spectral-norm
reparameterisation, bad inputs, and Glow with ``linear="conv_exp"`` (the contract harness runs on
their cases in tfinv.testing.cases, from tests/test_contract.py)."""

import keras
import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf
from tfinv.export.onnx import prepare
from tfinv.export.testing import check_onnx

from tfinv.blocks.glow_step import LINEAR_LAYERS
from tfinv.layers.bases.conv_exp_layer import NORM_MARGIN
from tfinv.layers.conv_exp import ConvExp
from tfinv.layers.conv_sylvester import ConvSylvester, autoregressive_mask
from tfinv.models import Glow
from tfinv.ops import conv_exp as ops
from tfinv.testing import contract
from tfinv.testing.cases import Case


def dense(linear_map, shape):
    """The ``n x n`` matrix (acting on raster-flattened ``(H, W, C)`` images) of ``linear_map``."""
    n = int(np.prod(shape))
    basis = np.eye(n).reshape((n,) + tuple(shape))
    return np.asarray(linear_map(tf.constant(basis))).reshape(n, n).T


def random_kernel(k, c, scale, seed=0):
    return scale * np.random.default_rng(seed).standard_normal((k, k, c, c))


# ----------------------------------------------------------------------------- ops vs dense
@pytest.mark.parametrize("k,shape", [(3, (4, 5, 2)), (5, (5, 5, 1)), (1, (2, 3, 3))])
def test_conv_exp_matches_expm_of_the_dense_convolution(k, shape):
    kernel = tf.constant(random_kernel(k, shape[-1], 0.3))
    matrix = dense(lambda t: ops.conv(t, kernel), shape)
    x = np.random.default_rng(1).standard_normal((2,) + shape)
    flat = x.reshape(2, -1).T
    for sign in (1.0, -1.0):
        expected = (scipy.linalg.expm(sign * matrix) @ flat).T.reshape(x.shape)
        series = ops.conv_exp(tf.constant(x), sign * kernel, terms=20)
        assert contract.relative_error(series, expected) < 1e-12
        stopped = ops.conv_exp_until(tf.constant(x), sign * kernel, tolerance=1e-14)
        assert contract.relative_error(stopped, expected) < 1e-12
    # The adjoint and the trace formula.
    adjoint = dense(lambda t: ops.conv_transpose(t, kernel), shape)
    np.testing.assert_allclose(adjoint, matrix.T, atol=1e-14)
    np.testing.assert_allclose(float(ops.conv_trace(kernel, *shape[:2])), np.trace(matrix), rtol=1e-12)


def test_required_terms_reach_float32_round_off():
    assert [ops.required_terms(b) for b in (0.25, 0.5, 1.0, 2.0)] == [6, 8, 10, 14]
    for b in (0.1, 0.5, 1.0, 3.0):
        k = ops.required_terms(b)
        assert ops.remainder_bound(b, k) <= 2.0**-24 < ops.remainder_bound(b, k - 1)
    # The remainder bound really bounds the series error (dense, worst-case direction included).
    kernel = random_kernel(3, 2, 1.0, seed=3)
    matrix = dense(lambda t: ops.conv(t, tf.constant(kernel)), (4, 4, 2))
    b = np.linalg.norm(matrix, 2)
    exact = scipy.linalg.expm(matrix)
    for terms in (3, 6, 9):
        partial = dense(lambda t, n=terms: ops.conv_exp(t, tf.constant(kernel), n), (4, 4, 2))
        assert np.linalg.norm(partial - exact, 2) <= ops.remainder_bound(b, terms)


@pytest.mark.parametrize("cls", [ConvExp, ConvSylvester])
def test_spectral_bound_holds_on_large_kernels(cls):
    layer = cls(spectral_bound=0.5, seed=2)
    layer.build((1, 5, 4, 3))
    layer.kernel.assign(random_kernel(3, 3, 2.0, seed=5))  # ||M|| ~ 10 before rescaling
    shape = (5, 4, 3)
    raw = np.linalg.norm(dense(lambda t: ops.conv(t, tf.cast(layer.kernel, t.dtype)), shape), 2)
    kernel = np.asarray(layer.effective_kernel(), np.float64)
    norm = np.linalg.norm(dense(lambda t: ops.conv(t, kernel), shape), 2)
    assert raw > 4.0
    assert abs(float(layer.spectral_norm()) - 0.5) < 1e-5
    # Power iteration approaches from below; the terms are chosen with a margin for that.
    assert 0.5 - 1e-5 <= norm <= 0.5 * NORM_MARGIN, norm
    assert norm <= 0.5 * 1.1, norm  # measured: within a few percent after 10 iterations


def test_conv_exp_layer_is_expm_of_its_effective_kernel_and_log_det_is_slogdet():
    layer, x = Case("c", lambda: ConvExp(seed=4), (2, 5, 4, 3), perturb=0.3).build()
    kernel = np.asarray(layer.effective_kernel(), np.float64)
    matrix = dense(lambda t: ops.conv(t, kernel), (5, 4, 3))
    expm = scipy.linalg.expm(matrix)
    expected = (expm @ np.asarray(x, np.float64).reshape(2, -1).T).T.reshape(x.shape)
    z, log_det = layer.forward_and_log_det(x)
    assert contract.relative_error(z, expected) < 1e-6
    _, logabs = np.linalg.slogdet(expm)
    np.testing.assert_allclose(np.asarray(log_det), [logabs, logabs], rtol=1e-5, atol=1e-6)
    assert abs(logabs) > 0.1  # not volume preserving


# ----------------------------------------------------------------------------- Sylvester specifics
def test_sylvester_inner_map_is_strictly_autoregressive_and_nonlinear():
    mask = autoregressive_mask(3, 3)
    kernel = mask * random_kernel(3, 3, 1.0, seed=1)
    jacobian = dense(lambda t: ops.conv(t, tf.constant(kernel)), (4, 3, 3))
    assert np.allclose(np.triu(jacobian), 0.0)  # raster order (h, w, c): strictly lower
    assert np.count_nonzero(np.tril(jacobian, -1)) > 0
    layer, x = Case("s", lambda: ConvSylvester(seed=3), (3, 4, 4, 2), perturb=0.5).build()
    log_det = np.asarray(layer.forward_and_log_det(x)[1])
    assert np.ptp(log_det) > 1e-4  # differs per example: the Jacobian depends on x


def test_sylvester_fixed_point_converges_for_strong_contraction():
    """rho = 0.9 needs ceil(log 2^-24 / log 0.9) = 158 iterations by default."""
    layer, x = Case("s", lambda: ConvSylvester(contraction=0.9, seed=4), (2, 4, 4, 2), perturb=1.0).build()
    assert layer.fixed_point_iterations == 158
    layer.gate.assign(3.0 * np.ones(2, np.float32))  # tanh(3) ~ 1: Lipschitz ~ 0.9
    masked, alpha, gamma, _ = (np.asarray(t) for t in layer._inner(tf.float32))
    row_sums = np.abs(gamma) * (np.abs(alpha) + np.abs(masked).sum(axis=(0, 1, 2)))
    assert np.all(row_sums <= 0.9 + 1e-6) and np.all(row_sums > 0.85), row_sums
    contract.check_round_trip(layer, x, 1e-5)


def test_sylvester_inverse_exports_unrolled_without_loops():
    layer, x = Case("s", lambda: ConvSylvester(seed=1), (2, 4, 4, 2), perturb=0.5).build()
    _, info = prepare(layer, "inverse", test_input=np.asarray(layer.forward(x)))
    ops_used = set(info.op_types)
    assert "Conv" in ops_used and "Tanh" in ops_used, ops_used
    assert not ops_used & {"Loop", "If", "Log1p"}, ops_used


# ----------------------------------------------------------------------------- bad inputs
def test_bad_arguments_and_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="odd kernel_size"):
        ConvExp(kernel_size=2)
    with pytest.raises(ValueError, match="spectral_bound > 0"):
        ConvExp(spectral_bound=0.0)
    with pytest.raises(ValueError, match="0 < contraction < 1"):
        ConvSylvester(contraction=1.0)
    with pytest.raises(ValueError, match=r"spatial size >= kernel_size 3 x 3, got \(H, W\) = \(2, 4\)"):
        ConvExp().build((1, 2, 4, 2))
    with pytest.raises(ValueError, match=r"spatial size >= kernel_size 5 x 5"):
        ConvSylvester(kernel_size=5).build((1, 4, 4, 2))
    layer = ConvExp(seed=0)
    layer.build((1, 4, 4, 2))
    with pytest.raises(ValueError, match=r"expects event shape \(4, 4, 2\), got \(4, 4, 3\)"):
        layer.forward(tf.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"expects event shape \(4, 4, 2\), got \(4, 4, 3\)"):
        layer.inverse(tf.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match="rank"):
        layer.forward(tf.zeros((4, 4, 2)))
    fitted = ConvExp(fit_kernel_to_image=True)
    fitted.build((1, 2, 4, 2))
    assert tuple(fitted.kernel.shape) == (1, 1, 2, 2)


# ----------------------------------------------------------------------------- Glow
def test_glow_with_conv_exp_round_trips_trains_and_exports():
    assert "conv_exp" in LINEAR_LAYERS
    case = Case("Glow-conv_exp",
                lambda: Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=8,
                             linear="conv_exp", num_levels=None),
                (2, 8, 8, 1), perturb=0.05)
    model, x = case.build()
    contract.check_round_trip(model, x, 1e-5)
    data = np.random.default_rng(0).standard_normal((16, 8, 8, 1)).astype(np.float32)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    losses = model.fit(tf.data.Dataset.from_tensor_slices(data).batch(8), epochs=3, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    contract.check_round_trip(model, x, 1e-5)
    errors = check_onnx(model, x, tolerance=1e-4)
    assert max(errors.values()) <= 1e-4, errors
