"""Conditioning through the contract beyond the harness (tests/test_contract.py runs the
conditional cases): FlowModel's conditional API, training on (x, context) datasets, save/load,
TFP keyword passing, and clear errors for a missing, unexpected or misshapen context."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfinv
from tfinv import layers
from tfinv.models import Glow
from tfinv.testing.contract import perturb_weights, relative_error


def _data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 16.5, (n, 8, 8, 1)).astype(np.float32)
    labels = np.arange(n) % 10
    return x, np.eye(10, dtype=np.float32)[labels]


@pytest.fixture(scope="module")
def glow():
    keras.utils.set_random_seed(0)
    model = Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=8, context_shape=(10,),
                 learned_prior=True)
    x, c = _data()
    model.initialize(x, c)
    perturb_weights(model, 0.05)
    return model


def test_conditional_glow_log_prob_sample_and_distribution(glow):
    x, c = _data()
    log_prob = glow.log_prob(x, c)
    assert relative_error(glow.log_prob(x, c[::-1]), log_prob) > 1e-3
    assert relative_error(glow.as_distribution(c).log_prob(x), log_prob) < 1e-5
    assert relative_error(glow.bits_per_dim(x, c), -log_prob / (64 * np.log(2.0))) < 1e-6
    # One context for all samples equals the same context repeated; a call with (x, context).
    one = glow.sample(3, seed=1, context=c[2])
    assert relative_error(glow.sample(3, seed=1, context=np.tile(c[2:3], (3, 1))), one) == 0.0
    assert relative_error(glow.sample(3, seed=1, context=c[3]), one) > 1e-3
    assert relative_error(glow((x, c))[0], glow.forward(x, c)[0]) == 0.0


def test_conditional_errors_name_what_was_expected(glow):
    x, c = _data()
    with pytest.raises(ValueError, match=r"is conditional: pass context of shape \(batch, 10\)"):
        glow.log_prob(x)
    with pytest.raises(ValueError, match=r"context must have shape \(batch, 10\), got \(8, 3\)"):
        glow.log_prob(x, c[:, :3])
    with pytest.raises(ValueError, match="context batch 4 differs from the input batch 8"):
        glow.log_prob(x, c[:4])
    with pytest.raises(ValueError, match="is conditional: pass context"):
        glow.sample(2)
    plain = tfinv.FlowModel([layers.ActNorm()], input_shape=(8, 8, 1))
    with pytest.raises(ValueError, match=r"is unconditional \(context_shape=None\) but got a context"):
        plain.log_prob(x, c)
    with pytest.raises(ValueError, match="none of its layers uses a context"):
        tfinv.FlowModel([layers.ActNorm()], input_shape=(8, 8, 1), context_shape=(10,))
    coupling = layers.AffineCoupling(hidden_channels=4, context_shape=(3,))
    with pytest.raises(ValueError, match=r"AffineCoupling .* \(forward\) is conditional: pass context of shape \(batch, 3\)"):
        coupling.forward_and_log_det(np.zeros((1, 4, 4, 2), np.float32))


def test_fit_on_x_context_pairs_lowers_the_conditional_nll():
    keras.utils.set_random_seed(1)
    model = Glow((8, 8, 1), levels=1, steps_per_level=2, hidden_channels=8, context_shape=(10,))
    x, c = _data(32, seed=2)
    model.initialize(x, c)
    before = float(tf.reduce_mean(-model.log_prob(x, c)))
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(tf.data.Dataset.from_tensor_slices((x, c)).batch(16), epochs=4, verbose=0)
    after = float(tf.reduce_mean(-model.log_prob(x, c)))
    assert np.all(np.isfinite(history.history["loss"])) and after < before - 1.0, (before, after)
    # The context reaches the conditioners: their context encoders were trained.
    encoder = model.scales[0].steps[1].steps[2].context_encoder
    assert float(tf.reduce_max(tf.abs(encoder.project.kernel))) > 0
    assert np.isfinite(model.evaluate(tf.data.Dataset.from_tensor_slices((x, c)).batch(16), verbose=0)[0])


def test_conditional_glow_keras_round_trip(glow, tmp_path):
    x, c = _data()
    path = tmp_path / "conditional.keras"
    glow.save(path)
    loaded = tfinv.load_model(path)
    assert loaded.context_shape == (10,) and loaded.get_config() == glow.get_config()
    assert relative_error(loaded.log_prob(x, c), glow.log_prob(x, c)) == 0.0
    assert relative_error(loaded.sample(2, seed=3, context=c[1]), glow.sample(2, seed=3, context=c[1])) == 0.0


def test_tfp_api_passes_the_context_as_a_keyword():
    coupling = layers.AffineCoupling(hidden_channels=4, context_shape=(3,))
    x = tf.constant(np.random.default_rng(0).standard_normal((2, 4, 4, 2)).astype(np.float32))
    c = tf.constant(np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32))
    coupling.build(x.shape)
    perturb_weights(coupling, 0.2)
    z, log_det = coupling.forward_and_log_det(x, c)
    assert relative_error(coupling.forward(x, context=c), z) == 0.0
    assert relative_error(coupling.forward_log_det_jacobian(x, event_ndims=3, context=c), log_det) < 1e-6
    assert relative_error(coupling.inverse(z, context=c), x) < 1e-5
