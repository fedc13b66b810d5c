"""ECO explicit orthogonal convolutions (issue 18, item 6): orthogonality, inverse, Glow mixer."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfinv.layers import ECOConv
from tfinv.models import Glow
from tfinv.ops import eco


def _layer(shape, **kwargs):
    """A float64 ECOConv built on ``(1,) + shape`` with seeded, non-identity weights."""
    layer = ECOConv(dtype="float64", **kwargs)
    layer.build((1, *shape))
    return layer


def _jacobian(fn, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    n = int(np.prod(x.shape))
    return tf.reshape(tape.jacobian(y, x), [n, n]).numpy()


@pytest.mark.parametrize("shape, kwargs", [
    ((6, 4, 2), {"kernel_size": 3, "fit_kernel_to_image": True}),  # 3 x 2 kernel, dilations (2, 2)
    ((4, 4, 2), {"kernel_size": 4}),  # dilation 1: a full-size circular kernel
    ((6, 6, 2), {"kernel_size": 3, "spectrum": "real", "method": "exp"}),
])
def test_the_map_is_orthogonal_against_the_autodiff_jacobian(shape, kwargs):
    layer = _layer(shape, seed=3, **kwargs)
    x = tf.random.stateless_normal((1, *shape), seed=(1, 2), dtype=tf.float64)
    jac = _jacobian(lambda v: layer.forward_and_log_det(v)[0], x)
    n = jac.shape[0]
    np.testing.assert_allclose(jac.T @ jac, np.eye(n), atol=1e-10)
    assert np.abs(jac - np.eye(n)).max() > 0.2  # far from the identity
    # a real k x k convolution: at most kh * kw * C nonzeros per row
    kh, kw = layer.kernel_shape
    assert (np.abs(jac) > 1e-12).sum(axis=1).max() <= kh * kw * shape[-1]
    # the inverse is the adjoint: its Jacobian is J^T
    jac_inv = _jacobian(lambda v: layer.inverse_and_log_det(v)[0], x)
    np.testing.assert_allclose(jac_inv, jac.T, atol=1e-12)
    _, log_det = layer.forward_and_log_det(x)
    assert log_det.shape == (1,) and float(log_det[0]) == 0.0


def test_zero_padding_would_not_be_orthogonal():
    """The docstring's claim: the same kernel with zero padding loses orthogonality."""
    layer = _layer((6, 6, 2), kernel_size=3, seed=4)
    kernel = layer.kernel()
    n = 6 * 6 * 2
    basis = tf.reshape(tf.eye(n, dtype=tf.float64), [n, 6, 6, 2])
    zero_padded = tf.nn.conv2d(tf.pad(basis, [[0, 0], [0, 4], [0, 4], [0, 0]]), kernel, 1, "VALID", dilations=2)
    matrix = tf.reshape(zero_padded, [n, n]).numpy()
    assert np.abs(matrix.T @ matrix - np.eye(n)).max() > 0.1


def test_round_trips_off_the_data_manifold_and_the_kernel_formula():
    layer = _layer((6, 6, 3), kernel_size=3, seed=5)
    far = 1e3 * tf.random.stateless_normal((4, 6, 6, 3), seed=(7, 8), dtype=tf.float64)
    for start, there, back in ((far, layer.forward_and_log_det, layer.inverse_and_log_det),
                               (far, layer.inverse_and_log_det, layer.forward_and_log_det)):
        again = back(there(start)[0])[0]
        assert np.abs(again - start).max() <= 1e-12 * np.abs(start).max()
    # the kernel's own k x k DFT blocks are unitary (the construction, independent of the conv)
    blocks = eco.block_spectrum(layer.kernel().numpy())
    gram = np.einsum("uvji,uvjk->uvik", blocks.conj(), blocks)
    np.testing.assert_allclose(gram, np.broadcast_to(np.eye(3), gram.shape), atol=1e-12)
    # and a direct (loop) evaluation of the map's formula matches the layer
    x = tf.random.stateless_normal((1, 6, 6, 3), seed=(9, 9), dtype=tf.float64).numpy()
    k = layer.kernel().numpy()
    expected = np.zeros_like(x)
    for h in range(6):
        for w in range(6):
            for s in range(3):
                for t in range(3):
                    expected[0, h, w] += x[0, (h + 2 * s) % 6, (w + 2 * t) % 6] @ k[s, t]
    np.testing.assert_allclose(layer(x).numpy(), expected, atol=1e-12)


def test_float32_layer_stays_orthogonal_after_large_updates():
    """Large parameters (a long training run): the float64 Cayley kernel keeps the float32 map
    orthogonal to float32 rounding."""
    layer = ECOConv(kernel_size=2, seed=0)
    layer.build((1, 4, 4, 4))
    for weight in layer.trainable_weights:
        weight.assign(30.0 * np.random.default_rng(1).standard_normal(weight.shape))
    x = tf.random.stateless_normal((3, 4, 4, 4), seed=(3, 3))
    z, _ = layer.forward_and_log_det(x)
    np.testing.assert_allclose(np.linalg.norm(z.numpy().reshape(3, -1), axis=1),
                               np.linalg.norm(x.numpy().reshape(3, -1), axis=1), rtol=1e-5)


def test_bad_sizes_are_refused_with_the_expected_shape():
    with pytest.raises(ValueError, match=r"divisible by kernel_size 3.*\(H, W\) = \(4, 6\)"):
        ECOConv(kernel_size=3).build((1, 4, 6, 2))
    with pytest.raises(ValueError, match="spectrum"):
        ECOConv(spectrum="imaginary")
    layer = ECOConv(kernel_size=3, fit_kernel_to_image=True)
    layer.build((1, 4, 6, 2))
    assert layer.kernel_shape == (2, 3)


def test_glow_takes_eco_as_its_channel_mixer():
    model = Glow((4, 4, 1), levels=2, steps_per_level=1, hidden_channels=4, linear="eco")
    x = tf.random.stateless_uniform((3, 4, 4, 1), seed=(1, 1), maxval=17.0)
    model.initialize(x)
    mixers = [layer for layer in model._flatten_layers() if isinstance(layer, ECOConv)]
    assert sorted(m.kernel_shape for m in mixers) == [(1, 1), (2, 2)]  # levels of 2 x 2 and 1 x 1
    z, log_det = model.forward(x)
    back = model.inverse(z)
    np.testing.assert_allclose(back.numpy(), x.numpy(), rtol=1e-4, atol=1e-4)
    assert np.all(np.isfinite(log_det.numpy()))
