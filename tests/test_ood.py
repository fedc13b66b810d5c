"""OOD scores (issue 17): AUROC vs a hand-computed rank statistic, typicality, complexity, shape errors."""

import math
import zlib

import numpy as np
import pytest

from tfinv.core.flow_model import FlowModel
from tfinv.layers.logit_preprocess import LogitPreprocess
from tfinv.ood import (TypicalityTest, auroc, complexity_bits, complexity_corrected_scores,
                       log_likelihood_scores)


def _pairwise_auroc(a, b):
    wins = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x in a for y in b)
    return wins / (len(a) * len(b))


def test_auroc_matches_the_pairwise_rank_statistic_with_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 6, 37).astype(float)  # many ties
    b = rng.integers(1, 8, 23).astype(float)
    assert auroc(a, b) == pytest.approx(_pairwise_auroc(a, b), abs=1e-12)
    a, b = rng.normal(0.3, 1, 50), rng.normal(0, 1, 41)
    assert auroc(a, b) == pytest.approx(_pairwise_auroc(a, b), abs=1e-12)
    assert auroc([3.0, 4.0], [1.0, 2.0]) == 1.0 and auroc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert auroc([1.0, 2.0], [2.0, 1.0]) == 0.5
    with pytest.raises(ValueError, match="1-D"):
        auroc(np.zeros((2, 2)), [1.0])


def _flow():
    # LogitPreprocess is a fixed non-identity bijection, so log p is exact and known below
    return FlowModel([LogitPreprocess(17)], input_shape=(4, 4, 1))


def test_log_likelihood_scores_match_the_model_and_batching():
    model = _flow()
    x = np.random.default_rng(1).uniform(0, 17, (10, 4, 4, 1)).astype(np.float32)
    np.testing.assert_allclose(log_likelihood_scores(model, x, batch_size=3), model.log_prob(x).numpy(), rtol=1e-6)


def test_ood_set_of_another_shape_is_refused():
    model = _flow()
    with pytest.raises(ValueError, match=r"shape \(N, 4, 4, 1\) like the model's data, got \(3, 8, 8, 1\)"):
        log_likelihood_scores(model, np.zeros((3, 8, 8, 1)), what="OOD set")
    test = TypicalityTest(model)
    with pytest.raises(ValueError, match="not fitted"):
        test.example_scores(np.zeros((3, 4, 4, 1)))
    with pytest.raises(ValueError, match="bootstrap_x must have shape"):
        test.fit(np.ones((3, 4, 4, 1)), np.ones((3, 4, 4)))


def test_complexity_is_the_zlib_length_and_corrects_the_likelihood():
    x = np.zeros((2, 4, 4, 1), np.float32)
    x[1] = np.random.default_rng(2).integers(0, 17, (4, 4, 1)) + 0.7
    bits = complexity_bits(x, 17)
    expected = [8 * len(zlib.compress(np.clip(np.floor(im), 0, 16).astype(np.uint8).tobytes(), 9)) for im in x]
    np.testing.assert_array_equal(bits, expected)
    assert bits[1] > bits[0]  # noise compresses worse than a constant image
    model = _flow()
    scores = complexity_corrected_scores(model, x, 17)
    np.testing.assert_allclose(scores, model.log_prob(x).numpy() / math.log(2) + bits, rtol=1e-6)


def test_typicality_entropy_threshold_and_scores():
    model = _flow()
    rng = np.random.default_rng(3)
    inside = rng.uniform(4, 13, (400, 4, 4, 1)).astype(np.float32)
    held = rng.uniform(4, 13, (200, 4, 4, 1)).astype(np.float32)
    test = TypicalityTest(model, batch_size=128).fit(inside, held, test_batch_size=5, num_bootstrap=2000,
                                                      alpha=0.05, seed=0)
    log_p = model.log_prob(inside).numpy()
    assert test.entropy == pytest.approx(-log_p.mean(), rel=1e-6)
    # the bootstrap statistic is a mean of M draws: its 95 % quantile is close to the one of the
    # exact bootstrap distribution; compare with a fresh, independent bootstrap of 20000 batches
    held_lp = model.log_prob(held).numpy()
    picks = np.random.default_rng(9).integers(0, len(held_lp), (20000, 5))
    reference = np.quantile(np.abs(-held_lp[picks].mean(-1) - test.entropy), 0.95)
    assert test.threshold == pytest.approx(reference, rel=0.08)
    # in-distribution batches pass at about the nominal rate; far-off (edge-of-range) data fails
    far = rng.uniform(0, 0.5, (50, 4, 4, 1)).astype(np.float32)
    assert test.is_ood(far) and not test.is_ood(held[:5])
    in_stats = test.batch_statistics(held, 400, seed=1)
    assert np.mean(in_stats > test.threshold) < 0.05 + 3 * math.sqrt(0.05 * 0.95 / 400)
    scores = test.example_scores(held[:7])
    # |log p| ~ 40 in float32: the difference of two such numbers is exact to ~40 * 6e-8 each
    np.testing.assert_allclose(scores, -np.abs(-held_lp[:7] - test.entropy), atol=2e-5)
    assert auroc(test.batch_scores(held, 100), test.batch_scores(far, 100)) > 0.99


# ---------------------------------------------------------------- the remedy: bottlenecked conditioners
def test_bottleneck_glow_conditioners_squeeze_through_their_code_and_survive_save_load(tmp_path):
    import keras

    from tfinv.nets import BottleneckConvNet
    from tfinv.ood import bottleneck_glow

    model = bottleneck_glow((4, 4, 1), levels=1, steps_per_level=2, hidden_channels=6, bottleneck=3, seed=1)
    x = np.random.default_rng(4).uniform(0, 17, (6, 4, 4, 1)).astype(np.float32)
    model.initialize(x)
    rng = np.random.default_rng(5)
    for w in model.trainable_weights:
        w.assign(w.numpy() + 0.1 * rng.standard_normal(w.shape).astype(np.float32))
    nets = [layer for layer in model._flatten_layers() if isinstance(layer, BottleneckConvNet)]
    assert len(nets) == 2 and all(n.out_channels == 4 and n.encode.units == 3 for n in nets)  # C=4 after squeeze
    # the conditioner's output depends on its input only through the 3-dimensional code: the
    # Jacobian of its 16 outputs w.r.t. its 8 inputs has rank <= 3 (a plain convolutional conditioner has no such bound)
    import tensorflow as tf

    # At 8 input points (a single point can sit where every ReLU of the 3-unit code is off, and
    # the Jacobian is then 0): rank <= 3 at every point, and the map is not constant.
    net = nets[0]
    largest = 0.0
    for _ in range(8):
        inputs = tf.constant(rng.standard_normal((1, 2, 2, 2)).astype(np.float32))
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            out = net(inputs)
        jacobian = tape.jacobian(out, inputs).numpy().reshape(16, 8)
        singular = np.linalg.svd(jacobian, compute_uv=False)
        assert np.all(singular[3:] <= 1e-6 * max(singular[0], 1e-3)), singular
        largest = max(largest, float(singular[0]))
    assert largest > 1e-3, largest
    z, log_det = model.forward(x)
    back = model.inverse(z).numpy()
    np.testing.assert_allclose(back, x, rtol=1e-4, atol=1e-4)
    path = str(tmp_path / "bottleneck.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.log_prob(x).numpy(), model.log_prob(x).numpy(), rtol=1e-6)
