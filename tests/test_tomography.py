"""CT for the inverse problems (issue 15): the Radon transform and filtered back-projection as
fixed matrices agree with scikit-image, the FBP layer serialises inside a ConditionalGlow, the
phantoms, the CNN-regressor baseline's parameter budget, and bad input."""

import json

import keras
import numpy as np
import pytest
from skimage.transform import iradon, radon

import tfinv
from tfinv import inverse_problems as ip
from tfinv.models import ConditionalGlow
from tfinv.testing.contract import perturb_weights, relative_error


@pytest.mark.parametrize("circle, arc", [(False, 180.0), (True, 120.0)])
def test_radon_and_fbp_matrices_equal_scikit_image(circle, arc):
    op = ip.Tomography(noise_std=0.2, angles=5, arc=arc, circle=circle)
    np.testing.assert_allclose(op.theta, np.arange(5) * arc / 5)
    x = ip.random_ellipses(3, 8, seed=1)
    y = op.apply(x)
    assert y.shape == (3,) + op.observation_shape((8, 8, 1)) == (3, 8 if circle else 12, 5, 1)
    for i in range(3):  # float32 products of float64 matrices: 1e-6 relative
        assert relative_error(y[i, ..., 0], radon(x[i, ..., 0].astype(np.float64), op.theta, circle=circle)) <= 1e-6
    fbp = op.fbp(y, (8, 8, 1))
    expected = iradon(y[2, ..., 0].astype(np.float64), op.theta, output_size=8, filter_name="ramp", circle=circle)
    assert relative_error(fbp[2, ..., 0], expected) <= 1e-6
    assert relative_error(np.asarray(op.fbp_layer((8, 8, 1))(y)), fbp) <= 1e-6
    noisy = op(x, seed=3)
    np.testing.assert_array_equal(noisy, op(x, seed=3))
    # 3 * D * 5 residuals of std 0.2: the sample std within 4 standard errors (0.2 / sqrt(2 n)).
    n = noisy.size
    assert abs(np.std(noisy - y) - 0.2) < 4 * 0.2 / np.sqrt(2 * n)


def test_low_dose_poisson_sinogram_is_the_post_log_of_poisson_counts():
    op = ip.Tomography(photons=200.0, angles=5, circle=True)
    x = ip.random_ellipses(1, 8, seed=4)
    mu = op.attenuation_for(8)
    assert mu == 0.25 and op.noise_std is None
    clean = op.apply(x)[0].astype(np.float64)
    y = op(np.repeat(x, 2000, axis=0), seed=5).astype(np.float64)
    np.testing.assert_array_equal(y[:3], op(np.repeat(x, 3, axis=0), seed=5)[:3])
    counts = 200.0 * np.exp(-mu * y)  # back from the post-log sinogram: whole photon counts
    assert np.max(np.abs(counts - np.round(counts))) < 1e-3
    # Mean and variance of the counts of each of the 40 bins = lambda = I0 exp(-mu R x): the mean
    # within 5 standard errors sqrt(lambda / 2000), the variance within 5 of sqrt(2 / 1999) lambda.
    lam = 200.0 * np.exp(-mu * clean)
    assert np.all(np.abs(counts.mean(0) - lam) < 5 * np.sqrt(lam / 2000))
    assert np.all(np.abs(counts.var(0, ddof=1) - lam) < 5 * np.sqrt(2 / 1999) * lam + 5 * np.sqrt(lam / 2000))
    # A detector bin that counted no photon: counts raised to 0.1, y = -log(0.1 / I0) / mu (finite).
    starved = ip.Tomography(photons=1e-3, attenuation=0.5, angles=5, circle=True)(np.repeat(x, 50, axis=0), seed=6)
    zero, one = -np.log(ip.tomography.MIN_COUNT / 1e-3) / 0.5, -np.log(1.0 / 1e-3) / 0.5
    assert np.all(np.isfinite(starved)) and np.mean(np.isclose(starved, zero, rtol=1e-6)) > 0.99
    assert np.all(np.isclose(starved, zero, rtol=1e-6) | (starved <= one + 1e-5))


def test_phantoms():
    u = ip.random_ellipses(16, 16, seed=0)
    assert u.shape == (16, 16, 16, 1) and u.dtype == np.float32
    assert u.min() >= 0.0 and u.max() <= 1.0 and u.std() > 0.05
    np.testing.assert_array_equal(u, ip.random_ellipses(16, 16, seed=0))
    assert not np.array_equal(u, ip.random_ellipses(16, 16, seed=1))
    coords = (np.arange(16) + 0.5) / 16 * 2 - 1
    outside = (coords[:, None] ** 2 + coords[None, :] ** 2) > 1.0
    assert np.all(u[:, outside] == 0.0)
    sl = ip.shepp_logan(32)
    # The 400 x 400 phantom (values 0..1, a thin outer ring of 1) anti-aliased down: max 0.71 at 32.
    assert sl.shape == (1, 32, 32, 1) and sl.min() == 0.0 and 0.6 < sl.max() <= 1.0


@pytest.mark.parametrize("make, message", [
    (lambda: ip.Tomography(0.0), "noise_std must be a finite number > 0"),
    (lambda: ip.Tomography(0.1, angles=0), r"angles >= 1"),
    (lambda: ip.Tomography(0.1, angles=4, arc=200), r"arc in \(0, 180\]"),
    (lambda: ip.Tomography(0.1, angles=[[1.0]]), "1-D list of finite degrees"),
    (lambda: ip.Tomography(0.1).apply(np.zeros((1, 8, 6, 1))), r"square single-channel images \(H, H, 1\)"),
    (lambda: ip.Tomography(0.1).apply(np.zeros((1, 8, 8, 2))), r"square single-channel images"),
    (lambda: ip.Tomography(0.1, angles=3).fbp(np.zeros((1, 12, 4, 1)), (8, 8, 1)),
     r"sinograms of shape \(N,\) \+ \(12, 3, 1\)"),
    (lambda: ip.Tomography(photons=0), "photons must be a finite number > 0, got 0"),
    (lambda: ip.Tomography(photons=float("inf")), "photons must be a finite number > 0"),
    (lambda: ip.Tomography(photons="many"), "photons must be a finite number > 0, got 'many'"),
    (lambda: ip.Tomography(photons=100, attenuation=-1), "attenuation must be a finite number > 0, got -1"),
    (lambda: ip.Tomography(0.1, photons=100), "either noise_std .* or photons .*, got noise_std=0.1 and photons=100"),
    (lambda: ip.Tomography(attenuation=0.1), "attenuation=0.1 applies to Poisson noise: pass photons"),
    (lambda: ip.random_ellipses(0), "n >= 1"),
    (lambda: ip.FilteredBackProjection((4, 2, 1), (2, 2, 1), matrix=np.zeros((3, 3))), r"shape \(4, 8\)"),
])
def test_bad_tomography_input_names_what_was_expected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_conditional_glow_on_sinograms_saves_its_fbp_layer(tmp_path):
    keras.utils.set_random_seed(0)
    op = ip.Tomography(0.1, angles=4, circle=True)
    x, y = op.pairs(ip.random_ellipses(16, 8, seed=2), seed=3)
    model = ConditionalGlow((8, 8, 1), observation_shape=op.observation_shape((8, 8, 1)),
                            conditioning_network=op.conditioning_network((8, 8, 1), features=4, hidden=8),
                            levels=2, steps_per_level=1, hidden_channels=8)
    model.initialize(x + 0.01, y)
    perturb_weights(model, 0.05)
    assert np.all(np.isfinite(model.log_prob(x + 0.01, y)))
    fbp = model.conditioning_network.layers[1]
    assert isinstance(fbp, ip.FilteredBackProjection) and not fbp.trainable_weights
    assert relative_error(np.asarray(fbp(y)), op.fbp(y, (8, 8, 1))) <= 1e-6
    model.save(tmp_path / "ct.keras")
    loaded = tfinv.load_model(tmp_path / "ct.keras")
    assert json.loads(json.dumps(loaded.get_config())) == json.loads(json.dumps(model.get_config()))
    # Every weight restored, the fixed FBP matrix included (its config holds only the shapes).
    assert len(loaded.weights) == len(model.weights)
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    assert relative_error(np.asarray(loaded.conditioning_network.layers[1](y)), op.fbp(y, (8, 8, 1))) <= 1e-6


def test_matched_cnn_regressor_is_the_widest_within_the_budget():
    budget = 5000
    model = ip.matched_cnn_regressor((4, 4, 1), (8, 8, 1), budget)
    count = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    wider = ip.cnn_regressor((4, 4, 1), (8, 8, 1), model.get_layer("conv_0").filters + 1)
    assert count <= budget < sum(int(np.prod(w.shape)) for w in wider.trainable_weights)
    assert model.output_shape == (None, 8, 8, 1)
    with pytest.raises(ValueError, match="has <= 10 parameters"):
        ip.matched_cnn_regressor((4, 4, 1), (8, 8, 1), 10)


def test_matched_unet_regressor_is_the_widest_within_the_budget_and_adds_a_residual():
    budget = 3000
    fbp = ip.Tomography(0.1, angles=3, circle=True).fbp_layer((8, 8, 1))
    model = ip.matched_unet_regressor((8, 3, 1), (8, 8, 1), budget, depth=1, preprocessing=fbp)
    width = model.get_layer("down_0_a").filters

    def count(m):
        return sum(int(np.prod(w.shape)) for w in m.trainable_weights)

    assert count(model) <= budget < count(ip.unet_regressor((8, 3, 1), (8, 8, 1), width + 1, 1, preprocessing=fbp))
    # The output is the FBP plus a learned residual: zero residual weights give the FBP itself.
    for weight in model.get_layer("residual").weights:
        weight.assign(np.zeros(weight.shape, np.float32))
    y = np.random.default_rng(0).standard_normal((2, 8, 3, 1)).astype(np.float32)
    assert relative_error(model.predict(y, verbose=0), np.asarray(fbp(y))) <= 1e-6
    with pytest.raises(ValueError, match=r"depth 3 needs H and W divisible by 8, got \(4, 4\)"):
        ip.unet_regressor((4, 4, 1), (4, 4, 1), 2, depth=3)
    with pytest.raises(ValueError, match="has <= 5 parameters"):
        ip.matched_unet_regressor((4, 4, 1), (4, 4, 1), 5, depth=1)
