"""MixerFlow (arXiv:2310.16777): its layers (Patchify, CyclicShift, the vector Glow-step layers),
the MixerFlowBlock and the MixerFlow model beyond the contract harness (their cases run in
tests/test_contract.py): the patch layout, composition of a rank-changing layer in a `FlowModel`,
`.keras` save/load, training steps and bad inputs.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfinv
from tfinv.blocks.mixer_flow_block import MixerFlowBlock
from tfinv.layers.cyclic_shift import CyclicShift
from tfinv.layers.logit_preprocess import LogitPreprocess
from tfinv.layers.patchify import Patchify
from tfinv.layers.vector_affine_coupling import VectorAffineCoupling
from tfinv.models.mixer_flow import MixerFlow
from tfinv.nets.mlp import MLP
from tfinv.testing import contract
from tfinv.testing.cases import _counts, model_cases

SMALL = 8  # conditioner width: keeps Jacobians and fits cheap

MODEL_CASE = next(c for c in model_cases() if c.name == "MixerFlow")


# ------------------------------------------------------------------ layer behaviour
def test_patchify_layout_matches_numpy_reference():
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 3)).astype(np.float32)
    layer = Patchify(patch_size=2)
    z, log_det = layer.forward_and_log_det(x)
    # (B, H/p, p, W/p, p, C) -> (B, H/p, W/p, p, p, C): row-major patches, each (u, v, c) flat.
    expected = x.reshape(2, 2, 2, 3, 2, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 6, 12)
    np.testing.assert_array_equal(z, expected)
    np.testing.assert_array_equal(log_det, np.zeros(2))
    assert layer.output_event_shape == (6, 12)
    assert layer.inverse_min_event_ndims == 2 and layer.forward_min_event_ndims == 3


def test_cyclic_shift_is_tf_roll():
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 1)).astype(np.float32)
    z = CyclicShift(shift=1).forward_and_log_det(x)[0]
    np.testing.assert_array_equal(z, tf.roll(x, shift=[1, 1], axis=[1, 2]))


def test_rank_changing_layer_composes_in_a_flow_model():
    """InvertibleSequential lowers its output event rank by Patchify's: inverse and sampling work."""
    flow = tfinv.FlowModel(
        [LogitPreprocess(17), Patchify(2), MixerFlowBlock(hidden_units=SMALL, seed=3)],
        input_shape=(4, 4, 1),
    )
    assert flow.latent_shape == (4, 4)
    assert flow.flow.inverse_min_event_ndims == 2
    x = tf.constant(_counts(17)((3, 4, 4, 1), 0))
    contract.perturb_weights(flow, 0.1)
    contract.check_round_trip(flow, x)
    contract.check_log_det(flow, x)
    assert flow.sample(2, seed=0).shape == (2, 4, 4, 1)


def test_mixer_flow_block_log_det_sums_over_shared_columns():
    """The token flow's log-det is one term per column; the block adds all D (and all P) terms."""
    block = MixerFlowBlock(hidden_units=SMALL, seed=0)
    x = tf.constant(np.random.default_rng(1).standard_normal((3, 6, 4)).astype(np.float32))
    block.build(tuple(x.shape))
    contract.perturb_weights(block, 0.2)
    h, total = tf.linalg.matrix_transpose(x), 0.0
    for layer in block.token_flow:
        h, ld = layer.forward_and_log_det(h)
        assert ld.shape == (3, 4)  # one per channel column
        total += tf.reduce_sum(ld, -1)
    h = tf.linalg.matrix_transpose(h)
    for layer in block.channel_flow:
        h, ld = layer.forward_and_log_det(h)
        assert ld.shape == (3, 6)  # one per patch row
        total += tf.reduce_sum(ld, -1)
    z, log_det = block.forward_and_log_det(x)
    np.testing.assert_allclose(z, h, rtol=1e-6)
    np.testing.assert_allclose(log_det, total, rtol=1e-6)


# ------------------------------------------------------------------ the model
@pytest.fixture(scope="module")
def model():
    flow, x = MODEL_CASE.build()
    return flow, x


def test_model_latent_is_not_the_flattened_preprocessed_image(model):
    """The contract (tests/test_contract.py) covers round trip, log-det, XLA and ONNX; here: the
    blocks really move the latent away from the plain preprocessed image."""
    flow, x = model
    z = flow.forward(x)[0]
    plain = tf.reshape(flow.preprocess.forward_and_log_det(x)[0], z.shape)
    assert contract.relative_error(z, plain) > 1e-2


def test_model_save_load(model, tmp_path):
    flow, x = model
    path = tmp_path / "mixer_flow.keras"
    flow.save(path)
    loaded = tfinv.load_model(path)
    assert isinstance(loaded, MixerFlow)
    assert loaded.get_config() == flow.get_config()
    z, log_det = flow.forward(x)
    z2, log_det2 = loaded.forward(x)
    np.testing.assert_allclose(z2, z, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(log_det2, log_det, rtol=1e-6)
    np.testing.assert_allclose(loaded.inverse(z), flow.inverse(z), rtol=1e-5, atol=1e-5)


def test_model_fit_steps_lower_the_loss():
    keras.utils.set_random_seed(0)
    flow = MixerFlow((8, 8, 1), patch_size=2, num_blocks=2, hidden_units=16, num_levels=17)
    batch = next(iter(tfinv.data.digits(batch_size=32, split="train", seed=0)))
    flow.initialize(batch)
    before = float(tf.reduce_mean(flow.bits_per_dim(batch)))
    flow.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
    history = flow.fit(tf.data.Dataset.from_tensors(batch).repeat(8), epochs=1, verbose=0)
    after = float(tf.reduce_mean(flow.bits_per_dim(batch)))
    assert np.isfinite(history.history["loss"][0])
    assert after < before - 0.05, (before, after)


# ------------------------------------------------------------------ bad inputs
def test_image_not_divisible_by_patch_size():
    with pytest.raises(ValueError, match=r"divisible by 2, got \(H, W\) = \(7, 8\)"):
        MixerFlow((7, 8, 1), patch_size=2)
    with pytest.raises(ValueError, match=r"divisible by 3, got \(H, W\) = \(6, 8\)"):
        Patchify(patch_size=3).build((None, 6, 8, 1))


def test_too_few_patch_values():
    with pytest.raises(ValueError, match=r"D = 1 values"):
        MixerFlow((8, 8, 1), patch_size=1)
    with pytest.raises(ValueError, match=r"P >= 2 patches and D >= 2 .* got \(4, 1\)"):
        MixerFlowBlock().build((None, 4, 1))


def test_wrong_shapes_name_expected_and_got(model):
    flow, _ = model
    with pytest.raises(ValueError, match=r"must have shape \(batch, 8, 8, 1\), got \(2, 8, 4, 1\)"):
        flow.forward(np.zeros((2, 8, 4, 1), np.float32))
    with pytest.raises(ValueError, match=r"must have shape \(batch, 64\), got \(2, 32\)"):
        flow.inverse(np.zeros((2, 32), np.float32))
    with pytest.raises(ValueError, match="conditioner must output 6 features"):
        VectorAffineCoupling(conditioner=MLP(4, 5)).build((None, 5))
