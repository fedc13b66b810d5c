"""Masked (triangular) convolutions: the ops against dense numpy matrices, the two solve
schedules, the custom (adjoint-solve) gradient against autodiff, and EmergingConv, CInCConv,
CInCChainConv and InverseConv beyond the contract harness (their cases run in tests/test_contract.py),
including Glow with each as its linear layer."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from tfinv.export.onnx import prepare
from tfinv.export.testing import check_onnx

from tfinv.blocks.glow_step import LINEAR_LAYERS
from tfinv.layers.c_in_c_conv import CInCConv
from tfinv.layers.emerging_conv import EmergingConv
from tfinv.layers.raster_emerging_conv import RasterEmergingConv
from tfinv.layers.c_in_c_chain_conv import CInCChainConv
from tfinv.layers.inverse_conv import InverseConv
from tfinv.models import Glow
from tfinv.ops import triangular_conv as tc
from tfinv.testing import contract
from tfinv.testing.cases import Case, cases


def _problem(k, anchor, c=3, h=5, w=4, seed=0):
    rng = np.random.default_rng(seed)
    raw = 0.3 * rng.standard_normal((k, k, c, c)).astype(np.float32)
    diag = (rng.choice([-1.0, 1.0], c) * np.exp(0.3 * rng.standard_normal(c))).astype(np.float32)
    kernel = tc.masked_kernel(raw, anchor, diagonal=diag)
    x = rng.standard_normal((2, h, w, c)).astype(np.float32)
    return np.asarray(kernel), diag, x


def _dense(kernel, anchor, h, w):
    """The (H W C) x (H W C) matrix of the masked correlation, raster order, by numpy loops."""
    kh, kw, c, _ = kernel.shape
    ah, aw = tc.anchor_of(kernel.shape, anchor)
    a = np.zeros((h * w * c, h * w * c))
    for i in range(h):
        for j in range(w):
            for p in range(kh):
                for q in range(kw):
                    ii, jj = i + p - ah, j + q - aw
                    if 0 <= ii < h and 0 <= jj < w:
                        row, col = (i * w + j) * c, (ii * w + jj) * c
                        a[row:row + c, col:col + c] += kernel[p, q].T  # [out, in]
    return a


SETTINGS = [(3, "center"), (3, "corner"), (2, "corner"), (5, "center"), (1, "center")]


@pytest.mark.parametrize("k,anchor", SETTINGS)
def test_masked_conv_is_the_dense_triangular_map(k, anchor):
    kernel, diag, x = _problem(k, anchor, h=5, w=5)
    a = _dense(kernel, anchor, 5, 5)
    assert np.allclose(np.triu(a, 1), 0.0), "not lower-triangular in raster/channel order"
    assert np.allclose(np.diag(a), np.tile(diag, 25))
    y = np.asarray(tc.masked_conv(x, kernel, anchor))
    expected = (x.reshape(2, -1).astype(np.float64) @ a.T).reshape(y.shape)
    assert contract.relative_error(y, expected) < 1e-5
    sign, logabs = np.linalg.slogdet(a)
    assert sign != 0
    assert abs(float(tc.log_det(diag, 5, 5)) - logabs) / max(abs(logabs), 1) < 1e-5
    for order in tc.ORDERS:
        x_solved = tc.solve(y, kernel, anchor, order)
        expected = np.linalg.solve(a, y.reshape(2, -1).T.astype(np.float64)).T.reshape(y.shape)
        assert contract.relative_error(x_solved, expected) < 1e-5, order


def test_masked_kernel_ignores_masked_entries_and_sets_the_diagonal():
    raw = np.random.default_rng(1).standard_normal((3, 3, 4, 4)).astype(np.float32)
    m = tc.masked_kernel(raw, "center", diagonal=np.full(4, 2.0, np.float32)).numpy()
    assert np.all(m[2] == 0) and np.all(m[1, 2] == 0)  # rows below, pixel to the right
    assert np.allclose(np.tril(m[1, 1], -1), 0) and np.allclose(np.diag(m[1, 1]), 2.0)
    assert np.allclose(m[0], raw[0]) and np.allclose(m[1, 0], raw[1, 0])


def test_wavefront_slope_and_step_counts():
    assert tc.wavefront_slope(3, 3, (2, 2)) == 1  # corner: anti-diagonals i + j = t
    assert tc.wavefront_slope(3, 3, (1, 1)) == 2  # raster 3x3 reaches (i-1, j+1): 2i + j = t
    assert tc.wavefront_slope(5, 5, (2, 2)) == 3
    front = tc._schedule(8, 8, 3, 3, (2, 2), "wavefront")[0]
    assert front.shape[0] == 8 + 8 - 1
    assert tc._schedule(8, 8, 3, 3, (2, 2), "sequential")[0].shape[0] == 64


@pytest.mark.parametrize("c", [1, 2, 5, 8])
def test_centre_inverse_is_exact(c):
    rng = np.random.default_rng(c)
    m = np.triu(rng.standard_normal((c, c))) + np.diag(rng.choice([-2.0, 2.0], c))
    inv = tc.centre_inverse(tf.constant(m)).numpy()
    assert np.allclose(inv, np.linalg.inv(m), atol=1e-10)


@pytest.mark.parametrize("k,anchor", [(3, "center"), (3, "corner")])
def test_sequential_equals_wavefront_in_jit(k, anchor):
    kernel, _, x = _problem(k, anchor, c=2, h=6, w=7, seed=3)
    seq = tf.function(lambda y: tc.solve(y, kernel, anchor, "sequential"), jit_compile=True)(x)
    wave = tf.function(lambda y: tc.solve(y, kernel, anchor, "wavefront"), jit_compile=True)(x)
    rows = tf.function(lambda y: tc.solve(y, kernel, anchor, "rows"), jit_compile=True)(x)
    assert contract.relative_error(wave, seq) < 1e-6
    assert contract.relative_error(rows, seq) < 1e-6


@pytest.mark.parametrize("k,anchor,c,w", [(3, "corner", 3, 9), (5, "center", 2, 7), (2, "corner", 4, 3),
                                          (3, "center", 20, 16)])
def test_row_inverse_is_the_inverse_of_the_in_row_map(k, anchor, c, w):
    """``T^-1`` from companion-matrix powers against numpy's inverse of the dense in-row map
    (the last setting has ``W C = 320``: the unfused row step, with a ``conv2d`` for the rows above)."""
    kernel, _, _ = _problem(k, anchor, c=c, h=k, w=w, seed=5)
    ah, aw = tc.anchor_of(kernel.shape, anchor)
    t = np.zeros((w * c, w * c))
    for j in range(w):
        for b in range(aw + 1):
            if 0 <= j + b - aw:
                t[(j + b - aw) * c:(j + b - aw + 1) * c, j * c:(j + 1) * c] = kernel[ah, b]
    inv = tc.row_inverse(tf.constant(kernel, tf.float64), (ah, aw), w).numpy()
    assert contract.relative_error(inv, np.linalg.inv(t)) < 1e-10
    y = RNG.standard_normal((2, k + 1, w, c)).astype(np.float32)
    expected = tc.solve(y, kernel, anchor, "sequential")
    assert contract.relative_error(tc.solve(y, kernel, anchor, "rows"), expected) < 1e-5


@pytest.mark.parametrize("k,anchor", [(3, "center"), (3, "corner")])
def test_custom_gradient_matches_autodiff_of_the_sequential_reference(k, anchor):
    kernel, diag, y = _problem(k, anchor, c=3, h=5, w=4, seed=7)
    raw = tf.Variable(kernel)
    weights = tf.constant(np.random.default_rng(3).standard_normal(y.shape).astype(np.float32))
    y = tf.constant(y)

    def grads(order, custom):
        with tf.GradientTape() as tape:
            tape.watch(y)
            k_masked = tc.masked_kernel(raw, anchor, diagonal=diag)
            loss = tf.reduce_sum(weights * tc.solve(y, k_masked, anchor, order, custom) ** 2)
        return tape.gradient(loss, [y, raw])

    gy_ref, gk_ref = grads("sequential", False)
    for order in ("wavefront", "rows"):
        gy, gk = grads(order, True)
        assert contract.relative_error(gy, gy_ref) < 1e-5, order
        assert contract.relative_error(gk, gk_ref) < 1e-5, order
    assert np.abs(gk_ref.numpy()).max() > 1e-3  # a real gradient, not two zeros


# ----------------------------------------------------------------------------- layers
#: This module's layers' cases in the contract registry (tests/test_contract.py runs the harness).
LAYER_CASES = {c.name: c for c in cases() if c.name.startswith(("EmergingConv", "RasterEmergingConv", "CInCConv", "CInCChainConv", "InverseConv"))}


def test_finc_four_corners_round_trip_and_log_det():
    layer, x = Case("CInCChainConv-4", lambda: CInCChainConv(corners=4, seed=3), (2, 4, 4, 2)).build()
    contract.check_round_trip(layer, x, 1e-5)
    contract.check_log_det(layer, x, 1e-4)


def test_log_det_has_batch_shape():
    layer, x = LAYER_CASES["EmergingConv"].build()
    assert layer.forward_and_log_det(x)[1].shape == (2,)


@pytest.mark.parametrize("order", ["rows", "wavefront"])
def test_inverse_conv_samples_without_a_loop(order):
    case = LAYER_CASES["InverseConv-5x4x3"]
    layer, x = Case(case.name, lambda: InverseConv(seed=4, order=order), case.input_shape).build()
    _, forward = prepare(layer, "forward", test_input=x.numpy())
    z = layer.forward_and_log_det(x)[0].numpy()
    _, inverse = prepare(layer, "inverse", test_input=z)
    # the solve: a Loop for the wavefront, unrolled row matmuls (no Loop) for "rows"
    assert ("Loop" in forward.op_types) == (order == "wavefront"), forward.op_types
    assert order == "wavefront" or "MatMul" in forward.op_types, forward.op_types
    assert "Loop" not in inverse.op_types and "Conv" in inverse.op_types, inverse.op_types


def test_cinc_kernel_cannot_become_singular():
    case = Case("CInC", lambda: CInCConv(seed=2), (2, 4, 4, 2))
    layer, x = case.build()
    kernel, log_scale, _ = layer._raw[0]
    # the raw entries the characterisation forbids (and the raw diagonal) have no effect
    before = layer.forward_and_log_det(x)[0].numpy()
    k = kernel.numpy()
    k[2, 2] = np.triu(k[2, 2], 1) + np.tril(np.random.default_rng(4).standard_normal((2, 2)))  # c >= o entries
    kernel.assign(k)
    assert np.array_equal(layer.forward_and_log_det(x)[0].numpy(), before)
    # aggressive training steps, and extreme log-scales: the anchor diagonal stays nonzero
    model_x = tf.constant(10.0 * x.numpy())
    contract.check_fit_step(layer, model_x, learning_rate=1.0)
    log_scale.assign([-20.0, 15.0])
    diag = np.diag(layer.kernels()[0].numpy()[2, 2])
    assert np.all(diag != 0) and np.all(np.isfinite(layer.forward_and_log_det(x)[1]))
    log_scale.assign([0.3, -0.2])
    # still invertible; the unit-sized off-diagonal taps one Adam step at lr=1 leaves behind make
    # the substitution less well conditioned than at init (measured ~1.4e-4), hence 1e-3
    contract.check_round_trip(layer, x, 1e-3)


@pytest.mark.parametrize("make", [EmergingConv, RasterEmergingConv, CInCConv, CInCChainConv, InverseConv])
def test_bad_shapes_raise(make):
    layer = make()
    with pytest.raises(ValueError, match="kernel_size"):
        layer.build((1, 1, 4, 2))  # EmergingConv's 2 x 2 squares fit H = 2
    layer = make()
    layer.build((1, 4, 4, 2))
    with pytest.raises(ValueError, match="event shape"):
        layer.forward_and_log_det(tf.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match="kernel_size"):
        make(kernel_size=0)


def test_ops_raise_on_small_images_and_channel_mismatch():
    kernel = tc.masked_kernel(np.ones((3, 3, 2, 2), np.float32), "corner", np.ones(2, np.float32))
    with pytest.raises(ValueError, match="H >= 3"):
        tc.masked_conv(tf.zeros((1, 2, 5, 2)), kernel, "corner")
    with pytest.raises(ValueError, match="channels"):
        tc.solve(tf.zeros((1, 4, 4, 3)), kernel, "corner")


@pytest.mark.parametrize("name", ["emerging", "raster_emerging", "cinc", "finc", "cinc_chain", "inverse_conv", "inverse_flow"])
def test_glow_with_triangular_linear(name):
    assert name in LINEAR_LAYERS
    case = Case(f"Glow-{name}",
                lambda: Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=8,
                             linear=name, num_levels=None), (2, 8, 8, 1), perturb=0.05)
    model, x = case.build()
    contract.check_round_trip(model, x, 1e-5)
    errors = check_onnx(model, x, tolerance=1e-4)
    assert max(errors.values()) <= 1e-4, errors


def test_glow_with_emerging_trains():
    model = Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=8, linear="emerging",
                 num_levels=None)
    data = np.random.default_rng(0).standard_normal((16, 8, 8, 1)).astype(np.float32)
    model.initialize(data[:8])
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    losses = model.fit(tf.data.Dataset.from_tensor_slices(data).batch(8), epochs=3,
                       verbose=0).history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
