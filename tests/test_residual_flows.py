"""Invertible residual layers (i-ResNet, Residual Flows, i-DenseNet): spectral normalisation,
Lipschitz activations, the estimated-log-det contract, bad input, the Neumann gradient, models.

Tolerances: spectral norms vs SVD 1e-4 relative; round trips 1e-5 relative; exact log-det vs
slogdet of the autodiff Jacobian 1e-4; unbiased estimators within 3 standard errors of the exact
value (200 draws); ONNX vs TF 1e-4.
"""

import numpy as np
import pytest
import tensorflow as tf

import keras
from tfinv import layers, models, nets
from tfinv.layers.bases.residual_layer import FixedPointError
from tfinv.ops import residual as residual_ops
from tfinv.ops import spectral_norm as sn_ops
from tfinv.ops.lipschitz_activations import c_lip_swish_linearize, lip_swish_linearize
from tfinv.testing import contract
from tfinv.testing.cases import RefreshedCase


# ------------------------------------------------------------------ spectral normalisation
def test_dense_power_iteration_matches_svd():
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((7, 5)).astype(np.float32)
    u = sn_ops.normalise(tf.constant(rng.standard_normal((1, 5)), tf.float32))
    v = sn_ops.normalise(tf.constant(rng.standard_normal((1, 7)), tf.float32))
    _, _, sigma = sn_ops.dense_power_iteration(tf.constant(kernel), u, v, 200)
    assert abs(float(sigma) - np.linalg.norm(kernel, 2)) <= 1e-4 * np.linalg.norm(kernel, 2)


def test_conv_power_iteration_is_the_operator_norm_on_the_input_size():
    rng = np.random.default_rng(1)
    kernel = tf.constant(rng.standard_normal((3, 3, 2, 3)), tf.float32)
    for size in ((4, 4),):
        v = tf.constant(rng.standard_normal((1,) + size + (2,)), tf.float32)
        u = tf.constant(rng.standard_normal((1,) + size + (3,)), tf.float32)
        # conv_adjoint is the adjoint of conv_apply on this size: <A v, u> = <v, A^T u>.
        lhs = float(tf.reduce_sum(sn_ops.conv_apply(kernel, v) * u))
        assert abs(lhs - float(tf.reduce_sum(v * sn_ops.conv_adjoint(kernel, u)))) <= 1e-4 * abs(lhs)
        x = tf.zeros((1,) + size + (2,))
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reshape(sn_ops.conv_apply(kernel, x), [-1])
        matrix = tape.jacobian(y, x).numpy().reshape(y.shape[0], -1)
        exact = np.linalg.norm(matrix.astype(np.float64), 2)
        # The top two singular values are close, so convergence is slow: 5000 steps in a loop.
        step = lambda k, a, b: (k + 1,) + sn_ops.conv_power_iteration(kernel, a, b, 1)[:2]
        _, u_n, v_n = tf.function(lambda: tf.while_loop(
            lambda k, a, b: k < 5000, step, (0, sn_ops.normalise(u), sn_ops.normalise(v))))()
        _, _, sigma = sn_ops.conv_power_iteration(kernel, u_n, v_n, 0)
        # From below, and within 1e-4 (the kernel-matrix norm would be far off).
        assert exact * (1 - 1e-4) <= float(sigma) <= exact * (1 + 1e-6), (size, float(sigma), exact)


def test_spectral_norm_updates_only_in_training():
    layer = nets.SpectralNormConv2D(4, 3, coefficient=0.5, seed=2)
    x = tf.random.stateless_normal((2, 5, 5, 3), seed=[1, 2])
    layer.build(x.shape)
    layer.kernel.assign(layer.kernel * 3.0)  # make the stored vectors stale
    u = layer.u.numpy()
    layer(x, training=False)
    np.testing.assert_array_equal(layer.u.numpy(), u)
    block = layers.InvertibleResidualBlock(hidden_features=4, coefficient=0.5)
    block.build(x.shape)
    before = [v.numpy() for v in block.non_trainable_variables]
    block.forward_and_log_det(x)  # no Keras training call: deterministic, nothing stored
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, block.non_trainable_variables))
    model = keras.Sequential([block])
    model(x, training=True)
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(before, block.non_trainable_variables))


def test_effective_kernel_norm_is_at_most_c():
    layer = nets.SpectralNormDense(6, coefficient=0.7, seed=3)
    layer.build((None, 4))
    layer.kernel.assign(layer.kernel * 10.0)
    layer.refresh_spectral_norm()
    effective = np.linalg.norm(layer.effective_kernel().numpy().astype(np.float64), 2)
    assert effective <= 0.7 * (1 + 1e-5)
    assert effective >= 0.7 * (1 - 1e-4)  # rescaled to c, not below


@pytest.mark.parametrize("bad", [1.0, 0.0, -0.5, 1.5])
def test_coefficient_outside_open_unit_interval_is_rejected(bad):
    for make in (lambda: nets.SpectralNormDense(3, coefficient=bad),
                 lambda: nets.SpectralNormConv2D(3, coefficient=bad),
                 lambda: layers.InvertibleResidualBlock(coefficient=bad),
                 lambda: layers.InvertibleDenseBlock(coefficient=bad),
                 lambda: layers.MonotoneBlock(coefficient=bad)):
        with pytest.raises(ValueError, match="0 < c < 1"):
            make()


# ------------------------------------------------------------------ activations
@pytest.mark.parametrize("beta", [0.1, 0.974, 5.0])
def test_lip_swish_and_c_lip_swish_are_1_lipschitz_with_correct_derivatives(beta):
    t = tf.constant(np.linspace(-30, 30, 200001), tf.float64)
    b = tf.constant(beta, tf.float64)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(t)
        value, derivative = lip_swish_linearize(t, b)
        c_value, c_derivative = c_lip_swish_linearize(t[:, None], b)
        c_sum_0, c_sum_1 = c_value[:, 0], c_value[:, 1]
    np.testing.assert_allclose(derivative, tape.gradient(value, t), atol=1e-12)
    np.testing.assert_allclose(c_derivative[:, 0], tape.gradient(c_sum_0, t), atol=1e-12)
    np.testing.assert_allclose(c_derivative[:, 1], tape.gradient(c_sum_1, t), atol=1e-12)
    assert float(tf.reduce_max(tf.abs(derivative))) <= 1.0
    c_norm = float(tf.reduce_max(tf.sqrt(tf.reduce_sum(c_derivative**2, -1))))
    assert 0.99 <= c_norm <= 1.0  # tight: the 1.004 normalisation is the measured maximum


# ------------------------------------------------------------------ estimated log-det contract
def _block_cases():
    yield RefreshedCase(
        "residual", lambda: layers.InvertibleResidualBlock(
            hidden_features=8, num_hidden_layers=1, coefficient=0.9, preactivation=False,
            inference_terms=30, seed=1), (2, 4, 4, 2), perturb=0.3)
    yield RefreshedCase(
        "dense", lambda: layers.InvertibleDenseBlock(growth=3, depth=2, coefficient=0.9,
                                                    inference_terms=30, seed=3), (2, 4, 4, 2), perturb=0.3)
    yield RefreshedCase(
        "monotone", lambda: layers.MonotoneBlock(hidden_features=8, num_hidden_layers=1, coefficient=0.9,
                                                 preactivation=False, inference_terms=30, seed=4),
        (2, 4, 4, 2), perturb=0.3)


@pytest.fixture(scope="module", params=list(_block_cases()), ids=lambda c: c.name)
def block(request):
    return request.param.build()


def test_declares_estimated_log_det(block):
    layer, _ = block
    assert not contract.log_det_is_exact(layer)
    assert contract.log_det_is_exact(layers.ActNorm())


def test_exact_log_det_matches_slogdet(block):
    layer, x = block
    errors = contract.check_exact_log_det(layer, x, tol=1e-4)
    assert errors["deterministic"] <= 1e-4  # exact trace, 30 terms: only truncation is left


def test_roulette_estimator_is_unbiased_and_series_bias_is_reported(block):
    layer, x = block
    report = contract.check_log_det_estimator(layer, x, "roulette", samples=200)
    assert max(report["z"]) <= 3.0
    series = contract.check_log_det_estimator(layer, x, "series", samples=50)
    assert len(series["bias"]) == x.shape[0] and all(np.isfinite(series["bias"]))


def test_measured_lipschitz_below_c(block):
    layer, x = block
    assert contract.check_lipschitz(layer, x, points=2) < layer.coefficient
    assert layer.check_lipschitz() <= layer.coefficient * (1 + 1e-3)


def test_fixed_point_converges(block):
    layer, x = block
    iterations = contract.check_fixed_point(layer, x, tol=1e-5)
    assert all(0 < n < layer.max_inverse_iterations for n in iterations.values())


def test_monotone_block_jacobian_within_cayley_bounds():
    """Singular values of ``(I + J)^{-1}(I - J)`` lie in ``[(1-L)/(1+L), (1+L)/(1-L)]``, L = Lip(g)."""
    layer, x = list(_block_cases())[2].build()
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reshape(layer.forward_and_log_det(x)[0], [2, -1])
    jac = tape.batch_jacobian(y, x).numpy().reshape(2, 32, 32).astype(np.float64)
    lip = contract.check_lipschitz(layer, x)
    singular = np.linalg.svd(jac, compute_uv=False)
    assert singular.max() <= (1 + lip) / (1 - lip) * (1 + 1e-4)
    assert singular.min() >= (1 - lip) / (1 + lip) * (1 - 1e-4)
    assert not np.allclose(singular, 1.0, atol=1e-2)  # not the identity


def test_truncated_series_bias_shrinks_with_terms():
    layer, x = RefreshedCase("r", lambda: layers.InvertibleResidualBlock(
        hidden_features=8, num_hidden_layers=1, coefficient=0.9, preactivation=False, seed=1),
        (2, 4, 4, 2), perturb=0.3).build()
    exact = layer.dense_log_det(x).numpy()
    jvp = layer.net.linearize(x)[1]
    probes = residual_ops.basis_probes(2, (4, 4, 2), tf.float32)
    errors = [np.max(np.abs(residual_ops.power_series_log_det(jvp, probes, n)[0].numpy() - exact))
              for n in (1, 2, 4, 8, 16)]
    assert errors[-1] <= 1e-5 and all(b < a for a, b in zip(errors[:3], errors[1:4]))


def test_neumann_gradient_is_unbiased_and_memory_efficient_matches():
    layer, x = RefreshedCase("r", lambda: layers.InvertibleResidualBlock(
        hidden_features=8, num_hidden_layers=1, coefficient=0.9, preactivation=False, seed=1),
        (2, 4, 4, 2), perturb=0.3).build()
    direction = tf.random.stateless_normal(x.shape, seed=[5, 5])
    with tf.GradientTape() as tape:
        tape.watch(x)
        exact = tf.reduce_sum(layer.dense_log_det(x))
    exact_grad = float(tf.reduce_sum(tape.gradient(exact, x) * direction))

    @tf.function
    def projected_gradient(seed):
        with tf.GradientTape() as tape:
            tape.watch(x)
            estimate = tf.reduce_sum(layer.estimate_log_det(x, "roulette", 1, seed))
        return tf.reduce_sum(tape.gradient(estimate, x) * direction)

    draws = [float(projected_gradient(tf.constant([7, i]))) for i in range(300)]
    mean, se = np.mean(draws), np.std(draws, ddof=1) / np.sqrt(len(draws))
    assert abs(mean - exact_grad) <= 3 * se, (mean, se, exact_grad)
    # Memory-saving backward: the same draw gives the same gradients (input and weights).
    efficient = layers.InvertibleResidualBlock.from_config({**layer.get_config(), "memory_efficient": True})
    efficient.build(x.shape)
    efficient.set_weights(layer.get_weights())
    grads = []
    for subject in (layer, efficient):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = tf.reduce_mean(subject.estimate_log_det(x, "roulette", 2, (3, 4)))
        grads.append(tape.gradient(value, [x] + subject.trainable_variables))
    for a, b, v in zip(*grads, [x] + layer.trainable_variables):
        a = np.zeros(v.shape) if a is None else a.numpy()  # e.g. the last bias: no log-det gradient
        b = np.zeros(v.shape) if b is None else b.numpy()
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ bad input
def _stale_block():
    x = tf.random.stateless_normal((2, 4, 4, 2), seed=[3, 1])
    layer = layers.InvertibleResidualBlock(hidden_features=8, num_hidden_layers=1, coefficient=0.9,
                                           preactivation=False, max_inverse_iterations=30, seed=1)
    layer.build(x.shape)
    z = layer.forward_and_log_det(x)[0]
    # A user's assignment without refresh_spectral_norm(): new kernels whose top singular vectors
    # differ from the stored ones (a mere rescaling would be compensated by the stored estimate).
    rng = np.random.default_rng(11)
    for linear in layer.net.linear_layers:
        linear.kernel.assign(3.0 * rng.standard_normal(linear.kernel.shape).astype(np.float32))
    return layer, 3.0 * z


def test_stale_spectral_norm_after_assignment_is_reported():
    layer, z = _stale_block()
    with pytest.raises(ValueError, match="exceeds the coefficient"):
        layer.check_lipschitz()
    with pytest.raises(FixedPointError, match="did not converge"):
        layer.inverse_and_log_det(z)
    _, iterations, _, converged = tf.function(layer.inverse_with_info)(z)
    assert not bool(converged) and int(iterations) == 30
    layer.refresh_spectral_norm()
    assert layer.check_lipschitz() <= 0.9 * (1 + 1e-3)
    assert bool(layer.inverse_with_info(z)[3])


def test_non_convergence_raises_in_graphs_under_validate_args():
    layer, z = _stale_block()
    checked = layers.InvertibleResidualBlock.from_config({**layer.get_config(), "validate_args": True})
    checked.build(z.shape)
    checked.set_weights(layer.get_weights())
    with pytest.raises(tf.errors.InvalidArgumentError, match="did not converge"):
        tf.function(checked.inverse_and_log_det)(z)


# ------------------------------------------------------------------ models
def _small_model(name):
    x = tf.constant(np.random.default_rng(0).uniform(1, 16, (3, 8, 8, 1)).astype(np.float32))
    options = dict(levels=2, blocks_per_level=1, num_levels=17, inference_terms=25, seed=1)
    if name == "ResidualFlow":
        model = models.ResidualFlow((8, 8, 1), hidden_features=8, **options)
    else:
        model = models.IDenseNet((8, 8, 1), growth=3, depth=2, **options)
    model.initialize(x)
    contract.perturb_weights(model, 0.05, seed=2)
    model.refresh_spectral_norm()
    return model, x


@pytest.fixture(scope="module", params=["ResidualFlow", "IDenseNet"])
def small_model(request):
    return _small_model(request.param)


def test_model_fit_and_round_trip(small_model):
    model, x = small_model
    contract.check_round_trip(model, x, 1e-5)
    clone = type(model).from_config(model.get_config())
    clone.set_weights(model.get_weights())
    clone.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = clone.fit(tf.data.Dataset.from_tensors(x).repeat(2), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(model.get_weights(), clone.get_weights()))


@pytest.mark.timeout(900)  # a model export; minutes on a loaded machine
def test_residual_flow_log_det_export_and_serving(tmp_path):
    """The model's log-det, its export (both ONNX graphs checked against TF at 1e-4 by
    `export_flow`; the inverse a fixed-point ``Loop``) and the ONNX server answering sample,
    forward and log_prob as the TF model does (ResidualFlow; IDenseNet's block is covered by the
    layer contract, and a model export takes ~40 s here)."""
    import onnx
    from starlette.testclient import TestClient

    from tfinv.export import export_flow
    from tfinv.serving import create_app

    model, x = _small_model("ResidualFlow")
    contract.check_log_det(model, x, 1e-4)  # deterministic form: exact trace, 25 terms
    export_flow(model, tmp_path, name="resflow", tolerance=1e-4)
    assert "Loop" in {node.op_type for node in onnx.load(str(tmp_path / "inverse.onnx")).graph.node}
    z, log_det = (t.numpy() for t in model.forward(x))
    with TestClient(create_app(tmp_path)) as http:
        def predict(signature, inputs):
            response = http.post("/v1/models/resflow:predict", json={"signature_name": signature, "inputs": inputs})
            assert response.status_code == 200, response.text
            return response.json()["outputs"]

        sample = np.asarray(predict("sample", {"n": 3, "seed": 7, "temperature": 0.8})["x"], np.float32)
        assert contract.relative_error(sample, model.sample(3, temperature=0.8, seed=7)) <= 1e-4
        forward = predict("forward", {"x": x.numpy().tolist()})
        assert contract.relative_error(np.asarray(forward["z"], np.float32), z) <= 1e-4
        np.testing.assert_allclose(forward["log_det"], log_det, rtol=1e-4, atol=1e-3)
        log_prob = predict("log_prob", {"x": x.numpy().tolist()})
        np.testing.assert_allclose(np.ravel(log_prob), model.log_prob(x).numpy(), rtol=1e-4, atol=1e-3)
        inverse = predict("inverse", {"z": z.tolist()})
        assert contract.relative_error(np.asarray(inverse["x"], np.float32), x.numpy()) <= 1e-4
