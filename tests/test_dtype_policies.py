"""Keras dtype policies end to end: float64 everywhere, dtype reaching sub-layers and default
conditioners, mixed_float16/mixed_bfloat16 for fit and every public method with float32
log-dets, and inputs of another float dtype cast on every entry point.

Tolerances: float64 round trips <= 1e-12 relative; mixed-precision log_prob vs the float32 model
with the same weights <= 2e-3 (float16) / 2e-2 (bfloat16) relative to max|log_prob| (measured:
see the report); float64 input vs float32 input <= 1e-6 relative (one rounding of the input).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfinv import layers, nets
from tfinv.models import Glow
from tfinv.testing.contract import dtype_policy, perturb_weights, relative_error

tfb = tfp.bijectors
tfd = tfp.distributions


@pytest.fixture(autouse=True)
def restore_policy():
    before = keras.config.dtype_policy().name
    yield
    after = keras.config.dtype_policy().name
    keras.config.set_dtype_policy(before)
    assert after == before, f"a test left the global dtype policy at {after}"


def _glow(**kw):
    return Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=8, num_levels=17, **kw)


def _counts(n=4, seed=0):
    return np.random.default_rng(seed).uniform(0.5, 16.5, (n, 8, 8, 1)).astype(np.float32)


def _perturbed_glow(**kw):
    model = _glow(**kw)
    model.initialize(_counts(8, seed=3))
    perturb_weights(model, 0.05, seed=1)
    return model


def test_float64_policy_glow_round_trip_and_density_are_float64():
    with dtype_policy("float64"):
        model = _perturbed_glow()
    x = tf.constant(_counts(), tf.float64)
    z, log_det = model.forward(x)
    assert {str(v.dtype) for v in model.weights} == {"float64"}
    assert z.dtype == log_det.dtype == model.log_prob(x).dtype == tf.float64
    assert relative_error(model.inverse(z), x) <= 1e-12
    z2 = tf.random.stateless_normal(z.shape, seed=[1, 2], dtype=tf.float64)
    assert relative_error(model.forward(model.inverse(z2))[0], z2) <= 1e-12
    assert model.sample(3, seed=4).dtype == tf.float64
    dist = model.as_distribution()
    assert dist.dtype == tf.float64
    np.testing.assert_allclose(dist.log_prob(x), model.log_prob(x), rtol=1e-12)


def test_layer_dtype_reaches_default_conditioner_and_glow_sub_layers():
    coupling = layers.AffineCoupling(hidden_channels=8, dtype="float64")
    x = tf.constant(np.random.default_rng(0).standard_normal((2, 4, 4, 4)))  # float64
    coupling.build(x.shape)
    perturb_weights(coupling, 0.1)
    assert coupling.conditioner.dtype_policy.name == "float64"
    assert {str(v.dtype) for v in coupling.weights} == {"float64"}
    z, log_det = coupling.forward_and_log_det(x)
    assert z.dtype == log_det.dtype == tf.float64
    assert relative_error(coupling.inverse(z), x) <= 1e-12

    model = _perturbed_glow(dtype="float64")  # the global policy stays float32
    assert keras.config.dtype_policy().name == "float32"
    assert {str(v.dtype) for v in model.weights} == {"float64"}
    counts = tf.constant(_counts(), tf.float64)
    z, _ = model.forward(counts)
    assert z.dtype == tf.float64 and relative_error(model.inverse(z), counts) <= 1e-12
    # The dtype survives the config round trip.
    clone = Glow.from_config(model.get_config())
    assert {str(v.dtype) for v in clone.weights} == {"float64"}


def test_user_conditioner_keeps_its_own_dtype():
    conditioner = nets.GlowConvNet(8, 4, dtype="float32")
    coupling = layers.AffineCoupling(conditioner=conditioner, dtype="float64")
    coupling.build((2, 4, 4, 4))
    assert conditioner.dtype_policy.name == "float32"


@pytest.mark.parametrize("policy,half,tol", [("mixed_float16", tf.float16, 2e-3),
                                             ("mixed_bfloat16", tf.bfloat16, 2e-2)])
def test_mixed_precision_glow_fit_and_every_public_method(policy, half, tol):
    reference = _perturbed_glow()
    with dtype_policy(policy):
        model = _glow()
        model.set_weights(reference.get_weights())
        x = _counts(8)
        z, log_det = model.forward(x)
        assert z.dtype == half and log_det.dtype == tf.float32
        x_back, inverse_log_det = model.inverse_and_log_det(z)
        assert x_back.dtype == half and inverse_log_det.dtype == tf.float32
        log_prob = model.log_prob(x)
        assert log_prob.dtype == tf.float32
        scale = float(np.max(np.abs(reference.log_prob(x))))
        err = float(np.max(np.abs(log_prob - reference.log_prob(x)))) / scale
        assert err <= tol, f"{policy} log_prob differs from float32 by {err:.2e} (relative)"
        samples = model.sample(4, temperature=0.7, seed=2)
        assert samples.dtype == half and np.all(np.isfinite(np.asarray(tf.cast(samples, tf.float32))))
        dist = model.as_distribution()
        assert dist.log_prob(x).dtype == tf.float32 and dist.sample(2, seed=(1, 2)).dtype == tf.float32
        # Same math; the input reaches the half dtype by another rounding path (numpy vs TF).
        assert relative_error(dist.log_prob(x), log_prob) <= tol
        # A TFP composition of mixed-precision layers with a float32 base.
        conv, coupling = layers.InvConv1x1(seed=1), layers.AffineCoupling(hidden_channels=8)
        chain = tfb.Chain([coupling, conv])
        images = tf.constant(np.random.default_rng(5).standard_normal((4, 4, 4, 4)).astype(np.float32))
        density = tfd.TransformedDistribution(tfd.Independent(tfd.Normal(tf.zeros((4, 4, 4)), 1.0), 3),
                                              tfb.Invert(chain))
        assert density.log_prob(images).dtype == tf.float32
        assert coupling.forward_and_log_det(images)[0].dtype == half
        # fit (Keras wraps the optimizer in loss scaling under mixed_float16).
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        history = model.fit(tf.data.Dataset.from_tensor_slices(x).batch(4), epochs=2, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        assert {str(v.dtype) for v in model.trainable_variables} == {"float32"}


def test_other_float_inputs_are_cast_on_every_entry_point():
    model = _perturbed_glow()
    x32 = _counts()
    x64 = tf.constant(x32, tf.float64)
    z32, ld32 = model.forward(x32)
    z64, ld64 = model.forward(x64)
    assert z64.dtype == tf.float32 and relative_error(z64, z32) <= 1e-6
    assert relative_error(model.log_prob(x64), model.log_prob(x32)) <= 1e-6
    assert relative_error(model.as_distribution().log_prob(x64), model.log_prob(x32)) <= 1e-6
    assert relative_error(model.inverse(tf.cast(z32, tf.float64)), model.inverse(z32)) <= 1e-6
    assert np.isfinite(model.bits_per_dim(tf.cast(x32, tf.float16))).all()
    layer = layers.InvConv1x1(seed=2)
    images = np.random.default_rng(1).standard_normal((2, 4, 4, 4))
    z, log_det = layer.forward_and_log_det(tf.constant(images))  # float64 into a float32 layer
    assert z.dtype == log_det.dtype == tf.float32
    assert relative_error(z, layer.forward_and_log_det(images.astype(np.float32))[0]) <= 1e-6
    # Through TFP the layer is dtype-preserving.
    assert layer.forward(tf.constant(images)).dtype == tf.float64
    with pytest.raises(TypeError, match="expects a floating-point tensor, got dtype int32"):
        layer.forward_and_log_det(tf.zeros((1, 4, 4, 4), tf.int32))
    with pytest.raises(TypeError, match="x must be floating point, got dtype int32"):
        model.forward(tf.zeros((1, 8, 8, 1), tf.int32))
