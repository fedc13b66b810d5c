"""HCL (issue 17): task-change detection on batch statistics, replay terms, snapshots at changes."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinv.continual import HybridContinualLearner, TaskChangeDetector
from tfinv.models import FlowGMM

K = 4


def test_detector_flags_each_jump_once_and_never_the_learning_drift():
    rng = np.random.default_rng(0)
    # task 1: NLL falls while learning (drift -0.2 per batch, noise 1), then jumps by +15 twice
    stream = np.concatenate([100 - 0.2 * np.arange(60) + rng.normal(0, 1, 60),
                             103 - 0.2 * np.arange(50) + rng.normal(0, 1, 50),
                             110 - 0.1 * np.arange(40) + rng.normal(0, 1, 40)])
    detector = TaskChangeDetector(window=20, num_sigmas=6.0, warmup=10)
    flags = [detector.update(s) for s in stream]
    assert detector.changes == [60, 110] and sum(flags) == 2
    # the threshold is mu + 6 sigma (sample std) of the statistics since the last change
    recent = stream[110:150][-20:]
    assert detector.threshold() == pytest.approx(recent.mean() + 6 * recent.std(ddof=1), rel=1e-12)
    with pytest.raises(ValueError, match="warmup <= window"):
        TaskChangeDetector(window=5, warmup=10)
    with pytest.raises(ValueError, match="finite"):
        detector.update(float("nan"))


def _model():
    model = FlowGMM.glow((4, 4, 1), num_classes=K, levels=1, steps_per_level=2, hidden_channels=8,
                         num_levels=17, seed=0, mean_scale=2.0)
    model.initialize(np.random.default_rng(1).uniform(0, 17, (16, 4, 4, 1)).astype(np.float32))
    rng = np.random.default_rng(2)
    for w in model.trainable_weights:
        w.assign(w.numpy() + 0.05 * rng.standard_normal(w.shape).astype(np.float32))
    model.inference_mode = "eager"  # the math is under test, not the compiled paths (no XLA compiles)
    return model


def test_replay_terms_match_their_definitions():
    model = _model()
    learner = HybridContinualLearner(model, "generative_replay", temperature=0.5, weight=1.0)
    learner.old.inference_mode = "eager"
    components = tf.constant([0, 2, 2, 1], tf.int32)
    eps = tf.constant(np.random.default_rng(3).standard_normal((4, 16)), tf.float32)
    x_r, z_r = learner.replay(components, eps)
    loc = model.base.loc.numpy().reshape(K, -1)
    np.testing.assert_allclose(z_r.numpy(), loc[[0, 2, 2, 1]] + 0.5 * eps.numpy(), rtol=1e-6)
    # the frozen copy maps its replayed inputs back onto the drawn latents
    z_back, _ = learner.old.forward(x_r)
    np.testing.assert_allclose(z_back.numpy(), z_r.numpy(), atol=2e-4)
    expected = -np.mean(model.class_conditional_log_prob(x_r.numpy(), components.numpy()).numpy())
    np.testing.assert_allclose(learner.replay_loss(components, eps).numpy(), expected, rtol=1e-5)
    # FR: zero while the model equals its frozen copy (up to the float32 round trip), then the
    # squared latent distance once the model moves
    learner.mode, learner.weight = "functional_regularisation", 2.0
    assert learner.replay_loss(components, eps).numpy() < 1e-5
    for w in model.trainable_weights:
        w.assign(w + 0.05)
    z_new, _ = model.forward(x_r)
    expected = 2.0 * np.mean(np.sum((z_new.numpy() - z_r.numpy()) ** 2, -1))
    assert expected > 0.1
    np.testing.assert_allclose(learner.replay_loss(components, eps).numpy(), expected, rtol=1e-4)
    learner.mode = "naive"
    assert learner.replay_loss(components, eps).numpy() == 0.0


def test_a_detected_change_freezes_the_current_model_and_the_classes_seen():
    model = _model()
    # a detector that flags the fourth batch: three equal statistics, then anything higher
    detector = TaskChangeDetector(window=3, num_sigmas=1.0, warmup=3, min_sigma=1e-3)
    learner = HybridContinualLearner(model, "generative_replay", keras.optimizers.Adam(1e-3), detector,
                                     replay_size=4, seed=0, run_eagerly=True)
    learner.old.inference_mode = "eager"
    x = np.random.default_rng(4).uniform(4, 13, (6, 4, 4, 1)).astype(np.float32)
    before = [w.copy() for w in learner.old.get_weights()]
    detector.history = [-1e9] * 3  # any real NLL is far above: the first step is a change
    report = learner.step(x, np.array([0, 1, 0, 1, 0, 1]))
    assert report["change"] and learner.replay_classes == []  # nothing seen before the first batch
    snapshot = [w.copy() for w in model.get_weights()]
    detector.history = [-1e9] * 3
    report = learner.step(x, np.array([2, 2, 2, 2, 2, 2]))
    assert report["change"] and learner.replay_classes == [0, 1]
    # the frozen copy holds the weights of the moment of the change (after step 1, before step 2)
    for old, kept in zip(learner.old.get_weights(), snapshot):
        np.testing.assert_array_equal(old, kept)
    assert any(np.max(np.abs(a - b)) > 0 for a, b in zip(before, snapshot))
    assert any(np.max(np.abs(a - b)) > 0 for a, b in zip(model.get_weights(), snapshot))  # step 2 trained
    assert math.isfinite(report["loss"]) and learner.seen == {0, 1, 2}
    with pytest.raises(ValueError, match="labelled batches"):
        learner.step(x, np.array([0, -1, 0, 1, 0, 1]))
    with pytest.raises(ValueError, match="mode must be one of"):
        HybridContinualLearner(model, "ewc")


def test_non_finite_replays_are_left_out_and_non_finite_steps_skipped():
    model = _model()
    learner = HybridContinualLearner(model, "functional_regularisation", run_eagerly=True)
    learner.old.inference_mode = "eager"
    components = tf.constant([0, 1, 2], tf.int32)
    eps = np.random.default_rng(5).standard_normal((3, 16)).astype(np.float32)
    for w in model.trainable_weights:
        w.assign(w + 0.05)
    finite = learner.replay_loss(components[:2], tf.constant(eps[:2])).numpy()
    eps[2, 3] = np.inf  # an overflowing draw: that replay is left out
    assert np.isfinite(learner.replay_loss(components, tf.constant(eps)).numpy())
    np.testing.assert_allclose(learner.replay_loss(components, tf.constant(eps)).numpy(), finite, rtol=1e-5)
    weights = [w.copy() for w in model.get_weights()]
    x = np.full((2, 4, 4, 1), np.nan, np.float32)
    loss, applied = learner._train(tf.constant(x), tf.constant([0, 1]), components, tf.constant(eps), False)
    assert not np.isfinite(loss.numpy()) and not bool(applied)
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
