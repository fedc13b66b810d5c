"""FullButterflyLayer beyond the contract harness (its cases run in tests/test_contract.py):
exact swaps and reflections with the free blocks, a dense Jacobian over all H*W*C entries."""

import numpy as np
import pytest
import tensorflow as tf

from tfinv.layers.full_butterfly_layer import FullButterflyLayer
from tfinv.testing.cases import Case


def test_free_blocks_represent_an_exact_swap_permutation():
    layer = FullButterflyLayer(seed=0)
    layer.build((None, 2, 2, 2))  # D = 8, three levels
    shape = layer.a.shape
    rng = np.random.default_rng(0)
    swap = rng.integers(0, 2, shape).astype(np.float32)  # per block: swap (1) or keep (0)
    layer.a.assign(1 - swap)
    layer.d.assign(1 - swap)
    layer.b.assign(swap)
    layer.c.assign(swap)
    x = rng.standard_normal((3, 2, 2, 2)).astype(np.float32)
    z, log_det = layer.forward_and_log_det(x)
    flat_x, flat_z = x.reshape(3, -1), z.numpy().reshape(3, -1)
    # a permutation: every output entry is exactly one input entry
    perm = [int(np.argmax(np.all(flat_x == flat_z[:, [i]], axis=0))) for i in range(8)]
    np.testing.assert_array_equal(flat_z, flat_x[:, perm])
    assert sorted(perm) == list(range(8)) and perm != list(range(8))
    np.testing.assert_array_equal(log_det.numpy(), 0.0)  # |det| = 1 (det = +-1 per block)
    x_back, _ = layer.inverse_and_log_det(z)
    np.testing.assert_array_equal(x_back.numpy(), x)


def test_reflection_block_log_det():
    layer = FullButterflyLayer(levels=1, seed=0)
    layer.build((None, 1, 1, 2))
    layer.a.assign([[2.0]])
    layer.b.assign([[1.0]])
    layer.c.assign([[1.0]])
    layer.d.assign([[-3.0]])  # det = -7: a reflection part, beyond the positive-determinant form
    x = tf.constant([[[[1.0, 2.0]]]])
    z, log_det = layer.forward_and_log_det(x)
    np.testing.assert_allclose(z.numpy().ravel(), [2 + 2, 1 - 6], rtol=1e-6)
    np.testing.assert_allclose(log_det.numpy(), [np.log(7.0)], rtol=1e-6)


@pytest.mark.parametrize("blocks", ["free", "positive"])
def test_full_butterfly_mixes_every_entry(blocks):
    layer, x = Case("b", lambda: FullButterflyLayer(blocks=blocks, seed=3), (1, 4, 4, 2), perturb=0.1).build()
    with tf.GradientTape() as tape:
        tape.watch(x)
        picked = layer.forward_and_log_det(x)[0][0, 0, 0, 0]
    grad = tape.gradient(picked, x).numpy()
    assert np.count_nonzero(grad) == 32  # every one of the H*W*C inputs


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="blocks"):
        FullButterflyLayer(blocks="orthogonal")
    with pytest.raises(ValueError, match="levels"):
        FullButterflyLayer(levels=6).build((None, 2, 2, 2))
