"""QuadCoupling (CInC Flow's Quad-coupling) beyond the contract harness (tests/test_contract.py):
the structure of the map against a hand-written reference, and the channel-count error."""

import numpy as np
import pytest
import tensorflow as tf

from tfinv.layers.quad_coupling import QuadCoupling
from tfinv.testing.cases import cases

#: The contract registry's case (tests/test_contract.py runs the harness on it).
CASE = next(c for c in cases() if c.name == "QuadCoupling")


@pytest.fixture(scope="module")
def built():
    return CASE.build()


def test_matches_reference_formula(built):
    """z1 = x1; z_k = (x_k + t_k) * sigmoid(h_k + 2), (t_k, h_k) from the *input* quarters < k."""
    layer, x = built
    z, log_det = layer.forward_and_log_det(x)
    q = x.shape[-1] // 4
    xs = [x[..., i * q : (i + 1) * q] for i in range(4)]
    expected, expected_ld = [xs[0]], np.zeros(x.shape[0])
    for k in range(1, 4):
        theta = np.asarray(layer.conditioners[k - 1](tf.concat(xs[:k], axis=-1)), np.float64)
        shift, raw = theta[..., 0::2], theta[..., 1::2]
        scale = 1.0 / (1.0 + np.exp(-(raw + 2.0)))
        expected.append((np.asarray(xs[k], np.float64) + shift) * scale)
        expected_ld += np.log(scale).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(np.asarray(z), np.concatenate(expected, -1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(log_det), expected_ld, rtol=1e-5, atol=1e-5)


def test_jacobian_is_block_lower_triangular(built):
    """Quarter k of z does not depend on quarters > k of x (autoregressive over quarters)."""
    layer, x = built
    x = tf.convert_to_tensor(x)
    q = x.shape[-1] // 4
    with tf.GradientTape() as tape:
        tape.watch(x)
        z = layer(x)
    jac = np.asarray(tape.batch_jacobian(z, x))  # (B, H, W, C, H, W, C)
    for k in range(4):
        later = jac[..., k * q : (k + 1) * q, :, :, :][..., (k + 1) * q :]
        assert np.all(later == 0.0), f"quarter {k + 1} of z depends on later input quarters"
    assert np.any(jac[..., 3 * q :, :, :, : q] != 0.0)  # x4 really sees x1


def test_fresh_layer_scales_by_sigmoid_2():
    layer = QuadCoupling(hidden_channels=4)
    x = tf.random.stateless_normal((1, 3, 3, 4), seed=[0, 0])
    z, _ = layer.forward_and_log_det(x)
    s = 1.0 / (1.0 + np.exp(-2.0))
    np.testing.assert_allclose(np.asarray(z[..., :1]), np.asarray(x[..., :1]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(z[..., 1:]), s * np.asarray(x[..., 1:]), rtol=1e-5)


@pytest.mark.parametrize("channels", [2, 6, 7])
def test_channels_not_divisible_by_4(channels):
    layer = QuadCoupling(hidden_channels=4)
    with pytest.raises(ValueError, match=rf"divisible by 4.*expected.*got C={channels}"):
        layer.build((2, 4, 4, channels))


def test_get_config():
    config = QuadCoupling(hidden_channels=5, name="q").get_config()
    assert config["hidden_channels"] == 5
    clone = QuadCoupling.from_config(config)
    assert clone.hidden_channels == 5 and clone.name == "q"
