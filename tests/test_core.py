"""The InvertibleLayer/FlowModel contract beyond the per-layer harness: the TFP API, Keras use,
FlowModel training and sampling, tf.distribute, and clear errors on bad input."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfinv
from tfinv import blocks, layers
from tfinv.models import Glow
from tfinv.testing.contract import perturb_weights, relative_error

tfb = tfp.bijectors
tfd = tfp.distributions


def _image(shape=(3, 4, 4, 4), seed=0):
    return tf.constant(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def _glow(**kw):
    config = dict(input_shape=(8, 8, 1), levels=2, steps_per_level=1, hidden_channels=8, num_levels=17)
    config.update(kw)
    return Glow(**config)


def _counts(n=4, seed=0, shape=(8, 8, 1)):
    return tf.constant(np.random.default_rng(seed).uniform(0.2, 16.8, (n,) + shape).astype(np.float32))


# ----------------------------------------------------------------------------- TFP API
def test_chain_and_transformed_distribution_match_manual_change_of_variables():
    x = _image()
    act, conv, coupling = layers.ActNorm(), layers.InvConv1x1(seed=1), layers.AffineCoupling(hidden_channels=8)
    flow = blocks.InvertibleSequential([act, conv, coupling])
    flow.build(x.shape)
    perturb_weights(flow, 0.1)
    # TFP's Chain applies its list right to left.
    chain = tfb.Chain([coupling, conv, act])
    z, log_det = flow.forward_and_log_det(x)
    assert relative_error(chain.forward(x), z) < 1e-6
    assert relative_error(chain.forward_log_det_jacobian(x, event_ndims=3), log_det) < 1e-5
    base = tfd.Independent(tfd.Normal(tf.zeros(x.shape[1:]), 1.0), 3)
    density = tfd.TransformedDistribution(base, tfb.Invert(chain))
    manual = base.log_prob(z) + log_det
    assert relative_error(density.log_prob(x), manual) < 1e-5
    assert density.sample(2, seed=(1, 2)).shape == (2,) + tuple(x.shape[1:])


def test_results_are_never_stale_after_assign():
    """TFP's result cache is off: a changed weight changes the next result (eager)."""
    layer = layers.ActNorm()
    x = _image()
    first = layer.forward(x)
    layer.log_scale.assign(tf.fill(layer.log_scale.shape, 0.5))
    second = layer.forward(x)
    assert relative_error(second, first * np.exp(0.5)) < 1e-6
    assert relative_error(layer.forward_log_det_jacobian(x, event_ndims=3), tf.fill([3], 16 * 4 * 0.5)) < 1e-6


def test_keras_call_is_forward_in_functional_and_sequential_models():
    conv = layers.InvConv1x1(seed=4)
    x = _image()
    inputs = keras.Input((4, 4, 4))
    functional = keras.Model(inputs, layers.Squeeze()(conv(inputs)))
    sequential = keras.Sequential([keras.Input((4, 4, 4)), conv])
    assert relative_error(sequential(x), conv.forward(x)) == 0.0
    assert functional(x).shape == (3, 2, 2, 16)
    assert conv.variables and conv.trainable_variables and conv.non_trainable_variables


def test_fldj_has_batch_shape_and_event_ndims_reduction():
    permute = layers.Permute(seed=1)
    x = _image()
    assert permute.forward_and_log_det(x)[1].shape == (3, 4, 4)
    assert permute.forward_log_det_jacobian(x, event_ndims=3).shape == (3,)
    squeeze = layers.Squeeze()
    assert squeeze.forward_event_shape((4, 4, 4)) == (2, 2, 16)
    assert squeeze.inverse_event_shape((2, 2, 16)) == (4, 4, 4)


# ----------------------------------------------------------------------------- FlowModel
def test_flow_model_log_prob_sample_and_distribution():
    model = _glow()
    x = _counts()
    model.initialize(x)
    perturb_weights(model, 0.05)
    log_prob = model.log_prob(x)
    assert log_prob.shape == (4,)
    assert relative_error(model.as_distribution().log_prob(x), log_prob) < 1e-5
    assert relative_error(model.bits_per_dim(x), -log_prob / (64 * np.log(2.0))) < 1e-6
    a, b = model.sample(3, seed=7), model.sample(3, seed=7)
    assert a.shape == (3, 8, 8, 1) and relative_error(a, b) == 0.0
    assert relative_error(model.sample(3, seed=8), a) > 1e-3
    # Temperature scales the noise: the sample is the inverse of temperature * eps.
    eps = tf.random.stateless_normal((3, 64), seed=[7, 0])
    assert relative_error(model.sample(3, temperature=0.5, seed=7), model.inverse(0.5 * eps)) < 1e-6


def test_initialize_normalises_the_first_actnorm():
    model = _glow()
    x = _counts(n=64, seed=3)
    model.initialize(x)
    step = model.scales[0].steps[1]
    h = model.scales[0].steps[0].forward(model.preprocess.forward(x))
    out = step.steps[0].forward(h)
    mean, var = tf.nn.moments(out, axes=[0, 1, 2])
    assert np.max(np.abs(mean)) < 1e-4 and np.max(np.abs(var - 1.0)) < 1e-3


@pytest.mark.parametrize("jit", [False, True])
def test_fit_lowers_the_loss(jit):
    model = _glow()
    data = _counts(n=32, seed=1)
    model.initialize(data)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=jit)
    before = float(tf.reduce_mean(-model.log_prob(data)))
    history = model.fit(tf.data.Dataset.from_tensor_slices(data).batch(16), epochs=4, verbose=0)
    after = float(tf.reduce_mean(-model.log_prob(data)))
    assert np.all(np.isfinite(history.history["loss"]))
    assert after < before - 1.0, (before, after)
    assert "bits_per_dim" in history.history
    # The reported loss is the per-example NLL in nats; bits/dim is that over D ln 2.
    np.testing.assert_allclose(
        history.history["bits_per_dim"][-1], history.history["loss"][-1] / (64 * np.log(2.0)), rtol=1e-5
    )


def test_keras_file_round_trip_of_glow(tmp_path):
    model = _glow()
    x = _counts()
    model.initialize(x)
    perturb_weights(model, 0.05)
    path = tmp_path / "glow.keras"
    model.save(path)
    loaded = tfinv.load_model(path)
    assert isinstance(loaded, Glow)
    assert relative_error(loaded.log_prob(x), model.log_prob(x)) == 0.0
    assert relative_error(loaded.sample(2, seed=1), model.sample(2, seed=1)) == 0.0


def test_loaded_compiled_model_keeps_its_compile_config_and_optimizer_state(tmp_path):
    """A saved compiled FlowModel loads compiled, without Keras's "compile() was not called"
    warning, and its next training step equals the original model's to the bit (same optimizer
    settings and Adam moments)."""
    import warnings

    model = tfinv.FlowModel([layers.InvertibleDense(), layers.VectorActNorm()], input_shape=(3,))
    x = np.random.default_rng(2).standard_normal((16, 3)).astype(np.float32)
    model.initialize(x)
    model.compile(optimizer=keras.optimizers.Adam(1e-2, beta_1=0.8))
    model.fit(x, batch_size=16, epochs=1, shuffle=False, verbose=0)
    path = tmp_path / "flow.keras"
    model.save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = tfinv.load_model(path)
    assert not [w for w in caught if "compile()" in str(w.message)], [str(w.message) for w in caught]
    assert loaded.compiled and isinstance(loaded.optimizer, keras.optimizers.Adam)
    assert loaded.optimizer.beta_1 == 0.8 and int(loaded.optimizer.iterations) == 1
    # "auto" is saved as asked, to be resolved again on the loading machine
    config = loaded.get_compile_config()
    assert (config["jit_compile"], config["steps_per_execution"]) == ("auto", "auto")
    for trained in (model, loaded):
        trained.fit(x, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)


def test_mirrored_strategy_loss_and_update_match_single_device(tmp_path):
    """Per-example loss under tf.distribute: 2 logical CPUs give the loss and update of 1 device."""
    script = textwrap.dedent(
        """
        import json, sys, numpy as np, tensorflow as tf, keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tfinv.models import Glow
        from tfinv.testing.contract import perturb_weights
        data = np.random.default_rng(0).uniform(0.2, 16.8, (8, 8, 8, 1)).astype("float32")

        initial, initial_trainable = [], []

        def run(strategy):
            with strategy.scope():
                model = Glow((8, 8, 1), levels=1, steps_per_level=1, hidden_channels=4, num_levels=17)
                if not initial:
                    perturb_weights(model, 0.05, seed=0)
                    initial.extend(model.get_weights())
                    initial_trainable.extend(v.numpy() for v in model.trainable_variables)
                model.set_weights(initial)
                model.compile(optimizer=keras.optimizers.SGD(1e-3))
            ds = tf.data.Dataset.from_tensor_slices(data).batch(8)
            loss = model.fit(ds, epochs=1, verbose=0).history["loss"][0]
            return loss, [v.numpy() for v in model.trainable_variables]

        one_loss, one_w = run(tf.distribute.OneDeviceStrategy("/cpu:0"))
        two_loss, two_w = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(one_w, two_w))
        moved = max(float(np.max(np.abs(a - b))) for a, b in zip(one_w, initial_trainable))
        print(json.dumps({"one": one_loss, "two": two_loss, "weight_diff": diff, "moved": moved}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert abs(result["two"] - result["one"]) <= 1e-4 * abs(result["one"]), result
    # The SGD step moves weights by ~1e-2; the two strategies agree to float32 summation order.
    assert result["moved"] > 1e-3 and result["weight_diff"] < 1e-5, result


# ----------------------------------------------------------------------------- bad input
def test_wrong_rank_names_layer_and_expectation():
    with pytest.raises(ValueError, match=r"ActNorm 'act_norm.*' \(forward\) expects inputs of rank >= 4"):
        layers.ActNorm().forward(tf.zeros((4, 4, 3)))


def test_channel_mismatch_after_build():
    conv = layers.InvConv1x1()
    conv.forward(tf.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"expects event shape \(4, 4, 3\), got \(4, 4, 5\)"):
        conv.forward(tf.zeros((1, 4, 4, 5)))
    with pytest.raises(ValueError, match=r"\(inverse\) expects event shape"):
        conv.inverse(tf.zeros((1, 4, 4, 2)))


def test_odd_height_for_squeeze():
    with pytest.raises(ValueError, match=r"Squeeze '.*' needs H and W divisible by 2, got \(H, W\) = \(7, 8\)"):
        layers.Squeeze().forward(tf.zeros((1, 7, 8, 1)))


def test_integer_dtype_is_rejected():
    with pytest.raises(TypeError, match=r"InvConv1x1 .* expects a floating-point tensor, got dtype int32"):
        layers.InvConv1x1().forward(tf.zeros((1, 2, 2, 2), tf.int32))


def test_inverse_before_build_is_a_clear_error():
    with pytest.raises(ValueError, match="is not built"):
        layers.ActNorm().inverse(tf.zeros((1, 2, 2, 2)))


def test_validate_args_catches_nan_and_out_of_range():
    layer = layers.ActNorm(validate_args=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="ActNorm .* got NaN or Inf"):
        layer.forward(tf.constant(np.full((1, 2, 2, 1), np.nan, np.float32)))
    logit = layers.LogitPreprocess(num_levels=17, validate_args=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expects x in \[0, 17\]"):
        logit.forward(tf.fill((1, 2, 2, 1), 20.0))


def test_coupling_configuration_errors():
    with pytest.raises(ValueError, match="needs at least 2 channels, got 1; use mask='checkerboard'"):
        layers.AffineCoupling().forward(tf.zeros((1, 4, 4, 1)))
    with pytest.raises(ValueError, match="mask must be one of"):
        layers.AffineCoupling(mask="diagonal")
    bad = keras.Sequential([keras.layers.Conv2D(3, 1)])
    with pytest.raises(ValueError, match=r"conditioner must output 4 channels \(2 per transformed channel\)"):
        layers.AffineCoupling(conditioner=bad).forward(tf.zeros((1, 4, 4, 4)))


def test_user_conditioner_round_trips_through_config():
    conditioner = keras.Sequential([keras.layers.Conv2D(8, 3, padding="same")])
    layer = layers.AdditiveCoupling(conditioner=conditioner)
    x = _image((2, 4, 4, 16))
    layer.build(x.shape)
    clone = layers.AdditiveCoupling.from_config(layer.get_config())
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    assert relative_error(clone.forward(x), layer.forward(x)) == 0.0


def test_glow_and_flow_model_shape_errors():
    with pytest.raises(ValueError, match=r"Glow with 2 levels needs H and W divisible by 4, got \(H, W\) = \(6, 8\)"):
        Glow((6, 8, 1), levels=2)
    model = _glow()
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 8, 8, 1\), got \(2, 8, 8, 3\)"):
        model.log_prob(tf.zeros((2, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"z must have shape \(batch, 64\)"):
        model.inverse(tf.zeros((2, 63)))
    with pytest.raises(TypeError, match="x must be floating point"):
        model.forward(tf.zeros((2, 8, 8, 1), tf.int32))
    with pytest.raises(ValueError, match="sample needs n >= 1"):
        model.sample(0)
    with pytest.raises(ValueError, match="non-empty list"):
        tfinv.FlowModel([], input_shape=(2,))
    with pytest.raises(TypeError, match="takes InvertibleLayer instances, got Dense"):
        tfinv.FlowModel([keras.layers.Dense(2)], input_shape=(2,))


def test_load_model_rejects_foreign_files(tmp_path):
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    plain_path = tmp_path / "plain.keras"
    plain.save(plain_path)
    with pytest.raises(ValueError, match="holds a Sequential, not a tfinv FlowModel"):
        tfinv.load_model(plain_path)
    junk = tmp_path / "junk.keras"
    junk.write_text("not a zip")
    with pytest.raises(ValueError, match="is not a .keras model archive"):
        tfinv.load_model(junk)
    with pytest.raises(FileNotFoundError):
        tfinv.load_model(tmp_path / "missing.keras")
