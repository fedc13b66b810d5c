"""Glow's paper configuration (issue 18, item 9): ActNorm inside the coupling conditioners,
initialised from data by the model's explicit `initialize`, beside learned split priors."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfinv.layers.bases.coupling_layer import CouplingLayer
from tfinv.models import Glow
from tfinv.nets import ConditionerActNorm, GlowConvNet


def _couplings(layer):
    if isinstance(layer, CouplingLayer):
        yield layer
    for child in getattr(layer, "steps", []) or []:
        yield from _couplings(child)
    inner = getattr(layer, "inner", None)
    if inner is not None:
        yield from _couplings(inner)


def test_initialize_normalises_every_conditioner_hidden_layer():
    model = Glow((8, 8, 1), levels=2, steps_per_level=2, hidden_channels=6, learned_prior=True,
                 conditioner_actnorm=True)
    x = tf.constant(np.random.default_rng(0).integers(0, 17, (32, 8, 8, 1)).astype("float32"))
    model.initialize(x)
    assert len(list(_couplings(model.flow))) == 4
    # replay the first level on the initialisation batch: at each coupling, the conditioner's
    # hidden channels after each ActNorm have mean 0 and variance 1 over the batch
    preprocess, level = model.flow.steps[0], model.flow.steps[1]
    h = preprocess.forward(x)
    seen = 0
    for layer in level.steps:
        for sub in getattr(layer, "steps", [layer]):
            if isinstance(sub, CouplingLayer):
                net = sub.conditioner
                pre = net.conv_in(sub._split_input(h)[0])
                first = net.norm_in(pre)
                second_pre = net.conv_hidden(tf.nn.relu(first))
                for raw, normed in ((pre, first), (second_pre, net.norm_hidden(second_pre))):
                    raw, normed = raw.numpy().reshape(-1, 6), normed.numpy().reshape(-1, 6)
                    live = raw.std(0) > 1e-3
                    np.testing.assert_allclose(normed.mean(0), 0.0, atol=1e-4)
                    np.testing.assert_allclose(normed.std(0)[live], 1.0, rtol=1e-3)
                seen += 1
            h = sub.forward(h)
    assert seen == 2


def test_conditioner_actnorm_round_trips_and_serialises(tmp_path):
    model = Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=4, learned_prior=True,
                 conditioner_actnorm=True)
    x = tf.constant(np.random.default_rng(1).integers(0, 17, (8, 8, 8, 1)).astype("float32"))
    model.initialize(x)
    norms = [w for w in model.weights if "norm_in" in w.path or "norm_hidden" in w.path]
    assert len(norms) == 2 * 2 * 2  # 2 couplings x 2 norms x (bias, log_scale)
    assert all(np.abs(w.numpy()).max() > 0 for w in norms)  # set from data, not left at zero
    z, _ = model.forward(x)
    np.testing.assert_allclose(model.inverse(z).numpy(), x.numpy(), atol=1e-3)  # dequantised counts 0..16
    path = str(tmp_path / "glow.keras")
    model.save(path)
    import keras

    loaded = keras.saving.load_model(path)
    assert loaded.conditioner_actnorm and loaded.learned_prior
    np.testing.assert_allclose(loaded.log_prob(x).numpy(), model.log_prob(x).numpy(), rtol=1e-6)


def test_conditioner_actnorm_rejects_a_user_conditioner_and_quad():
    from tfinv.blocks import GlowStep
    from tfinv.layers import AffineCoupling

    with pytest.raises(ValueError, match="default conditioner only"):
        AffineCoupling(conditioner=GlowConvNet(4, 4), conditioner_actnorm=True)
    with pytest.raises(ValueError, match="conditioner_actnorm needs"):
        GlowStep(4, coupling="quad", conditioner_actnorm=True)


def test_conditioner_actnorm_is_identity_before_initialisation():
    norm = ConditionerActNorm()
    x = tf.random.stateless_normal((3, 2, 2, 5), seed=(1, 2)) * 3.0 + 1.0
    np.testing.assert_array_equal(norm(x).numpy(), x.numpy())
    y = norm.initialize(x).numpy().reshape(-1, 5)
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(0), 1.0, rtol=1e-5)


def test_cli_flags_build_the_paper_configuration(tmp_path):
    from tfinv import cli

    args = cli.build_parser().parse_args(
        ["train", "--out", str(tmp_path), "--levels", "1", "--steps-per-level", "1", "--hidden-channels", "4",
         "--learned-prior", "--conditioner-actnorm"])
    model = cli._build_glow(args, (8, 8, 1), 17)
    assert model.learned_prior and model.conditioner_actnorm
    default = cli._build_glow(cli.build_parser().parse_args(["train", "--out", str(tmp_path), "--levels", "1",
                                                             "--steps-per-level", "1"]), (8, 8, 1), 17)
    assert not default.learned_prior and not default.conditioner_actnorm
