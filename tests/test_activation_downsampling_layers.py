"""Element-wise bijective activations (SmoothLeakyReLU, LearnableLeakyReLU) and invertible
downsampling (OrthogonalDownsampling, HaarDownsampling) beyond the contract harness (their cases
are in tfinv.testing.cases and run by tests/test_contract.py): the published formulas, XLA
gradients, and clear errors on bad input.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfinv.layers.haar_downsampling import HaarDownsampling
from tfinv.layers.learnable_leaky_relu import LearnableLeakyReLU
from tfinv.layers.orthogonal_downsampling import OrthogonalDownsampling
from tfinv.layers.smooth_leaky_relu import SmoothLeakyReLU
from tfinv.ops import activations, orthogonal
from tfinv.testing.cases import _signed_away_from_zero, _wide_normal
from tfinv.testing.contract import perturb_weights, relative_error


@pytest.mark.parametrize(
    "make", [lambda: LearnableLeakyReLU(initial_slope=0.3), lambda: OrthogonalDownsampling()],
    ids=["LearnableLeakyReLU", "OrthogonalDownsampling"],
)
def test_weight_gradients_compile_under_xla(make):
    """The training gradient (through exp of the slope, or the Cayley solve) compiles with XLA
    and matches eager; expm's gradient would not (shared/STACK.md)."""
    layer = make()
    x = tf.constant(_signed_away_from_zero((2, 4, 4, 3), 0))
    layer.build(tuple(x.shape))
    perturb_weights(layer, 0.1)

    # A loss that is not rotation-invariant: with 0.5 |z|^2 the orthogonal layer's gradient is
    # exactly 0 and the comparison would be of float noise.
    direction = tf.constant(np.random.default_rng(1).standard_normal((2, 2, 2, 12)).astype(np.float32))

    def gradients(value):
        with tf.GradientTape() as tape:
            z, log_det = layer.forward_and_log_det(value)
            loss = tf.reduce_sum(tf.reshape(z, [-1]) * tf.reshape(direction, [-1])) - tf.reduce_sum(log_det)
        return tape.gradient(loss, layer.trainable_variables)

    eager = gradients(x)
    jitted = tf.function(gradients, jit_compile=True)(x)
    for e, j in zip(eager, jitted):
        assert float(tf.reduce_max(tf.abs(e))) > 0.1  # a real gradient, far above float32 noise
        # A weight gradient has no batch axis: one scale for the whole tensor.
        assert relative_error(j[None], e[None]) < 1e-5


# ----------------------------------------------------------------------------- SmoothLeakyReLU
def _paper_smooth_leaky_relu(x, s):
    """Finzi et al. (2019), in float64: f, f', and the quadratic-formula inverse."""
    alpha = (1.0 - s) / (1.0 + s)
    f = (x + alpha * (np.sqrt(1.0 + x**2) - 1.0)) / (1.0 + alpha)
    derivative = (1.0 + alpha * x / np.sqrt(1.0 + x**2)) / (1.0 + alpha)
    return f, derivative


def _paper_inverse(y, s):
    alpha = (1.0 - s) / (1.0 + s)
    u = (1.0 + alpha) * y + alpha  # = x + alpha sqrt(1 + x^2)
    return (u - alpha * np.sqrt(u**2 + 1.0 - alpha**2)) / (1.0 - alpha**2)


@pytest.mark.parametrize("slope", [0.01, 0.1, 0.5, 1.0, 2.0])
def test_smooth_leaky_relu_is_the_papers_function(slope):
    x = np.concatenate([np.linspace(-200.0, 200.0, 4001), np.linspace(-3.0, 3.0, 601)])
    y, log_derivative = activations.smooth_leaky_relu_forward(tf.constant(x, tf.float64), slope)
    f, derivative = _paper_smooth_leaky_relu(x, slope)
    assert np.max(np.abs(y.numpy() - f) / np.maximum(np.abs(f), 1.0)) < 1e-12
    assert np.max(np.abs(log_derivative.numpy() - np.log(derivative))) < 1e-12
    x_back, inverse_log_derivative = activations.smooth_leaky_relu_inverse(
        tf.constant(f, tf.float64), slope)
    paper_inverse = _paper_inverse(f, slope)
    assert np.max(np.abs(x_back.numpy() - paper_inverse) / np.maximum(np.abs(x), 1.0)) < 1e-9
    assert np.max(np.abs(inverse_log_derivative.numpy() + np.log(derivative))) < 1e-12


@pytest.mark.parametrize("slope", [0.01, 0.1, 0.5, 2.0])
def test_smooth_leaky_relu_is_accurate_in_float32_far_from_zero(slope):
    """The sinh/asinh evaluation keeps float32 round trips at ~1e-6 even for tiny slopes,
    where the algebraic inverse cancels catastrophically."""
    x = np.concatenate([np.linspace(-1e3, 1e3, 2001), np.linspace(-3, 3, 601)]).astype(np.float32)
    y, _ = activations.smooth_leaky_relu_forward(tf.constant(x), slope)
    f, _ = _paper_smooth_leaky_relu(x.astype(np.float64), slope)
    assert np.max(np.abs(y.numpy() - f) / np.maximum(np.abs(f), 1.0)) < 2e-6
    x_back, _ = activations.smooth_leaky_relu_inverse(y, slope)
    assert np.max(np.abs(x_back.numpy() - x) / np.maximum(np.abs(x), 1.0)) < 2e-6


def test_smooth_leaky_relu_slopes_and_identity():
    s = 0.1
    x = tf.constant([[-1e4, -1e4 + 1.0, 0.0, 1e4, 1e4 + 1.0]], tf.float64)
    y, _ = activations.smooth_leaky_relu_forward(x, s)
    y = y.numpy()[0]
    assert y[2] == 0.0
    assert abs((y[1] - y[0]) - s) < 1e-6  # slope s for x -> -inf
    assert abs((y[4] - y[3]) - 1.0) < 1e-6  # slope 1 for x -> +inf
    identity = SmoothLeakyReLU(negative_slope=1.0)
    image = tf.constant(_wide_normal((1, 2, 2, 2), 0))
    z, log_det = identity.forward_and_log_det(image)
    assert relative_error(z, image) < 1e-6 and abs(float(log_det[0])) < 1e-6


@pytest.mark.parametrize("slope", [0.0, -0.5])
def test_smooth_leaky_relu_rejects_non_positive_slope(slope):
    with pytest.raises(ValueError, match="negative_slope > 0"):
        SmoothLeakyReLU(negative_slope=slope)


# ----------------------------------------------------------------------------- LearnableLeakyReLU
def test_learnable_leaky_relu_log_det_counts_negative_entries_per_channel():
    layer = LearnableLeakyReLU(initial_slope=0.5)
    x = tf.constant(_signed_away_from_zero((2, 3, 3, 4), 1))
    layer.build(tuple(x.shape))
    layer.log_slope.assign([-3.0, -0.5, 0.0, 1.5])  # slopes exp(.) are positive for any weight
    z, log_det = layer.forward_and_log_det(x)
    negatives = (x.numpy() < 0).sum(axis=(1, 2))  # (B, C)
    assert np.allclose(log_det.numpy(), negatives @ np.array([-3.0, -0.5, 0.0, 1.5]), atol=1e-5)
    slope = np.exp([-3.0, -0.5, 0.0, 1.5])
    assert np.allclose(z.numpy(), np.where(x.numpy() < 0, x.numpy() * slope, x.numpy()), atol=1e-6)
    assert relative_error(layer.inverse(z), x) < 1e-6


def test_learnable_leaky_relu_scalar_slope_and_bad_arguments():
    layer = LearnableLeakyReLU(initial_slope=0.2, per_channel=False)
    layer.build((1, 2, 2, 3))
    assert tuple(layer.log_slope.shape) == ()
    assert abs(float(layer.slope) - 0.2) < 1e-6
    with pytest.raises(ValueError, match="initial_slope > 0"):
        LearnableLeakyReLU(initial_slope=0.0)
    with pytest.raises(ValueError, match=r"expects event shape \(2, 2, 3\), got \(2, 2, 4\)"):
        layer.forward(tf.zeros((1, 2, 2, 4)))


# ----------------------------------------------------------------------------- downsampling
def test_orthogonal_downsampling_starts_as_irevnet_squeeze_and_learns_a_rotation():
    layer = OrthogonalDownsampling()
    x = tf.constant(_wide_normal((2, 4, 4, 3), 2))
    layer.build(tuple(x.shape))
    assert relative_error(layer.forward(x), tf.nn.space_to_depth(x, 2)) == 0.0
    perturb_weights(layer, 0.1)
    q = layer.rotation().numpy()
    assert q.shape == (12, 12)
    assert np.max(np.abs(q.T @ q - np.eye(12))) < 1e-5
    assert abs(np.linalg.det(q.astype(np.float64)) - 1.0) < 1e-5
    # Not a bare space-to-depth any more: the channels are mixed.
    assert relative_error(layer.forward(x), tf.nn.space_to_depth(x, 2)) > 1e-2


def test_cayley_is_orthogonal_for_large_parameters():
    raw = tf.constant(3.0 * np.random.default_rng(0).standard_normal((6, 6)), tf.float64)
    q = orthogonal.cayley(raw).numpy()
    assert np.max(np.abs(q @ q.T - np.eye(6))) < 1e-12


def test_haar_downsampling_matches_the_wavelet_formulas():
    block = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)  # [[a, b], [c, d]]
    x = np.stack([block, 10 * block], axis=-1)[None]  # (1, 2, 2, 2)
    z = HaarDownsampling().forward(tf.constant(x)).numpy()[0, 0, 0]
    low, horizontal, vertical, diagonal = 5.0, -1.0, -2.0, 0.0
    expected = [low, 10 * low, horizontal, 10 * horizontal, vertical, 10 * vertical,
                diagonal, 10 * diagonal]  # grouped by sub-band, C channels each
    assert np.allclose(z, expected)
    image = tf.constant(_wide_normal((2, 4, 6, 3), 3))
    low_pass = HaarDownsampling().forward(image)[..., :3]
    assert relative_error(low_pass, 2.0 * tf.nn.avg_pool2d(image, 2, 2, "VALID")) < 1e-6


@pytest.mark.parametrize("cls", [OrthogonalDownsampling, HaarDownsampling])
@pytest.mark.parametrize("shape", [(2, 5, 4, 3), (2, 4, 3, 3)])
def test_downsampling_rejects_odd_height_or_width(cls, shape):
    with pytest.raises(ValueError, match=rf"\(H, W\) = \({shape[1]}, {shape[2]}\)"):
        cls().forward(tf.zeros(shape))


@pytest.mark.parametrize("cls", [OrthogonalDownsampling, HaarDownsampling])
def test_downsampling_checks_odd_sizes_at_call_time_when_built_without_them(cls):
    layer = cls()
    layer.build((None, None, None, 2))
    assert layer.forward(tf.zeros((1, 4, 2, 2))).shape == (1, 2, 1, 8)
    with pytest.raises(ValueError, match=r"\(H, W\) = \(4, 3\)"):
        layer.forward(tf.zeros((1, 4, 3, 2)))


@pytest.mark.parametrize("cls", [OrthogonalDownsampling, HaarDownsampling])
def test_downsampling_rejects_channel_mismatch_both_ways(cls):
    layer = cls()
    layer.build((2, 4, 4, 3))
    assert layer.output_event_shape == (2, 2, 12)
    with pytest.raises(ValueError, match=r"expects event shape \(4, 4, 3\), got \(4, 4, 2\)"):
        layer.forward(tf.zeros((2, 4, 4, 2)))
    inverse_error = r"\(inverse\) expects event shape \(2, 2, 12\), got \(2, 2, 11\)"
    with pytest.raises(ValueError, match=inverse_error):
        layer.inverse(tf.zeros((2, 2, 2, 11)))


def test_orthogonal_downsampling_factor_three():
    layer = OrthogonalDownsampling(factor=3)
    x = tf.constant(_wide_normal((1, 6, 3, 2), 4))
    layer.build(tuple(x.shape))
    perturb_weights(layer, 0.1)
    z = layer.forward(x)
    assert z.shape == (1, 2, 1, 18)
    assert relative_error(layer.inverse(z), x) < 1e-5
    with pytest.raises(ValueError, match="factor must be >= 2"):
        OrthogonalDownsampling(factor=1)
    assert math.isclose(float(tf.reduce_sum(tf.square(z))), float(tf.reduce_sum(tf.square(x))),
                        rel_tol=1e-5)
