"""PeriodicConv and SymmetricConv beyond the contract harness (their cases, at square, non-square
and odd shapes, are in tfinv.testing.cases and run by tests/test_contract.py): graph contents,
the math against dense Jacobians, bad inputs, near-singular kernels, and use inside flows."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfinv
from tfinv import layers
from tfinv.export.onnx import prepare
from tfinv.export.testing import check_onnx
from tfinv.layers.periodic_conv import PeriodicConv
from tfinv.layers.symmetric_conv import SymmetricConv
from tfinv.testing import contract
from tfinv.testing.cases import Case, cases

CASES = [c for c in cases() if c.name.startswith(("PeriodicConv", "SymmetricConv"))]


def _ids(items):
    return [c.name for c in items]


GRAPH_CASES = [c for c in CASES if c.name in ("PeriodicConv", "SymmetricConv")]


def test_graph_cases_are_found_by_name():
    assert _ids(GRAPH_CASES) == ["PeriodicConv", "SymmetricConv"]


@pytest.mark.parametrize("case", GRAPH_CASES, ids=_ids(GRAPH_CASES))
def test_onnx_graphs_are_matmuls_and_convs_with_folded_parameters(case):
    """The inverse is DFT/DCT matmuls around constant block inverses: no solver, no FFT, no
    complex tensor, no determinant reaches the graph (the log-det is a folded constant)."""
    layer, x = case.build()
    for direction, value in (("forward", x), ("inverse", layer.forward(x))):
        _, info = prepare(layer, direction, test_input=np.asarray(value))
        ops = set(info.op_types)
        assert not ops & {"DFT", "Det", "Einsum", "Loop", "If"}, ops
        assert ("Conv" in ops) == (direction == "forward"), ops
        assert ("MatMul" in ops) == (direction == "inverse"), ops


# ----------------------------------------------------------------------------- the math, densely
@pytest.mark.parametrize("cls", [PeriodicConv, SymmetricConv])
def test_singular_values_are_those_of_the_dense_jacobian(cls):
    layer, x = Case("c", lambda: cls(seed=4), (1, 4, 3, 2)).build()
    with tf.GradientTape() as tape:
        tape.watch(x)
        z = layer.forward(x)
    jacobian = np.asarray(tape.jacobian(z, x)).reshape(24, 24)
    dense = np.linalg.svd(jacobian, compute_uv=False)
    np.testing.assert_allclose(float(layer.min_singular_value()), dense.min(), rtol=1e-4)
    np.testing.assert_allclose(float(layer.condition_number()), dense.max() / dense.min(), rtol=1e-4)
    np.testing.assert_allclose(
        float(layer.forward_log_det_jacobian(x, event_ndims=3)[0]), np.linalg.slogdet(jacobian)[1], rtol=1e-5
    )


def test_periodic_conv_forward_is_the_circular_convolution_of_its_kernel():
    layer, x = Case("c", lambda: PeriodicConv(use_bias=True, seed=5), (2, 5, 4, 3)).build()
    padded = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap")
    expected = tf.nn.conv2d(padded, layer.kernel, 1, "VALID") + layer.bias
    assert contract.relative_error(layer.forward(x), expected) < 1e-6


def test_symmetric_conv_forward_is_mirror_padded_convolution_with_an_even_kernel():
    layer, x = Case("c", lambda: SymmetricConv(seed=5), (2, 5, 4, 3)).build()
    kernel = np.asarray(layer.kernel())
    assert np.array_equal(kernel, kernel[::-1]) and np.array_equal(kernel, kernel[:, ::-1])
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    expected = tf.nn.conv2d(padded, kernel, 1, "VALID")
    assert contract.relative_error(layer.forward(x), expected) < 1e-6


@pytest.mark.parametrize("cls", [PeriodicConv, SymmetricConv])
def test_initialisation_is_near_identity_and_well_conditioned(cls):
    layer = cls(seed=0)
    x = tf.random.stateless_normal((2, 8, 8, 4), seed=[1, 2])
    z = layer.forward(x)
    assert 0 < contract.relative_error(z, x) < 0.2
    assert float(layer.condition_number()) < 1.5


# ----------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("cls", [PeriodicConv, SymmetricConv])
def test_spatial_size_smaller_than_the_kernel_is_a_clear_error(cls):
    with pytest.raises(ValueError, match=rf"{cls.__name__} '.*' needs H and W >= the effective kernel "
                                         r"size 3 \(kernel_size=3, dilation=1\), got \(H, W\) = \(2, 5\)"):
        cls().forward(tf.zeros((1, 2, 5, 2)))
    with pytest.raises(ValueError, match=r"effective kernel size 5 \(kernel_size=3, dilation=2\), got "
                                         r"\(H, W\) = \(6, 4\)"):
        cls(dilation=2).build((None, 6, 4, 2))


@pytest.mark.parametrize("cls", [PeriodicConv, SymmetricConv])
def test_channel_and_shape_mismatch_after_build(cls):
    layer = cls()
    layer.forward(tf.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"expects event shape \(4, 4, 3\), got \(4, 4, 2\)"):
        layer.forward(tf.zeros((1, 4, 4, 2)))
    with pytest.raises(ValueError, match=r"\(inverse\) expects event shape \(4, 4, 3\), got \(5, 4, 3\)"):
        layer.inverse(tf.zeros((1, 5, 4, 3)))
    with pytest.raises(ValueError, match=r"needs a static event shape"):
        cls().build((None, None, 4, 3))


def test_hyperparameter_errors():
    with pytest.raises(ValueError, match=r"SymmetricConv needs an odd kernel_size >= 1, got 4"):
        SymmetricConv(kernel_size=4)
    with pytest.raises(ValueError, match=r"PeriodicConv needs kernel_size >= 1, got 0"):
        PeriodicConv(kernel_size=0)
    with pytest.raises(ValueError, match=r"PeriodicConv needs dilation >= 1, got 0"):
        PeriodicConv(dilation=0)
    with pytest.raises(ValueError, match=r"needs 0 <= singular_tolerance < 1, got 2.0"):
        SymmetricConv(singular_tolerance=2.0)
    with pytest.raises(ValueError, match=r"log_det_method must be one of \('auto', 'cholesky', 'qr'\), got 'lu'"):
        PeriodicConv(log_det_method="lu")


# ----------------------------------------------------------------------------- near-singular
def _singular_periodic(channels=2, shape=(1, 4, 6), validate_args=False):
    """Centre tap I, right neighbour -I: K(u, v) = (1 - exp(2 pi i v / W)) I vanishes at v = 0."""
    layer = PeriodicConv(seed=0, name="singular", validate_args=validate_args)
    layer.build((None,) + shape + (channels,))
    kernel = np.zeros((3, 3, channels, channels), np.float32)
    kernel[1, 1] = np.eye(channels)
    kernel[1, 2] = -np.eye(channels)
    layer.kernel.assign(kernel)
    return layer


def _singular_symmetric(channels=2, shape=(1, 4, 6), validate_args=False):
    """Centre tap I, left/right taps -I/2: K(k, l) = (1 - cos(pi l / W)) I vanishes at l = 0."""
    layer = SymmetricConv(seed=0, name="singular", validate_args=validate_args)
    layer.build((None,) + shape + (channels,))
    quadrant = np.zeros((2, 2, channels, channels), np.float32)
    quadrant[0, 0] = np.eye(channels)
    quadrant[0, 1] = -0.5 * np.eye(channels)
    layer.quadrant.assign(quadrant)
    return layer


@pytest.mark.parametrize("make, where", [(_singular_periodic, r"frequency \(u, v\) block at \(0, 0\)"),
                                         (_singular_symmetric, r"DCT frequency \(k, l\) block at \(0, 0\)")])
def test_singular_kernel_is_reported_and_its_inverse_refused(make, where):
    layer = make()
    x = tf.random.stateless_normal((2, 4, 6, 2), seed=[3, 4])
    assert float(layer.min_singular_value()) < 1e-6
    message = rf"'singular' is numerically singular: the {where}"
    with pytest.raises(ValueError, match=message):
        layer.check_invertible()
    with pytest.raises(ValueError, match=message):
        layer.inverse(x)  # eager inverse
    with pytest.raises(ValueError, match=message):
        prepare(layer, "inverse", test_input=np.asarray(x))  # export refuses before writing
    z, log_det = layer.forward_and_log_det(x)  # the forward is defined; its log-det is not finite
    assert np.all(np.isfinite(z))
    assert not np.all(np.isfinite(log_det)) or float(log_det[0]) < -20.0
    # In a traced graph the check is opt-in (validate_args); XLA would drop the assertion.
    checked = make(validate_args=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="numerically singular"):
        tf.function(checked.inverse)(x)
    # Without validate_args the graph does not check; TF's MatrixInverse still refuses an exactly
    # singular block (a near-singular one would pass, with a meaningless result).
    with pytest.raises(tf.errors.InvalidArgumentError, match="not invertible"):
        tf.function(layer.inverse)(x)


def test_near_singular_threshold_is_relative_and_configurable():
    layer = _singular_periodic()
    kernel = layer.kernel.numpy()
    kernel[1, 2] *= 1 - 1e-3  # smallest singular value 1e-3, largest ~2: ratio 5e-4
    layer.kernel.assign(kernel)
    layer.check_invertible()  # above the default 1e-5
    x = tf.random.stateless_normal((2, 4, 6, 2), seed=[5, 6])
    assert contract.relative_error(layer.inverse(layer.forward(x)), x) < 1e-2  # cond 2e3 in float32
    strict = PeriodicConv.from_config({**layer.get_config(), "singular_tolerance": 1e-3})
    strict.build((None, 4, 6, 2))
    strict.set_weights(layer.get_weights())
    with pytest.raises(ValueError, match=r"not above singular_tolerance=0.001"):
        strict.inverse(x)


# ----------------------------------------------------------------------------- in a flow
@pytest.mark.parametrize("jit", [False, True])
def test_flow_model_with_fourier_convolutions_trains_and_inverts(jit):
    shape = (6, 5, 2)
    data = tf.constant(np.random.default_rng(7).standard_normal((16,) + shape).astype(np.float32))
    data = data * tf.constant([1.0, 0.3]) + tf.roll(data, 1, axis=1) * 0.5  # correlated pixels
    model = tfinv.FlowModel(
        [layers.ActNorm(), PeriodicConv(seed=1), layers.AffineCoupling(hidden_channels=8),
         SymmetricConv(seed=2, use_bias=True), layers.AffineCoupling(hidden_channels=8, parity=1)],
        input_shape=shape,
    )
    model.initialize(data)
    before = float(tf.reduce_mean(-model.log_prob(data)))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=jit)
    history = model.fit(tf.data.Dataset.from_tensor_slices(data).batch(8), epochs=5, verbose=0)
    after = float(tf.reduce_mean(-model.log_prob(data)))
    assert np.all(np.isfinite(history.history["loss"]))
    assert after < before, (before, after)
    z, _ = model.forward(data)
    assert contract.relative_error(model.inverse(z), data) < 1e-5
    samples = model.sample(3, seed=1)
    assert samples.shape == (3,) + shape and np.all(np.isfinite(samples))


@pytest.mark.parametrize("cls", [PeriodicConv, SymmetricConv])
def test_several_batch_axes(cls):
    layer, x = Case("c", lambda: cls(seed=6), (6, 4, 5, 2)).build()
    x2 = tf.reshape(x, (2, 3, 4, 5, 2))
    z, log_det = layer.forward_and_log_det(x2)
    assert z.shape == x2.shape and log_det.shape == (2, 3)
    assert contract.relative_error(tf.reshape(z, x.shape), layer.forward(x)) == 0.0
    x_back, inverse_log_det = layer.inverse_and_log_det(z)
    assert contract.relative_error(x_back, x2) < 1e-5
    assert contract.relative_error(inverse_log_det, -log_det) < 1e-6
    graph_inverse = tf.function(layer.inverse_and_log_det, jit_compile=True)  # traced rank 5
    assert contract.relative_error(graph_inverse(z)[0], x_back) < 1e-5


def test_glow_with_periodic_convolutions_as_its_channel_mixing_layer():
    """Glow-style use: ActNorm -> PeriodicConv -> coupling steps, trained, inverted, exported."""
    from tfinv.models import Glow

    data = tf.constant(np.random.default_rng(8).uniform(1.0, 16.0, (8, 8, 8, 1)).astype(np.float32))
    model = Glow((8, 8, 1), levels=1, steps_per_level=2, hidden_channels=8, linear="periodic_conv")
    model.initialize(data)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(tf.data.Dataset.from_tensor_slices(data).batch(4), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    contract.check_round_trip(model, data[:2])
    check_onnx(model, data[:2])
