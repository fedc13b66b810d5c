"""Woodbury, MEWoodbury and ButterflyLayer beyond the contract harness (their cases, including
channel counts that are not powers of two, are in tfinv.testing.cases and run by
tests/test_contract.py): the math in `tfinv.ops.woodbury` / `tfinv.ops.butterfly` against dense
matrices, bad inputs, the invertibility guard, and Glow with each new linear variant.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfinv
from tfinv.blocks.glow_step import LINEAR_LAYERS
from tfinv.export.testing import check_onnx
from tfinv.layers.butterfly_layer import ButterflyLayer
from tfinv.layers.me_woodbury import MEWoodbury
from tfinv.layers.woodbury import Woodbury
from tfinv.models import Glow
from tfinv.ops import butterfly, woodbury
from tfinv.testing import contract
from tfinv.testing.cases import Case

# ------------------------------------------------------------------ ops vs dense matrices
@pytest.mark.parametrize("axes", [(3, 4), (1, 3), (1, 2), (2, 3)])
def test_woodbury_ops_match_dense_matrices(axes):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 4))
    start, stop = axes
    n = int(np.prod(x.shape[start:stop]))
    u, v = rng.standard_normal((n, 2)) * 0.5, rng.standard_normal((n, 2)) * 0.5
    dense = np.eye(n) + u @ v.T
    moved = np.moveaxis(x.reshape(x.shape[:start] + (n,) + x.shape[stop:]), start, -1)
    expected = np.moveaxis(moved @ dense.T, -1, start).reshape(x.shape)
    got = woodbury.apply_update(tf.constant(x), tf.constant(u), tf.constant(v), axes)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    back = woodbury.apply_update(got, woodbury.inverse_left_factor(tf.constant(u), tf.constant(v)),
                                 tf.constant(v), axes)
    np.testing.assert_allclose(back, x, atol=1e-9)
    np.testing.assert_allclose(woodbury.log_abs_det_update(tf.constant(u), tf.constant(v)),
                               np.linalg.slogdet(dense)[1], atol=1e-10)
    np.testing.assert_allclose(woodbury.condition_number(u, v), np.linalg.cond(dense), rtol=1e-8)


def test_butterfly_factor_matches_dense_matrix_and_inverse():
    rng = np.random.default_rng(0)
    params = [tf.constant(rng.standard_normal(4) * 0.7) for _ in range(4)]
    a, b, c, d = (np.asarray(t) for t in butterfly.block_coefficients(*params))
    np.testing.assert_allclose(a * d - b * c, np.exp(params[1] + params[2]), rtol=1e-12)
    stride, dense = 2, np.zeros((8, 8))
    for j in range(4):
        i = (j // stride) * 2 * stride + j % stride
        dense[np.ix_([i, i + stride], [i, i + stride])] = [[a[j], b[j]], [c[j], d[j]]]
    x = rng.standard_normal((8, 3))  # channel-first
    y = butterfly.apply_factor(tf.constant(x), (a, b, c, d), stride)
    np.testing.assert_allclose(y, dense @ x, rtol=1e-12)
    back = butterfly.apply_factor(y, butterfly.inverse_block_coefficients(*params), stride)
    np.testing.assert_allclose(back, x, atol=1e-12)


@pytest.mark.parametrize("channels", [4, 6])
def test_butterfly_dense_and_factor_implementations_agree(channels):
    x = tf.constant(np.random.default_rng(0).standard_normal((2, 3, 3, channels)).astype(np.float32))
    dense = ButterflyLayer(seed=0, implementation="dense")
    factors = ButterflyLayer(seed=0, implementation="factors")
    for layer in (dense, factors):
        layer.build(tuple(x.shape))
        contract.perturb_weights(layer, 0.3, seed=1)
    for direction in ("forward_and_log_det", "inverse_and_log_det"):
        (a, ld_a), (b, ld_b) = getattr(dense, direction)(x), getattr(factors, direction)(x)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ld_a, ld_b, rtol=1e-6)


def test_butterfly_pads_non_power_of_two_with_identity_blocks():
    # C = 6 pads to 8: pairs touching channels 6, 7 are masked (fixed to the identity).
    np.testing.assert_array_equal(
        butterfly.pair_mask(6, 3), [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 0, 0]]
    )
    layer = ButterflyLayer(seed=0)
    layer.build((None, 1, 1, 6))
    eye = tf.reshape(tf.eye(6), (6, 1, 1, 6))
    matrix = np.asarray(layer(eye)).reshape(6, 6).T  # column j = image of channel j
    # Outputs 0, 1, 4, 5 see every input; 2 and 3 (partners of padded 6, 7 at stride 4) see 0..3.
    assert np.all(np.abs(matrix[[0, 1, 4, 5]]) > 1e-6)
    np.testing.assert_array_equal(matrix[2:4, 4:], 0.0)
    np.testing.assert_allclose(np.linalg.slogdet(matrix)[1], float(layer.forward_and_log_det(eye)[1][0]),
                               atol=1e-5)


# ------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize(
    "make, shape, message",
    [
        (lambda: Woodbury(channel_rank=5), (None, 4, 4, 4), r"channel_rank must be <= C = 4 .*got 5"),
        (lambda: Woodbury(spatial_rank=17), (None, 4, 4, 4), r"spatial_rank must be <= H\*W = 16 .*got 17"),
        (lambda: MEWoodbury(height_rank=4), (None, 3, 5, 2), r"height_rank must be <= H = 3 .*got 4"),
        (lambda: MEWoodbury(width_rank=6), (None, 3, 5, 2), r"width_rank must be <= W = 5 .*got 6"),
        (lambda: ButterflyLayer(levels=4), (None, 2, 2, 6), r"levels must be <= ceil\(log2 C\) = 3 .*got 4"),
        (lambda: ButterflyLayer(), (None, 2, 2, 1), r"needs C >= 2"),
        (lambda: Woodbury(), (None, None, 4, 4), r"needs static H, W and C"),
    ],
)
def test_bad_shapes_raise_value_error_naming_expected_and_got(make, shape, message):
    with pytest.raises(ValueError, match=message):
        make().build(shape)


@pytest.mark.parametrize(
    "make",
    [lambda: Woodbury(channel_rank=0), lambda: MEWoodbury(width_rank=1.5),
     lambda: ButterflyLayer(levels=0), lambda: ButterflyLayer(implementation="fft")],
)
def test_bad_arguments_raise_at_construction(make):
    with pytest.raises(ValueError, match=r"must be (an integer >= 1|one of)"):
        make()


@pytest.mark.parametrize("make", [lambda: Woodbury(seed=1), lambda: ButterflyLayer(seed=1)])
def test_wrong_event_shape_raises(make):
    layer = make()
    layer(tf.zeros((1, 4, 4, 4)))
    with pytest.raises(ValueError, match=r"expects event shape \(4, 4, 4\), got \(4, 4, 2\)"):
        layer.inverse_and_log_det(tf.zeros((1, 4, 4, 2)))


def _make_singular(layer):
    """Sets ``V_c = -U_c (U_c^T U_c)^-1 e_1 e_1^T`` so that ``I_r + V_c^T U_c`` has a zero row: the
    channel transform is singular (up to float32 rounding)."""
    u = layer.channel_u.numpy()
    first = np.zeros((u.shape[1], u.shape[1]), np.float32)
    first[0, 0] = 1.0
    layer.channel_v.assign(-u @ np.linalg.inv(u.T @ u) @ first)
    return layer


def test_singular_woodbury_raises_at_eager_inverse_and_export():
    from tfinv.export.onnx import prepare

    layer, x = Case("w", lambda: MEWoodbury(seed=1), (2, 4, 4, 4)).build()
    assert max(layer.check_invertible().values()) < 100
    log_det_before = float(layer.forward_and_log_det(x)[1][0])
    _make_singular(layer)
    message = r"MEWoodbury '.*' \(channel transform\): I \+ U V\^T is not invertible"
    with pytest.raises(ValueError, match=message):
        layer.check_invertible()
    with pytest.raises(ValueError, match=message):
        layer.inverse_and_log_det(x)
    with pytest.raises(ValueError, match=message):
        prepare(layer, "forward", test_input=np.asarray(x))
    # The likelihood sees it too: the log-det collapses (to -inf when exactly singular).
    assert float(layer.forward_and_log_det(x)[1][0]) < log_det_before - 100


# ------------------------------------------------------------------ Glow with the new linear layers
@pytest.mark.parametrize("linear", ["woodbury", "me_woodbury", "butterfly"])
def test_glow_with_linear_variant(linear, tmp_path):
    assert linear in LINEAR_LAYERS
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0.85, 16.15, (8, 8, 8, 1)).astype(np.float32))
    # one step per level, 8 hidden channels: the linear layer at both levels (4 and 8 channels)
    # is what this checks, not depth or width
    model = Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=8, linear=linear)
    model.initialize(x)
    contract.perturb_weights(model, 0.05)
    contract.check_round_trip(model, x[:2])
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(tf.data.Dataset.from_tensor_slices(x).batch(4), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]
    check_onnx(model, x[:2])
    path = tmp_path / "glow.keras"
    model.save(path)
    loaded = tfinv.load_model(path)
    assert loaded.linear == linear
    np.testing.assert_allclose(loaded.forward(x[:2])[0], model.forward(x[:2])[0], rtol=1e-6, atol=1e-6)
