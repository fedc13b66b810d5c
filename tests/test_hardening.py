"""Library hardening: ActNorm on constant channels, empty batches, sample's arguments."""

import warnings

import numpy as np
import pytest
import tensorflow as tf

import tfinv
from tfinv import layers


@pytest.mark.parametrize("layer_class, shape, unit", [(layers.ActNorm, (16, 4, 4, 3), "channel"),
                                                      (layers.VectorActNorm, (16, 5, 3), "feature")])
def test_act_norm_on_a_constant_channel_keeps_scale_one_and_warns(layer_class, shape, unit):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 2.0 + 1.0
    x[..., 1] = 0.25  # constant channel / feature
    layer = layer_class(name="norm")
    layer.build(shape)
    with pytest.warns(RuntimeWarning, match=rf"{layer_class.__name__} 'norm': {unit}\(s\) \[1\] constant"):
        layer.initialize(tf.constant(x))
    log_scale = layer.log_scale.numpy()
    assert log_scale[1] == 0.0  # not log(1e6)
    z = layer.forward_and_log_det(tf.constant(x))[0].numpy()
    normal = [0, 2]
    np.testing.assert_allclose(z[..., normal].mean(axis=tuple(range(len(shape) - 1))), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[..., normal].std(axis=tuple(range(len(shape) - 1))), 1.0, rtol=1e-4)
    np.testing.assert_allclose(z[..., 1], 0.0, atol=1e-7)
    # A value 0.01 away from the constant stays 0.01 away (it became ~1e4 with scale 1/epsilon).
    shifted = x.copy()
    shifted[..., 1] += 0.01
    np.testing.assert_allclose(layer.forward_and_log_det(tf.constant(shifted))[0].numpy()[..., 1], 0.01, rtol=1e-4)
    assert layer_class.from_config(layer.get_config()).min_std == layer.min_std


def test_sequence_act_norm_names_its_constant_positions_and_keeps_their_scale_one():
    x = np.random.default_rng(2).standard_normal((16, 6, 2)).astype(np.float32) * 3.0 - 1.0
    x[:, 2, :] = 0.5  # position 2 constant in both channels, position 4 in channel 1 only
    x[:, 4, 1] = -0.25
    layer = layers.SequenceActNorm(name="norm")
    layer.build(x.shape)
    with pytest.warns(RuntimeWarning, match=r"SequenceActNorm 'norm': position\(s\) \[2, 4\] constant"):
        layer.initialize(tf.constant(x))
    log_scale = layer.log_scale.numpy()
    constant = np.zeros((6, 2), bool)
    constant[2, :] = constant[4, 1] = True
    assert np.all(log_scale[constant] == 0.0)
    np.testing.assert_allclose(log_scale[~constant], -np.log(x.std(axis=0)[~constant] + 1e-6), rtol=1e-5)
    np.testing.assert_allclose(layer.forward_and_log_det(tf.constant(x))[1].numpy(),
                               np.full(16, log_scale.sum()), rtol=1e-6)


def test_act_norm_without_constant_channels_does_not_warn():
    x = np.random.default_rng(1).standard_normal((8, 2, 2, 3)).astype(np.float32)
    layer = layers.ActNorm()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer.initialize(tf.constant(x))
    np.testing.assert_allclose(layer.log_scale.numpy(), -np.log(x.reshape(-1, 3).std(axis=0) + 1e-6), rtol=1e-5)


def test_initialize_refuses_an_empty_batch():
    with pytest.raises(ValueError, match="cannot initialise on an empty batch"):
        layers.ActNorm(name="a").initialize(tf.zeros((0, 4, 4, 3)))


def test_glow_on_an_empty_batch():
    glow = tfinv.models.Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=8, num_levels=17)
    z, log_det = glow.forward(np.zeros((0, 8, 8, 1), np.float32))
    assert z.shape == (0,) + glow.latent_shape and log_det.shape == (0,)
    assert glow.inverse(z).shape == (0, 8, 8, 1) and glow.log_prob(np.zeros((0, 8, 8, 1), np.float32)).shape == (0,)


@pytest.fixture(scope="module")
def flow():
    return tfinv.FlowModel([layers.ActNorm(), layers.InvConv1x1(seed=1)], input_shape=(2, 2, 2))


@pytest.mark.parametrize("n", [2.7, "3", True, 2.0, None])
def test_sample_refuses_a_count_that_is_not_an_int(flow, n):
    with pytest.raises(TypeError, match="n, the number of samples, as a positive int"):
        flow.sample(n)


@pytest.mark.parametrize("n", [0, -1])
def test_sample_refuses_a_count_below_one(flow, n):
    with pytest.raises(ValueError, match="n >= 1"):
        flow.sample(n)


@pytest.mark.parametrize("temperature", [float("inf"), float("nan"), 0.0, -1.0, 1e39])
def test_sample_refuses_a_temperature_that_is_not_finite_and_positive(flow, temperature):
    with pytest.raises(ValueError, match="finite temperature > 0"):
        flow.sample(2, temperature=temperature)


@pytest.mark.parametrize("temperature", ["0.7", True])
def test_sample_refuses_a_temperature_that_is_not_a_number(flow, temperature):
    with pytest.raises(TypeError, match="temperature as a real number"):
        flow.sample(2, temperature=temperature)


def test_sample_accepts_numpy_scalars(flow):
    assert flow.sample(np.int64(3), temperature=np.float32(0.5), seed=1).shape == (3, 2, 2, 2)
