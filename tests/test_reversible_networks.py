"""i-RevNet and RevNet as networks (issue 18, item 7): reconstruction from the final features,
memory-efficient gradients equal to autodiff's, serialisation, input checks."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinv.models import IRevNet, RevNet
from tfinv.nets import InjectivePadding

X = tf.constant(np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype("float32"))
Y = tf.constant([0, 3, 7, 9])


def _gradients(model, x, y):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    return loss, tape.gradient(loss, model.trainable_variables)


def _twins(cls, **kwargs):
    """The same network with reversible and with ordinary backprop, equal weights."""
    keras.utils.set_random_seed(3)
    reversible = cls(memory_efficient=True, **kwargs)
    ordinary = cls(memory_efficient=False, **kwargs)
    ordinary.set_weights(reversible.get_weights())
    return reversible, ordinary


def test_i_rev_net_reconstructs_the_input_from_its_final_features():
    keras.utils.set_random_seed(1)
    model = IRevNet(blocks_per_stage=(2, 2), channels=16, initial_downsampling=1, input_scale=0.5)
    for weight in model.stack.trainable_weights:  # Glorot residuals are small: make them matter
        weight.assign(weight * 3.0)
    z = model.features(X)
    assert tuple(z.shape) == (4, 2, 2, 64) == (4,) + model.feature_shape
    # the blocks are far from the identity: the features are not a rearrangement of the input
    assert np.abs(np.sort(z.numpy().ravel())[-64:] - np.sort(0.5 * X.numpy().ravel())[-64:]).max() > 0.1
    # float32: the rounding of z (|z| up to ~20 here) passes back through four residual subtractions
    assert float(tf.reduce_max(tf.abs(z))) < 50.0
    np.testing.assert_allclose(model.reconstruct(z).numpy(), X.numpy(), atol=2e-4)


def test_injective_padding_zero_channels_and_left_inverse():
    pad = InjectivePadding(6)
    y = pad(X)
    assert tuple(y.shape) == (4, 8, 8, 6)
    np.testing.assert_array_equal(y.numpy()[..., :5], 0.0)
    np.testing.assert_array_equal(y.numpy()[..., 5:], X.numpy())
    np.testing.assert_array_equal(pad.left_inverse(y).numpy(), X.numpy())
    with pytest.raises(ValueError, match="at most that many"):
        InjectivePadding(2)(tf.zeros((1, 2, 2, 3)))


@pytest.mark.parametrize("cls", [IRevNet, RevNet])
def test_reversible_backprop_matches_autodiff(cls):
    reversible, ordinary = _twins(cls, blocks_per_stage=(2, 1), channels=8)
    loss_r, grads_r = _gradients(reversible, X, Y)
    loss_o, grads_o = _gradients(ordinary, X, Y)
    np.testing.assert_allclose(loss_r.numpy(), loss_o.numpy(), rtol=1e-6)
    assert len(grads_r) == len(grads_o) > 0
    for g_r, g_o in zip(grads_r, grads_o):
        # every weight learns (with the zero padding appended, i-RevNet's first residual would not)
        assert float(tf.reduce_max(tf.abs(g_o))) > 0.0
        np.testing.assert_allclose(g_r.numpy(), g_o.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cls", [IRevNet, RevNet])
def test_networks_serialise(cls, tmp_path):
    keras.utils.set_random_seed(2)
    model = cls(blocks_per_stage=(1, 1), channels=8, input_scale=0.25)
    path = str(tmp_path / "net.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded(X).numpy(), model(X).numpy(), rtol=1e-5, atol=1e-6)


def test_networks_reject_bad_shapes():
    with pytest.raises(ValueError, match="channels must be even and at least the 4"):
        IRevNet(channels=2)
    with pytest.raises(ValueError, match="divisible by 8"):
        IRevNet(image_shape=(12, 12, 1), blocks_per_stage=(1, 1, 1))
    with pytest.raises(ValueError, match="channels must be even"):
        RevNet(channels=5)
    with pytest.raises(ValueError, match="expects images of shape"):
        RevNet(blocks_per_stage=(1,), channels=4)(tf.zeros((1, 6, 6, 1)))
