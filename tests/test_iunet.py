"""iUNet (issue 18, item 5): learnable orthogonal resampling and the fully invertible U-Net."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfinv.layers import InvertibleDownsampling, InvertibleUpsampling
from tfinv.models import IUNet
from tfinv.ops import orthogonal

X = tf.random.stateless_normal((2, 8, 8, 2), seed=(4, 5))


@pytest.mark.parametrize("method", orthogonal.METHODS)
def test_orthogonal_parameterisations(method):
    raw = tf.random.stateless_normal((3, 5, 5), seed=(1, 2), dtype=tf.float64)
    q = orthogonal.orthogonal_matrix(raw, method).numpy()
    np.testing.assert_allclose(q @ np.swapaxes(q, -1, -2), np.broadcast_to(np.eye(5), q.shape), atol=1e-12)
    if method == "exp":  # against the exact matrix exponential of the skew part
        exact = tf.linalg.expm(orthogonal.skew_symmetric(raw)).numpy()
        np.testing.assert_allclose(q, exact, atol=1e-12)
    assert np.abs(q - np.eye(5)).max() > 0.1


def test_haar_initialisation_is_the_haar_wavelet_transform():
    down = InvertibleDownsampling(init="haar")
    z = down(X).numpy()  # channel c * 4 + i: sub-band i of input channel c
    a, b, c, d = (X.numpy()[:, i::2, j::2] for i in (0, 1) for j in (0, 1))
    bands = orthogonal.haar_butterfly(a, b, c, d)
    for channel in range(2):
        for band in range(4):
            np.testing.assert_allclose(z[..., channel * 4 + band], bands[band][..., channel], atol=1e-5)


@pytest.mark.parametrize("method", orthogonal.METHODS)
def test_resampling_trains_away_from_its_initialisation_and_stays_orthogonal(method):
    down = InvertibleDownsampling(method=method)
    down.build(X.shape)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(down(X)[..., ::4] ** 2)  # the low-pass energy
    grad = tape.gradient(loss, down.rotation_weight)
    assert float(tf.reduce_max(tf.abs(grad))) > 1e-3  # Householder at the axes is not stuck either
    down.rotation_weight.assign(down.rotation_weight - 0.1 * grad)
    q = down.kernel_matrices().numpy()
    assert np.abs(q - orthogonal.haar_matrix(2)).max() > 1e-3
    np.testing.assert_allclose(q @ np.swapaxes(q, -1, -2), np.broadcast_to(np.eye(4), q.shape), atol=1e-6)
    # the layer's log-det is 0: the float32 matrices must have |det| = 1 to float32 rounding
    # (the exponential's squarings run in float64; in float32 they left ~1e-6 per matrix)
    assert np.abs(np.linalg.slogdet(q.astype(np.float64))[1]).max() < 3e-7
    # the energy (an orthogonal map's invariant) and the round trip hold for the moved weights
    z = down(X)
    np.testing.assert_allclose(float(tf.reduce_sum(z**2)), float(tf.reduce_sum(X**2)), rtol=1e-5)
    np.testing.assert_allclose(down.inverse_and_log_det(z)[0].numpy(), X.numpy(), atol=1e-5)


def test_upsampling_of_an_equal_downsampling_is_its_inverse():
    down, up = InvertibleDownsampling(method="cayley"), InvertibleUpsampling(method="cayley")
    down.build(X.shape)
    up.build((2, 4, 4, 8))
    weight = tf.random.stateless_normal(down.rotation_weight.shape, seed=(7, 8))
    down.rotation_weight.assign(weight)
    up.rotation_weight.assign(weight)
    np.testing.assert_allclose(up(down(X)).numpy(), X.numpy(), atol=1e-5)


def test_iunet_channels_and_memory_efficient_gradients_match_autodiff():
    unet = IUNet((1, 2, 1), hidden_channels=4, seed=1)
    unet.build(X.shape)
    plain = IUNet((1, 2, 1), hidden_channels=4, seed=1, memory_efficient=False)
    plain.build(X.shape)
    rng = np.random.default_rng(0)
    plain.set_weights(unet.get_weights())
    for a, b in zip(unet.trainable_variables, plain.trainable_variables):  # away from the identity
        moved = a.numpy() + 0.2 * rng.standard_normal(a.shape).astype("float32")
        a.assign(moved)
        b.assign(moved)
    z, log_det = unet.forward_and_log_det(X)
    assert tuple(z.shape) == tuple(X.shape) and tuple(log_det.shape) == (2,)
    np.testing.assert_allclose(unet.inverse_and_log_det(z)[0].numpy(), X.numpy(), atol=1e-4)
    target = tf.random.stateless_normal(X.shape, seed=(9, 9))
    grads = []
    for net in (unet, plain):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((net(X) - target) ** 2)
        grads.append(tape.gradient(loss, net.trainable_variables))
    assert len(grads[0]) == len(grads[1]) > 20
    for g_eff, g_plain in zip(*grads):
        scale = float(tf.reduce_max(tf.abs(g_plain)))
        assert scale > 0.0
        # the reversible backward pass rebuilds activations from outputs: float32 rounding of
        # the reconstruction, so entries agree to 1e-4 of the tensor's largest entry
        np.testing.assert_allclose(g_eff.numpy(), g_plain.numpy(), rtol=1e-3, atol=1e-4 * scale)


def test_iunet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="resampling_method"):
        IUNet((1, 1), resampling_method="givens")
    with pytest.raises(ValueError, match="power of 2"):
        InvertibleDownsampling(factor=3)
    with pytest.raises(ValueError, match="divisible by 2"):
        InvertibleDownsampling()(tf.zeros((1, 5, 4, 2)))
