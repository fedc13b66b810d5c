"""FlowGMM (issue 17): semi-supervised loss, Bayes-rule posteriors, fit, bad labels, save/load."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinv.models import FlowGMM
from tfinv.models.flow_gmm import check_labels, semi_supervised_labels

K = 4


def _model(seed=0):
    model = FlowGMM.glow((4, 4, 1), num_classes=K, levels=1, steps_per_level=2, hidden_channels=8,
                         num_levels=17, seed=seed, mean_scale=2.0)
    x = _data(16, seed)
    model.initialize(x)
    # non-identity weights: perturb every trainable weight so that no check passes at init
    rng = np.random.default_rng(seed + 7)
    for w in model.trainable_weights:
        w.assign(w.numpy() + 0.05 * rng.standard_normal(w.shape).astype(np.float32))
    return model


def _data(n, seed=1):
    return np.random.default_rng(seed).uniform(0.0, 17.0, (n, 4, 4, 1)).astype(np.float32)


def _gauss_log_prob(z, loc, log_scale):
    """log N(z; loc, diag(exp(2 log_scale))) in float64, summed over the event."""
    z, loc, log_scale = (np.asarray(a, np.float64) for a in (z, loc, log_scale))
    return np.sum(-0.5 * ((z - loc) / np.exp(log_scale)) ** 2 - log_scale - 0.5 * math.log(2 * math.pi), axis=-1)


def _hand_terms(model, x):
    z, log_det = model.forward(x)
    z, log_det = z.numpy().astype(np.float64), log_det.numpy().astype(np.float64)
    loc = model.base.loc.numpy().reshape(K, -1)
    log_scale = model.base.log_scale.numpy().reshape(K, -1)
    comp = np.stack([_gauss_log_prob(z.reshape(len(z), -1), loc[k], log_scale[k]) for k in range(K)], -1)
    return comp, log_det


def test_means_are_separated_and_fixed():
    model = _model()
    loc = model.base.loc.numpy().reshape(K, -1)
    assert not model.base.loc.trainable and not model.base.log_scale.trainable and not model.base.logits.trainable
    distances = np.linalg.norm(loc[:, None] - loc[None], axis=-1)[~np.eye(K, dtype=bool)]
    # mean_scale 2 in D = 16: pairwise distances ~ 2 sqrt(2 D) = 11.3, far beyond the unit scale
    assert distances.min() > 5.0


def test_labelled_loss_is_the_class_conditional_nll():
    model = _model()
    x = _data(8, seed=3)
    labels = np.array([0, 1, 2, 3, 3, 2, 1, 0])
    comp, log_det = _hand_terms(model, x)
    expected = -(comp[np.arange(8), labels] + log_det)
    got = model.negative_log_likelihood(x, labels).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # the loss fit minimises: compute_loss on the same batch is the mean of the per-example NLL
    loss = model.compute_loss(x, tf.constant(labels), model(x)).numpy()
    np.testing.assert_allclose(loss, expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(model.class_conditional_log_prob(x, labels).numpy(), -expected, rtol=1e-5)


def test_unlabelled_loss_is_the_marginal_nll_and_mixed_batches_pick_per_example():
    model = _model()
    x = _data(8, seed=4)
    comp, log_det = _hand_terms(model, x)
    marginal = np.log(np.mean(np.exp(comp - comp.max(-1, keepdims=True)), -1)) + comp.max(-1)
    expected = -(marginal + log_det)
    np.testing.assert_allclose(model.negative_log_likelihood(x, np.full(8, -1)).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(model.negative_log_likelihood(x).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(-model.log_prob(x).numpy(), expected, rtol=1e-5)
    labels = np.array([-1, 2, -1, 0, 1, -1, 3, -1])
    mixed = np.where(labels >= 0, -(comp[np.arange(8), np.maximum(labels, 0)] + log_det), expected)
    np.testing.assert_allclose(model.negative_log_likelihood(x, labels).numpy(), mixed, rtol=1e-5)
    # the two losses really differ on these examples (else the test could not tell them apart)
    assert np.min(np.abs(mixed - expected)[labels >= 0]) > 1e-3


def test_predict_proba_is_bayes_rule_over_components():
    model = _model()
    x = _data(10, seed=5)
    proba = model.predict_proba(x, batch_size=4)
    assert proba.shape == (10, K)
    np.testing.assert_allclose(proba.sum(-1), 1.0, atol=1e-6)
    z, _ = model.forward(x)
    logits = (model.base.component_log_prob(z) + model.base.log_weights).numpy().astype(np.float64)
    bayes = np.exp(logits - logits.max(-1, keepdims=True))
    bayes /= bayes.sum(-1, keepdims=True)
    np.testing.assert_allclose(proba, bayes, atol=1e-6)
    np.testing.assert_allclose(model.predict(x), proba, atol=1e-7)
    assert np.array_equal(model.predict_classes(x), np.argmax(bayes, -1))


def test_short_semi_supervised_fit_lowers_the_loss():
    model = _model(seed=2)
    x = _data(64, seed=6)
    labels = np.full(64, -1)
    labels[:8] = np.arange(8) % K
    before = float(model.negative_log_likelihood(x, labels).numpy().mean())
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False)  # no XLA probe: a fast test
    model.fit(x, labels, batch_size=32, epochs=6, verbose=0, shuffle=False)
    after = float(model.negative_log_likelihood(x, labels).numpy().mean())
    assert after < before - 1.0, (before, after)


def test_bad_labels_raise_clear_errors():
    model = _model()
    x = _data(4)
    with pytest.raises(ValueError, match=r"\[-1, 4\)"):
        model.negative_log_likelihood(x, np.array([0, 1, 4, -1]))
    with pytest.raises(ValueError, match=r"\[-1, 4\)"):
        model.fit(x, np.array([0, -2, 1, 1]), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"one label per example"):
        model.fit(x, np.array([0, 1, 1]), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"num_labelled must be in \[0, 6\]"):
        semi_supervised_labels(np.arange(6) % K, 7, K)
    with pytest.raises(ValueError, match=r"shape \(N, 4, 4, 1\)"):
        model.predict_proba(np.zeros((2, 8, 8, 1), np.float32))
    with pytest.raises(ValueError, match="integers"):
        check_labels(np.array([0.5, 1.0]), K)


def test_semi_supervised_labels_are_class_balanced():
    labels = np.repeat(np.arange(K), 10)
    kept = semi_supervised_labels(labels, 9, K, seed=3)
    assert np.sum(kept >= 0) == 9
    assert np.all(np.bincount(kept[kept >= 0], minlength=K) >= 2)
    assert np.array_equal(kept[kept >= 0], labels[kept >= 0])


def test_keras_round_trip(tmp_path):
    model = _model()
    x = _data(6, seed=8)
    path = str(tmp_path / "flowgmm.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, FlowGMM) and loaded.num_classes == K
    np.testing.assert_allclose(loaded.predict_proba(x), model.predict_proba(x), atol=1e-6)
    np.testing.assert_allclose(loaded.log_prob(x).numpy(), model.log_prob(x).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(loaded.base.loc.numpy(), model.base.loc.numpy())


# ---------------------------------------------------------------- consistency regulariser, sampling
def _consistent_model(weight=0.7, rampup=4):
    model = FlowGMM.glow((4, 4, 1), num_classes=K, levels=1, steps_per_level=2, hidden_channels=8,
                         num_levels=17, seed=0, mean_scale=2.0, consistency_weight=weight,
                         consistency_shift=1, consistency_rampup=rampup)
    model.initialize(_data(16, 0))
    rng = np.random.default_rng(7)
    for w in model.trainable_weights:
        w.assign(w.numpy() + 0.05 * rng.standard_normal(w.shape).astype(np.float32))
    return model


def test_translate_moves_each_example_with_zero_fill():
    model = _consistent_model()
    x = _data(3, seed=11)
    shifts = np.array([[1, 0], [0, -1], [-1, 1]])
    got = model.translate(tf.constant(x), tf.constant(shifts)).numpy()
    for image, (dy, dx), out in zip(x, shifts, got):
        expected = np.zeros_like(image)
        for i in range(4):
            for j in range(4):
                if 0 <= i - dy < 4 and 0 <= j - dx < 4:
                    expected[i, j] = image[i - dy, j - dx]
        np.testing.assert_array_equal(out, expected)


def test_consistency_loss_is_the_nll_under_the_label_predicted_on_the_translation():
    model = _consistent_model()
    x = _data(8, seed=12)
    labels = np.array([-1, 0, -1, -1, 2, -1, 1, -1])
    shifts = np.random.default_rng(3).integers(-1, 2, (8, 2))
    comp, log_det = _hand_terms(model, x)
    comp_shifted, _ = _hand_terms(model, model.translate(tf.constant(x), tf.constant(shifts)).numpy())
    predicted = np.argmax(comp_shifted, -1)  # uniform weights: Bayes' rule is the argmax of log N
    per_example = -(comp[np.arange(8), predicted] + log_det) * (labels == -1)
    z, ld = model.forward(x)
    got = model.consistency_loss(tf.constant(x), z, ld, tf.constant(labels), shifts=tf.constant(shifts))
    np.testing.assert_allclose(got.numpy(), per_example.mean(), rtol=1e-5)
    assert got.numpy() > 1.0  # a real NLL: the five unlabelled examples contribute


def test_compute_loss_adds_the_ramped_regulariser_in_training_only():
    model = _consistent_model(weight=0.7, rampup=4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    x, labels = _data(8, seed=13), tf.constant([-1, 1, -1, -1, 0, -1, -1, 3])
    plain = model.compute_loss(x, labels, model(x), training=False).numpy()
    np.testing.assert_allclose(plain, model.negative_log_likelihood(x, labels.numpy()).numpy().mean(), rtol=1e-5)
    tf.random.set_seed(5)
    total = model.compute_loss(x, labels, model(x), training=True).numpy()
    tf.random.set_seed(5)
    shifts = tf.random.uniform([8, 2], -1, 2, tf.int32)
    z, ld = model.forward(x)
    term = model.consistency_loss(tf.constant(x), z, ld, labels, shifts=shifts).numpy()
    assert term > 1.0  # a real NLL, not a vanishing term
    # step 0 of a 4-step ramp: lambda(0) = 0.7 / 4
    np.testing.assert_allclose(total - plain, 0.7 / 4 * term, rtol=1e-4)
    # (fit with the regulariser runs in tests/test_flowgmm_cli.py: `tfinv train --consistency-weight`)
    config = model.get_config()
    assert (config["consistency_weight"], config["consistency_shift"], config["consistency_rampup"]) == (0.7, 1, 4)
    with pytest.raises(ValueError, match="consistency_weight"):
        FlowGMM.glow((4, 4, 1), num_classes=K, levels=1, consistency_weight=-1.0)


def test_class_samples_land_on_their_means_and_interpolation_hits_its_ends():
    model = _model()
    labels = np.array([0, 3, 1, 2, 3])
    samples = model.sample_classes(labels, temperature=1e-3, seed=4)
    z, _ = model.forward(samples)
    loc = model.base.loc.numpy().reshape(K, -1)
    # z = mu_y + 1e-3 eps (|eps| ~ 4 in D = 16) up to the flow's float32 round trip
    assert np.max(np.linalg.norm(z.numpy() - loc[labels], axis=-1)) < 0.02
    assert np.array_equal(model.predict_classes(samples.numpy()), labels)
    path = model.interpolate(loc[0], loc[2], 3)
    z_path, _ = model.forward(path)
    expected = np.stack([loc[0], 0.5 * (loc[0] + loc[2]), loc[2]])
    np.testing.assert_allclose(z_path.numpy(), expected, atol=2e-3)
    with pytest.raises(ValueError, match=r"labels in \[0, 4\)"):
        model.sample_classes(np.array([0, -1]))
