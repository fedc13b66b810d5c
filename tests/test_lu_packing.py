"""LU-parameterised linear layers store exactly their free parameters (one packed matrix), and
load weights saved in the earlier five-array layout.

Tolerances: float64 layers, the matrix W against numpy's P @ L @ U to 1e-12 relative; the
log-det against numpy's slogdet to 1e-12.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfinv.layers import InvConv1x1, VectorInvLinear
from tfinv.ops import lu


def _perturbed(layer_class, n: int, seed: int):
    layer = layer_class(seed=seed, dtype="float64")
    layer.build((None, n) if layer_class is VectorInvLinear else (None, 2, 2, n))
    rng = np.random.default_rng(seed)
    layer.lower_upper.assign(layer.lower_upper.numpy() + 0.3 * rng.standard_normal((n, n)))
    return layer


@pytest.mark.parametrize("layer_class", [VectorInvLinear, InvConv1x1])
def test_one_trained_matrix_holds_exactly_the_free_parameters(layer_class):
    n = 5
    layer = _perturbed(layer_class, n, seed=2)
    assert [v.name for v in layer.trainable_variables] == ["lower_upper"]
    assert layer.count_params() - sum(int(np.prod(v.shape)) for v in layer.non_trainable_variables) == n * n
    packed = layer.lower_upper.numpy()
    lower = np.tril(packed, -1) + np.eye(n)
    upper = np.triu(packed, 1) + np.diag(layer.sign.numpy() * np.exp(np.diag(packed)))
    expected = layer.permutation.numpy() @ lower @ upper
    np.testing.assert_allclose(layer.weight().numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.inverse_weight().numpy() @ expected, np.eye(n), atol=1e-12)
    x = tf.constant(np.random.default_rng(3).standard_normal((4, n)), tf.float64)
    if layer_class is VectorInvLinear:
        _, log_det = layer.forward_and_log_det(x)
        np.testing.assert_allclose(log_det.numpy(), np.full(4, np.linalg.slogdet(expected)[1]), rtol=1e-12)


def test_weights_saved_in_the_five_array_layout_load_packed():
    n = 4
    source = _perturbed(VectorInvLinear, n, seed=5)
    packed = source.lower_upper.numpy()
    # The earlier layout: trainable lower, upper, log_scale (full matrices, entries outside the
    # triangles ignored; here filled with noise that must not leak in), then permutation, sign.
    noise = np.random.default_rng(6).standard_normal((2, n, n))
    old_store = {"0": np.tril(packed, -1) + np.triu(noise[0]), "1": np.triu(packed, 1) + np.tril(noise[1]),
                 "2": np.diag(packed).copy(), "3": source.permutation.numpy(), "4": source.sign.numpy()}
    target = VectorInvLinear(seed=9, dtype="float64")
    target.build((None, n))
    target.load_own_variables(old_store)
    np.testing.assert_array_equal(target.lower_upper.numpy(), packed)
    np.testing.assert_array_equal(target.weight().numpy(), source.weight().numpy())
    np.testing.assert_array_equal(lu.pack_lower_upper(old_store["0"], old_store["1"], old_store["2"]), packed)
