"""Invertible attention (iMap, iTrans) and EIW-Flow's channel weighting: the closed-form math
against numpy's solve/slogdet, the weighting's order and sign, Glow's options, and bad input.
(The contract harness runs every layer's case: round trips, log-det vs autodiff, jit, ONNX.)

Tolerances: float64 math <= 1e-12 relative; float32 model round trip <= 1e-4 absolute on inputs
of size ~17 (dequantised digits counts)."""

import numpy as np
import pytest
import tensorflow as tf

from tfinv import layers
from tfinv.blocks.glow_step import ATTENTION_LAYERS, LINEAR_LAYERS, GlowStep
from tfinv.models import Glow
from tfinv.ops import attention, channel_weighting
from tfinv.testing.contract import perturb_weights


@pytest.mark.parametrize("positions", [1, 7, 16])
def test_causal_attention_inverse_and_log_det_match_numpy(positions):
    rng = np.random.default_rng(positions)
    scores = tf.constant(rng.standard_normal((3, positions, positions)) * 2.0)
    matrix = attention.causal_softmax(scores)
    alpha = tf.constant(1.3, tf.float64)
    dense = matrix.numpy() + 1.3 * np.eye(positions)
    assert np.allclose(np.triu(matrix.numpy(), 1), 0.0) and np.allclose(matrix.numpy().sum(-1), 1.0)
    values = rng.standard_normal((3, positions, 2))
    outputs = attention.apply_attention_plus_identity(matrix, alpha, tf.constant(values)).numpy()
    assert np.allclose(outputs, dense @ values, rtol=1e-12, atol=1e-12)
    solved = attention.solve_attention_plus_identity(matrix, alpha, tf.constant(outputs)).numpy()
    np.testing.assert_allclose(solved, np.linalg.solve(dense, outputs), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(attention.attention_plus_identity_log_det(matrix, alpha).numpy(),
                               np.linalg.slogdet(dense)[1], rtol=1e-12)


def test_parity_mask_gives_every_position_both_kinds_of_entries():
    mask = attention.parity_mask(3, 4, 2)
    assert np.all(mask.sum(-1) == 1) and mask[0, 0, 0] == 1 and mask[0, 1, 0] == 0


def test_channel_weights_sum_to_channels_and_shuffle_sorts_them():
    layer = layers.EntropyWeightedShuffle()
    layer.build((1, 2, 2, 5))  # x_a: 2 channels, x_b: 3 channels
    layer.kernel.assign(np.zeros((2, 3), np.float32))
    layer.bias.assign(np.array([0.0, 2.0, 1.0], np.float32))  # order of weight: 1, 2, 0
    x = tf.constant(np.random.default_rng(0).standard_normal((1, 2, 2, 5)), tf.float32)
    z, log_det = layer.forward_and_log_det(x)
    weights = 3.0 * tf.nn.softmax([0.0, 2.0, 1.0]).numpy()
    expected = np.concatenate([x.numpy()[..., 2:][..., [1, 2, 0]] * weights[[1, 2, 0]], x.numpy()[..., :2]], -1)
    np.testing.assert_allclose(z.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(log_det.numpy(), [4 * np.log(weights).sum()], rtol=1e-6)
    assert log_det.numpy()[0] < 0  # sum of weights fixed: the log-det is <= 0, 0 only if uniform
    layer.bias.assign(np.zeros(3, np.float32))
    np.testing.assert_allclose(layer.forward_and_log_det(x)[1].numpy(), [0.0], atol=1e-6)


def test_sorting_permutation_is_a_permutation_inverted_by_its_transpose():
    weights = tf.constant([[0.5, 2.0, 0.5], [1.0, 0.2, 1.8]])
    p = channel_weighting.sorting_permutation(weights).numpy()
    assert np.array_equal(p @ np.transpose(p, (0, 2, 1)), np.broadcast_to(np.eye(3), (2, 3, 3)))
    assert np.array_equal(p.argmax(-1), [[1, 0, 2], [2, 0, 1]])  # ties keep channel order


def test_glow_with_itrans_and_entropy_weighting_round_trips_and_serialises():
    # The flow is called eagerly (the model's compiled entry points cost ~20 s of XLA compile
    # under load; each layer's XLA compile is in the contract harness).
    glow = Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=4, attention="itrans",
                linear="entropy_weighted")
    x = tf.constant(np.random.default_rng(1).uniform(1.0, 16.0, (2, 8, 8, 1)), tf.float32)
    glow.build()
    perturb_weights(glow, 0.05, 0)
    step = glow.scales[0].steps[1]
    assert isinstance(step.steps[-1], layers.ITransAttention) and step.steps[-1].parity == 1
    assert isinstance(step.steps[1].steps[-1], layers.EntropyWeightedShuffle)
    z, log_det = glow.flow.forward_and_log_det(x)
    x_back, inverse_log_det = glow.flow.inverse_and_log_det(z)
    np.testing.assert_allclose(x_back.numpy(), x.numpy(), atol=1e-4)
    np.testing.assert_allclose(inverse_log_det.numpy(), -log_det.numpy(), rtol=1e-5)
    again = Glow.from_config(glow.get_config())
    assert again.attention == "itrans" and again.linear == "entropy_weighted"


def test_glow_step_with_imap_appends_it_after_the_coupling():
    step = GlowStep(hidden_channels=4, attention="imap")
    x = tf.constant(np.random.default_rng(2).standard_normal((2, 4, 4, 4)), tf.float32)
    z, log_det = step.forward_and_log_det(x)
    assert [type(layer).__name__ for layer in step.steps][-2:] == ["AffineCoupling", "IMapAttention"]
    parts = x
    total = 0.0
    for layer in step.steps:
        parts, part_log_det = layer.forward_and_log_det(parts)
        total += part_log_det
    np.testing.assert_allclose(z.numpy(), parts.numpy(), rtol=1e-6)
    np.testing.assert_allclose(log_det.numpy(), total.numpy(), rtol=1e-6)
    assert GlowStep.from_config(step.get_config()).attention == "imap"


def test_options_are_registered():
    assert {"imap", "itrans"} <= set(ATTENTION_LAYERS) and "entropy_weighted" in LINEAR_LAYERS


@pytest.mark.parametrize("make", [layers.IMapAttention, layers.ITransAttention, layers.EntropyWeightedShuffle])
def test_one_channel_is_rejected_naming_the_expected_shape(make):
    with pytest.raises(ValueError, match=r"\(B, H, W, C\).*C >= 2.*got shape \(2, 4, 4, 1\)"):
        make().forward_and_log_det(tf.zeros((2, 4, 4, 1)))


@pytest.mark.parametrize("make", [layers.IMapAttention, layers.ITransAttention])
def test_extra_batch_axes_are_rejected(make):
    with pytest.raises(ValueError, match=r"needs images \(B, H, W, C\)"):
        make().build((2, 3, 4, 4, 2))


def test_itrans_rejects_more_positions_than_it_can_hold():
    with pytest.raises(ValueError, match=r"H \* W <= 4096 .*got H \* W = 4160"):
        layers.ITransAttention().build((1, 65, 64, 2))


def test_itrans_rejects_bad_arguments():
    with pytest.raises(ValueError, match="key_dim >= 1, parity 0 or 1 and initial_alpha > 1"):
        layers.ITransAttention(parity=2)
    with pytest.raises(ValueError, match="initial_alpha > 1, got 8, 0, 0.5"):
        layers.ITransAttention(initial_alpha=0.5)


def test_glow_step_rejects_an_unknown_attention():
    with pytest.raises(ValueError, match=r"attention must be None or one of \['imap', 'itrans'\]"):
        GlowStep(hidden_channels=4, attention="self")


def test_itrans_parity0_keeps_the_first_half_and_its_log_det_is_the_jacobians():
    # float64, 1e-10: the contract case runs parity 1; this one checks the other split.
    layer = layers.ITransAttention(key_dim=3, dtype="float64")
    x = tf.constant(np.random.default_rng(3).standard_normal((1, 2, 3, 4)))
    layer.build(x.shape)
    perturb_weights(layer, 0.3, 1)
    with tf.GradientTape() as tape:
        tape.watch(x)
        z, log_det = layer.forward_and_log_det(x)
    jacobian = tape.jacobian(z, x).numpy().reshape(24, 24)
    np.testing.assert_array_equal(z.numpy()[..., :2], x.numpy()[..., :2])
    np.testing.assert_allclose(log_det.numpy()[0], np.linalg.slogdet(jacobian)[1], rtol=1e-10)
    np.testing.assert_allclose(layer.inverse_and_log_det(z)[0].numpy(), x.numpy(), rtol=1e-10, atol=1e-12)
