"""TFP sees tfinv's weights: Chain, Invert, TransformedDistribution and FlowModel.as_distribution
list every Keras weight's underlying tf.Variable, and TFP's own training loop trains them."""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfinv import blocks, layers
from tfinv.models import Glow
from tfinv.testing.contract import perturb_weights

tfb = tfp.bijectors
tfd = tfp.distributions


def _ids(variables):
    return sorted(id(v) for v in variables)


def _underlying(layer_or_model):
    return [v.value for v in layer_or_model.trainable_variables]


def _image(shape=(16, 4, 4, 4), seed=0):
    return tf.constant(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def _three_layers(x):
    stack = [layers.ActNorm(), layers.InvConv1x1(seed=1), layers.AffineCoupling(hidden_channels=8)]
    for layer in stack:
        layer.build(x.shape)
        perturb_weights(layer, 0.1)
    return stack


def test_chain_invert_and_transformed_distribution_list_every_weight():
    x = _image()
    act, conv, coupling = _three_layers(x)
    expected = _underlying(act) + _underlying(conv) + _underlying(coupling)
    # ActNorm 2, InvConv1x1's LU factors, the coupling's conditioner (a plain Keras sub-layer).
    assert len(expected) == 2 + len(conv.trainable_variables) + len(coupling.conditioner.trainable_variables)
    assert len(coupling.conditioner.trainable_variables) > 0
    chain = tfb.Chain([coupling, conv, act])
    assert _ids(chain.trainable_variables) == _ids(expected)
    assert _ids(tfb.Invert(chain).trainable_variables) == _ids(expected)
    assert _ids(tfb.Invert(conv).trainable_variables) == _ids(_underlying(conv))
    base = tfd.Independent(tfd.Normal(tf.zeros(x.shape[1:]), 1.0), 3)
    dist = tfd.TransformedDistribution(base, tfb.Invert(chain))
    assert _ids(dist.trainable_variables) == _ids(expected)
    assert all(isinstance(v, tf.Variable) for v in dist.trainable_variables)
    # Keras's own view is unchanged: Keras variables.
    assert all(isinstance(v, keras.Variable) for v in coupling.trainable_variables)


def test_tfp_training_loop_lowers_the_nll_and_moves_the_keras_weights():
    x = _image()
    act, conv, coupling = _three_layers(x)
    base = tfd.Independent(tfd.Normal(tf.zeros(x.shape[1:]), 1.0), 3)
    dist = tfd.TransformedDistribution(base, tfb.Invert(tfb.Chain([coupling, conv, act])))
    before_weights = [v.numpy() for v in act.trainable_variables]

    def nll():
        return -tf.reduce_mean(dist.log_prob(x))

    before = float(nll())
    optimizer = keras.optimizers.Adam(1e-2)
    for _ in range(10):  # the idiom written out: tape over TFP's variable list
        with tf.GradientTape() as tape:
            loss = nll()
        grads = tape.gradient(loss, dist.trainable_variables)
        assert all(g is not None for g in grads)
        optimizer.apply_gradients(zip(grads, dist.trainable_variables))
    after = float(nll())
    assert after < before - 0.5, (before, after)  # 10 Adam steps at 1e-2 move it by > 1 nat here
    assert max(float(np.max(np.abs(v.numpy() - b))) for v, b in zip(act.trainable_variables, before_weights)) > 1e-3


def test_weights_created_after_the_composition_are_listed():
    conv, coupling = layers.InvConv1x1(seed=2), layers.AffineCoupling(hidden_channels=8)
    chain = tfb.Chain([coupling, conv])
    assert chain.trainable_variables == ()
    chain.forward(_image())  # builds both layers eagerly on first use
    assert _ids(chain.trainable_variables) == _ids(_underlying(conv) + _underlying(coupling))


def test_frozen_layer_and_non_trainable_weights_follow_keras():
    x = _image()
    act, conv, coupling = _three_layers(x)
    coupling.trainable = False
    chain = tfb.Chain([coupling, conv, act])
    assert _ids(chain.trainable_variables) == _ids(_underlying(act) + _underlying(conv))
    # InvConv1x1 keeps non-trainable weights (permutation, signs): listed in `variables` only.
    fixed = [v.value for v in conv.non_trainable_variables]
    assert fixed, "InvConv1x1 was expected to hold non-trainable weights"
    listed = {id(v) for v in chain.variables}
    assert all(id(v) in listed for v in fixed)
    assert not any(id(v) in {id(t) for t in chain.trainable_variables} for v in fixed)


def test_as_distribution_of_glow_trains_with_tfp_and_fit_still_works():
    model = Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=8, num_levels=17)
    x = tf.constant(np.random.default_rng(1).uniform(0.5, 16.5, (16, 8, 8, 1)).astype(np.float32))
    model.initialize(x)
    dist = model.as_distribution()
    assert _ids(dist.trainable_variables) == _ids(_underlying(model))
    assert len(dist.trainable_variables) == len(model.trainable_variables) > 10

    def nll():
        return -tf.reduce_mean(dist.log_prob(x))

    before = float(nll())
    # TFP's own loop (traced by TFP) over TFP's variable list.
    tfp.math.minimize(nll, num_steps=5, optimizer=keras.optimizers.Adam(1e-3),
                      trainable_variables=dist.trainable_variables)
    after = float(nll())
    assert after < before, (before, after)
    # The same weights, seen by Keras: fit keeps working after TFP training.
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(tf.data.Dataset.from_tensors(x), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_invertible_sequential_and_reversible_stack_expose_nested_weights():
    x = _image((4, 4, 4, 4))
    seq = blocks.InvertibleSequential([layers.ActNorm(), blocks.GlowStep(hidden_channels=8, seed=1)])
    seq.build(x.shape)
    assert len(seq.trainable_variables) > 4
    assert _ids(tfb.Invert(seq).trainable_variables) == _ids(_underlying(seq))


def test_as_distribution_is_never_stale_after_assign():
    """The model's TFP bijector recomputes: after a weight changes, log_prob follows (eager)."""
    model = Glow((8, 8, 1), levels=1, steps_per_level=1, hidden_channels=8, num_levels=17)
    x = tf.constant(np.random.default_rng(2).uniform(0.5, 16.5, (4, 8, 8, 1)).astype(np.float32))
    dist = model.as_distribution()
    first = dist.log_prob(x)
    act_norm_log_scale = next(v for v in model.trainable_variables if "act_norm/log_scale" in v.path)
    act_norm_log_scale.assign(tf.fill(act_norm_log_scale.shape, 0.3))
    np.testing.assert_allclose(dist.log_prob(x), model.log_prob(x), rtol=1e-6)
    assert float(tf.reduce_max(tf.abs(dist.log_prob(x) - first))) > 1.0
