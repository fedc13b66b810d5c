"""RBIG and convolutional RBIG (issue 18, item 6): marginal Gaussianization, orthonormal
convolutions learned by reconstruction loss, the iterative loop and its multi-information."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfinv.core import FlowModel
from tfinv.layers import MarginalGaussianization, OrthonormalConv
from tfinv.layers.orthonormal_conv import orthonormality_error
from tfinv.models import fit_rbig, learn_orthonormal_conv
from tfinv.ops import eco, gaussianization


def _gaussian(seed, n=20000, dims=3):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((dims, dims))
    cov = a @ a.T + 0.5 * np.eye(dims)
    return rng.multivariate_normal(np.zeros(dims), cov, size=n).reshape(n, 1, 1, dims), cov


@pytest.mark.parametrize("seed", [0, 1])
def test_multi_information_of_gaussian_data_matches_the_closed_form(seed):
    """I = -1/2 log det(R). Bound: 0.05 nats. The estimate is a difference of sums of 3
    histogram entropies over N = 20000 samples; the measured RMS of one iteration's estimate on
    data with no dependence (`noise_floor`) is asserted below 0.01, so the bound is > 5 of them
    (the first iteration takes all of I: PCA decorrelates a Gaussian)."""
    x, cov = _gaussian(seed)
    result = fit_rbig(x, rotation="pca", max_layers=6, tolerance=0.0, patience=2)
    exact = gaussianization.gaussian_multi_information(cov)
    assert result.noise_floor < 0.01
    assert exact > 0.1
    assert abs(result.multi_information - exact) <= 0.05, (result.multi_information, exact)
    # independent coordinates: no multi-information
    independent = np.random.default_rng(seed + 10).standard_normal((20000, 1, 1, 3)) * [1.0, 3.0, 0.2]
    assert abs(fit_rbig(independent, rotation="random", max_layers=4, patience=2).multi_information) <= 0.05


def test_marginal_gaussianization_gaussianizes_and_its_density_integrates_to_one():
    rng = np.random.default_rng(3)
    x = (rng.exponential(2.0, size=(5000, 1, 1, 2)) + [0.0, 5.0]).astype(np.float32)
    layer = MarginalGaussianization(num_knots=30)
    model = FlowModel(layer, input_shape=(1, 1, 2))
    model.initialize(tf.constant(x[:4000]))  # fitted, not trained
    z = layer.forward_and_log_det(tf.constant(x[4000:]))[0].numpy().reshape(-1, 2)
    # held-out Gaussianized margins: mean 0 and std 1 within 4 standard errors (+ knot error)
    assert np.all(np.abs(z.mean(0)) < 4 / np.sqrt(1000) + 0.02)
    assert np.all(np.abs(z.std(0) - 1.0) < 0.1)
    # the implied density phi(g(x)) g'(x) is normalised: trapezoid over a fine grid, both margins
    grid = np.linspace(-30.0, 60.0, 200001)
    z64, log_slope = gaussianization.piecewise_linear(tf.constant(grid[:, None]),
                                                      tf.cast(layer.knots_in[0, 0], tf.float64),
                                                      tf.cast(layer.knots_out[0, 0], tf.float64))
    density = np.exp(-0.5 * z64.numpy() ** 2 + log_slope.numpy()) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(np.trapezoid(density, grid, axis=0), [1.0, 1.0], atol=1e-4)
    # and the layer's own log-det is that slope sum
    x_test = tf.constant(x[4000:4005])
    _, ld = layer.forward_and_log_det(x_test)
    _, per_elem = gaussianization.piecewise_linear(x_test, layer.knots_in, layer.knots_out)
    np.testing.assert_allclose(ld.numpy(), per_elem.numpy().sum(axis=(1, 2, 3)), rtol=1e-6)


def test_projection_gives_the_nearest_orthonormal_convolution():
    rng = np.random.default_rng(4)
    kernel = rng.standard_normal((4, 4, 2, 2))
    projected, error = gaussianization.nearest_orthogonal_circular_kernel(kernel)
    assert error > 0.5 and orthonormality_error(projected) < 1e-12
    again, error_again = gaussianization.nearest_orthogonal_circular_kernel(projected)
    assert error_again < 1e-12 and np.abs(again - projected).max() < 1e-12  # a fixed point

    def matrix(k):
        n = 4 * 4 * 2
        basis = tf.reshape(tf.eye(n, dtype=tf.float64), [n, 4, 4, 2])
        return tf.reshape(eco.dilated_circular_conv2d(basis, tf.constant(k)), [n, n]).numpy()

    dense = matrix(kernel)
    nearest = np.linalg.norm(dense - matrix(projected))
    for seed in range(5):  # no other orthonormal circular convolution is nearer
        other = gaussianization.nearest_orthogonal_circular_kernel(
            np.random.default_rng(100 + seed).standard_normal((4, 4, 2, 2)))[0]
        assert nearest < np.linalg.norm(dense - matrix(other))
    u, _, vh = np.linalg.svd(dense)  # nor is the polar factor of the dense matrix, which it equals
    np.testing.assert_allclose(matrix(projected), u @ vh, atol=1e-10)


def test_reconstruction_loss_makes_the_learned_convolution_nearly_orthonormal():
    y = np.random.default_rng(5).standard_normal((256, 4, 4, 2)).astype(np.float32)
    start = learn_orthonormal_conv(y, kernel_size=3, steps=0, seed=1)
    learned = learn_orthonormal_conv(y, kernel_size=3, steps=150, learning_rate=0.02, seed=1)

    def error(k):
        return orthonormality_error(gaussianization.centred_to_cyclic_kernel(k, 4, 4))

    assert error(learned) < 0.5 * error(start)
    with pytest.raises(ValueError, match=r"orthonormal kernel \(max \|sigma - 1\| <= 1e-05\), got"):
        OrthonormalConv(kernel=gaussianization.centred_to_cyclic_kernel(learned, 4, 4))


def test_convolutional_rbig_is_a_flow_with_exact_orthonormal_rotations():
    rng = np.random.default_rng(6)
    base = rng.standard_normal((300, 4, 4, 1))
    x = (np.tanh(base) + 0.3 * np.roll(base, 1, axis=1) ** 2).astype(np.float32)  # dependent, non-Gaussian
    result = fit_rbig(x, rotation="conv", max_layers=2, tolerance=0.0, patience=5, num_knots=12,
                      conv_steps=25, seed=2)
    model = result.model
    rotations = [layer for layer in model._flatten_layers() if isinstance(layer, OrthonormalConv)]
    assert len(rotations) == 2 and len(result.reductions) == 2 and len(result.orthonormality_errors) == 2
    assert all(orthonormality_error(r.kernel.numpy().astype(np.float64)) < 1e-6 for r in rotations)
    assert max(result.orthonormality_errors) > 1e-3  # the learned ones were not orthonormal
    assert result.multi_information == pytest.approx(sum(result.reductions))
    z, log_det = model.forward(tf.constant(x[:8]))
    assert z.shape == (8, 2, 2, 4) and np.all(np.isfinite(log_det.numpy()))
    # off-manifold round trip: latents far from the data
    far = tf.constant(4.0 * rng.standard_normal((5, 2, 2, 4)).astype(np.float32))
    np.testing.assert_allclose(model.forward(model.inverse(far))[0].numpy(), far.numpy(), atol=1e-4)
    samples = model.sample(6, seed=1)
    assert samples.shape == (6, 4, 4, 1) and np.all(np.isfinite(samples.numpy()))
    # a fitted flow fits better than its start: held-in log-likelihood above a Gaussian's
    gaussian = FlowModel(MarginalGaussianization(num_knots=12), input_shape=(4, 4, 1))
    gaussian.initialize(tf.constant(x))
    assert np.mean(model.log_prob(tf.constant(x)).numpy()) > np.mean(gaussian.log_prob(tf.constant(x)).numpy())


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="rotation must be one of"):
        fit_rbig(np.zeros((4, 2, 2, 1)), rotation="ica")
    with pytest.raises(ValueError, match=r"images \(N, H, W, C\)"):
        fit_rbig(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="square images"):
        fit_rbig(np.zeros((4, 2, 4, 1)), rotation="pca")
    with pytest.raises(ValueError, match="sharing must be one of"):
        MarginalGaussianization(sharing="pixel")


def test_a_validation_set_stops_the_loop_and_picks_the_depth():
    rng = np.random.default_rng(7)
    base = rng.standard_normal((700, 1, 1, 4))
    x = np.concatenate([base[..., :2], np.sin(2 * base[..., :2]) + 0.1 * base[..., 2:]], axis=-1)
    result = fit_rbig(x[:500], rotation="random", max_layers=8, patience=2, num_knots=12, validation=x[500:])
    scores = result.held_out_log_likelihood
    depth = int(np.argmax(scores)) + 1
    rotations = [layer for layer in result.model._flatten_layers() if isinstance(layer, OrthonormalConv)]
    assert len(rotations) == len(result.reductions) == depth
    assert len(scores) == 8 or len(scores) == depth + 2  # stopped by patience, or ran out
    assert result.multi_information == pytest.approx(sum(result.reductions))
    held_out = np.mean(result.model.log_prob(tf.constant(x[500:], tf.float32)).numpy())
    assert np.isfinite(held_out)
