"""Base distributions of `FlowModel` (tfinv.core.distributions): densities against independent
formulas, the noise reparameterisation used by sampling and export, serialisation, and their use
in a model (log_prob, sample, as_distribution, fit, .keras round trip)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfinv
from tfinv import layers
from tfinv.core import distributions
from tfinv.testing.contract import perturb_weights, relative_error


def _built(base, shape):
    base.build((None,) + tuple(shape))
    return base


def _normal_log_pdf(z, loc, scale):
    return -0.5 * ((z - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi)


# ----------------------------------------------------------------------------- densities
def test_diagonal_gaussian_log_prob_and_reparameterisation():
    base = _built(distributions.DiagonalGaussian(), (3,))
    base.loc.assign([0.5, -1.0, 2.0])
    base.log_scale.assign([0.1, -0.3, 0.7])
    z = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    expected = _normal_log_pdf(z, np.array([0.5, -1.0, 2.0]), np.exp([0.1, -0.3, 0.7])).sum(-1)
    assert relative_error(base.log_prob(z), expected) < 1e-6
    eps = np.ones((2, 3), np.float32)
    expected = np.array([0.5, -1.0, 2.0]) + 0.5 * np.exp([0.1, -0.3, 0.7])
    np.testing.assert_allclose(base.sample_latent(eps, 0.5), np.tile(expected, (2, 1)), rtol=1e-6)


def test_gaussian_mixture_log_prob_and_component_log_prob():
    base = _built(distributions.GaussianMixture(num_components=3, seed=1), (2,))
    perturb_weights(base, 0.3, seed=2)
    loc, log_scale, logits = (v.numpy().astype(np.float64) for v in (base.loc, base.log_scale, base.logits))
    z = np.random.default_rng(3).standard_normal((5, 2))
    per_component = _normal_log_pdf(z[:, None], loc[None], np.exp(log_scale)[None]).sum(-1)
    log_w = logits - np.log(np.exp(logits).sum())
    assert relative_error(base.component_log_prob(z.astype(np.float32)), per_component) < 1e-5
    mixture = np.log(np.exp(per_component + log_w).sum(-1))
    assert relative_error(base.log_prob(z.astype(np.float32)), mixture) < 1e-5
    assert relative_error(base.distribution().log_prob(z.astype(np.float32)), mixture) < 1e-5


def test_gaussian_mixture_sampling_picks_components_by_their_weights():
    """Inverse-CDF component choice from the extra normal: each component's frequency is within
    5 binomial standard deviations of its weight (n = 20000)."""
    base = _built(distributions.GaussianMixture(num_components=3, mean_scale=20.0, seed=0), (2,))
    base.logits.assign(np.log([0.2, 0.5, 0.3]).astype(np.float32))
    base.log_scale.assign(np.full((3, 2), np.log(0.1), np.float32))
    n = 20000
    eps = tf.random.stateless_normal((n,) + base.noise_shape, seed=[4, 0])
    z = base.sample_latent(eps).numpy()
    nearest = np.argmin(((z[:, None] - base.loc.numpy()[None]) ** 2).sum(-1), axis=1)
    freq = np.bincount(nearest, minlength=3) / n
    for f, w in zip(freq, [0.2, 0.5, 0.3]):
        assert abs(f - w) < 5 * math.sqrt(w * (1 - w) / n), freq
    fixed = base.sample_latent(eps[:10], 0.5, component=tf.fill([10], 2)).numpy()
    np.testing.assert_allclose(fixed, base.loc.numpy()[2] + 0.5 * 0.1 * eps[:10, :2].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dims, area", [(2, 2 * np.pi), (3, 4 * np.pi)])
def test_radial_density_integrates_to_the_half_normal_radius(dims, area):
    """``P(|z| < R)`` from ``log_prob`` in polar coordinates (sphere area written out) equals the
    half-normal CDF ``erf(R / sqrt 2)``: checks the ``(D-1) log r`` Jacobian and the area term."""
    base = _built(distributions.Radial(), (dims,))
    radius = 1.7
    r = np.linspace(1e-4, radius, 4001)
    points = np.zeros((len(r), dims), np.float32)
    points[:, 0] = r
    density = np.exp(base.log_prob(points).numpy().astype(np.float64))
    mass = np.trapezoid(density * area * r ** (dims - 1), r)
    assert abs(mass - math.erf(radius / math.sqrt(2))) < 1e-4


def test_radial_in_one_dimension_is_the_standard_normal():
    base = _built(distributions.Radial(), (1,))
    z = np.linspace(-3, 3, 13).astype(np.float32)[:, None]
    assert relative_error(base.log_prob(z), _normal_log_pdf(z[:, 0], 0.0, 1.0)) < 1e-6


def test_radial_samples_have_half_normal_radii():
    """Radii of 20000 draws in D=16: mean sqrt(2/pi) within 5 standard errors (sd = sqrt(1 - 2/pi))."""
    base = _built(distributions.Radial(), (16,))
    eps = tf.random.stateless_normal((20000,) + base.noise_shape, seed=[1, 0])
    radii = np.linalg.norm(base.sample_latent(eps).numpy(), axis=-1)
    assert abs(radii.mean() - math.sqrt(2 / math.pi)) < 5 * math.sqrt(1 - 2 / math.pi) / math.sqrt(20000)
    np.testing.assert_allclose(np.linalg.norm(base.sample_latent(eps[:3], 0.5).numpy(), axis=-1),
                               0.5 * np.abs(eps[:3, -1].numpy()), rtol=1e-5)


def test_unknown_base_is_a_clear_error():
    with pytest.raises(ValueError, match=r"base must be a BaseDistribution or one of \['diagonal'"):
        distributions.get("laplace")


# ----------------------------------------------------------------------------- in a model
def _flow(base):
    flow = tfinv.FlowModel([layers.VectorActNorm(), layers.VectorInvLinear(seed=1)], input_shape=(4,), base=base)
    perturb_weights(flow, 0.2, seed=0)
    return flow


@pytest.mark.parametrize("name", ["normal", "diagonal", "mixture", "radial"])
def test_model_sample_log_prob_and_distribution_honour_the_base(name, tmp_path):
    flow = _flow(name)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    z, log_det = flow.forward(x)
    assert relative_error(flow.log_prob(x), flow.base.log_prob(z) + log_det) < 1e-6
    assert relative_error(flow.as_distribution().log_prob(x), flow.log_prob(x)) < 1e-5
    eps = tf.random.stateless_normal((3,) + flow.base.noise_shape, seed=[7, 0])
    expected = flow.inverse(flow.base.sample_latent(eps, 0.8))
    assert relative_error(flow.sample(3, temperature=0.8, seed=7), expected) < 1e-6
    path = tmp_path / f"{name}.keras"
    flow.save(path)
    loaded = tfinv.load_model(path)
    assert type(loaded.base) is type(flow.base)
    assert relative_error(loaded.log_prob(x), flow.log_prob(x)) < 1e-6
    assert relative_error(loaded.sample(3, seed=2), flow.sample(3, seed=2)) < 1e-6


def test_fit_trains_the_base_parameters():
    keras.utils.set_random_seed(0)
    flow = tfinv.FlowModel([layers.VectorActNorm()], input_shape=(3,), base="diagonal")
    data = 3.0 + np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32)
    flow.compile(optimizer=keras.optimizers.Adam(0.05))
    before = flow.base.loc.numpy().copy()
    flow.fit(tf.data.Dataset.from_tensor_slices(data).batch(32), epochs=3, verbose=0)
    assert np.max(np.abs(flow.base.loc.numpy() - before)) > 0.05
