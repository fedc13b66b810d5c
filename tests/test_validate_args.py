"""validate_args=True on every layer and model: valid input passes unchanged; NaN/Inf and inputs
outside a layer's domain raise InvalidArgumentError naming the layer and the expected range,
eagerly and in tf.function graphs (XLA drops assertions: jit calls run unchecked)."""

import numpy as np
import pytest
import tensorflow as tf

from tfinv import blocks, layers
from tfinv.core import FlowModel, InvertibleLayer
from tfinv.models import Glow
from tfinv.testing import cases

CASES = list(cases())


def _validating_copy(layer, x):
    clone = type(layer).from_config({**layer.get_config(), "validate_args": True})
    clone.build(tuple(x.shape))
    clone.set_weights(layer.get_weights())
    return clone


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_layer_validates_and_passes_valid_input(case):
    layer, x = case.build()
    checked = _validating_copy(layer, x)
    nested = [l for l in checked._flatten_layers() if isinstance(l, InvertibleLayer)]
    assert all(l.validate_args for l in nested), "validate_args did not reach every nested layer"
    z, log_det = checked.forward_and_log_det(x)
    z_ref, log_det_ref = layer.forward_and_log_det(x)
    np.testing.assert_array_equal(z, z_ref)
    np.testing.assert_array_equal(log_det, log_det_ref)
    np.testing.assert_array_equal(checked.inverse_and_log_det(z)[0], layer.inverse_and_log_det(z)[0])
    bad = x.numpy().copy()
    bad.reshape(-1)[1] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"{type(layer).__name__} '.*' \(forward\) got NaN or Inf"):
        checked.forward_and_log_det(bad)
    bad_z = z.numpy().copy()
    bad_z.reshape(-1)[0] = np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\(inverse\) got NaN or Inf"):
        checked.inverse_and_log_det(bad_z)


def test_logit_preprocess_domain_eager_graph_and_xla():
    layer = layers.LogitPreprocess(num_levels=17, validate_args=True, name="logit")
    plain = layers.LogitPreprocess(num_levels=17)
    valid = np.full((1, 2, 2, 1), 3.0, np.float32)  # issue 11's report: raised on valid input
    np.testing.assert_array_equal(layer.forward(valid), plain.forward(valid))
    edges = np.array([0.0, 17.0, 8.5, 1.0], np.float32).reshape(1, 2, 2, 1)
    assert np.all(np.isfinite(layer.forward(edges)))
    message = r"LogitPreprocess \\?'logit\\?' \(forward\) expects x in \[0, 17\]"  # graph errors escape quotes
    graph = tf.function(layer.forward_and_log_det)
    for value in (17.5, -0.5):
        bad = np.full((1, 2, 2, 1), value, np.float32)
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            layer.forward(bad)
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            graph(tf.constant(bad))
    np.testing.assert_array_equal(graph(tf.constant(valid))[0], plain.forward(valid))
    # XLA drops the assertions: valid input still computes the same map.
    jit = tf.function(layer.forward_and_log_det, jit_compile=True)
    np.testing.assert_allclose(jit(tf.constant(valid))[0], plain.forward(valid), rtol=1e-6)
    # Without validate_args, far out-of-range input is NaN, silently (as documented).
    assert np.all(np.isnan(plain.forward(np.full((1, 2, 2, 1), -5.0, np.float32))))


def test_glow_and_flow_model_pass_validate_args_to_every_layer():
    glow = Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=8, num_levels=17, validate_args=True)
    nested = [l for l in glow._flatten_layers() if isinstance(l, InvertibleLayer)]
    assert len(nested) > 6 and all(l.validate_args for l in nested)
    assert Glow.from_config(glow.get_config()).validate_args
    x = np.random.default_rng(0).uniform(0.5, 16.5, (2, 8, 8, 1)).astype(np.float32)
    assert np.all(np.isfinite(glow.log_prob(x)))
    x[0, 3, 3, 0] = 40.0
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"LogitPreprocess \\*'preprocess\\*' \(forward\) expects x in \[0, 17\]"):
        glow.log_prob(x)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"expects x in \[0, 17\]"):
        tf.function(glow.log_prob)(tf.constant(x))
    x[0, 3, 3, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="(got|has) NaN or Inf"):
        glow.log_prob(x)
    z = glow.forward(np.full((1, 8, 8, 1), 4.0, np.float32))[0].numpy()
    z[0, 5] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"(\(inverse\) got|z has) NaN or Inf"):
        glow.inverse(z)

    model = FlowModel([layers.ActNorm(), blocks.GlowStep(hidden_channels=8, seed=1)], input_shape=(4, 4, 2),
                      validate_args=True)
    assert all(l.validate_args for l in model._flatten_layers() if isinstance(l, InvertibleLayer))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"(InvertibleSequential \\*'flow\\*' \(forward\) got|x has) NaN"):
        model.forward(np.full((1, 4, 4, 2), np.nan, np.float32))
    # Off by default: nothing is checked.
    plain = Glow((8, 8, 1), levels=1, steps_per_level=1, hidden_channels=8, num_levels=17)
    assert not any(l.validate_args for l in plain._flatten_layers() if isinstance(l, InvertibleLayer))
