"""Compiled inference of `FlowModel` (tfinv.core.compiled_inference): the compiled methods agree
with eager execution, trace once per input signature (no retracing for a new n, seed,
temperature or batch), honour run_eagerly, and report bad inputs as the eager methods do; the
compile() defaults (XLA detection, steps_per_execution)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfinv
from tfinv import layers
from tfinv.core.compiled_inference import train_step_compiles
from tfinv.testing.contract import perturb_weights, relative_error


def _model():
    model = tfinv.FlowModel([layers.ActNorm(), layers.InvConv1x1(seed=1), layers.ActNorm()], input_shape=(4, 4, 2))
    x = np.random.default_rng(0).standard_normal((6, 4, 4, 2)).astype(np.float32)
    model.initialize(x)
    perturb_weights(model, 0.1, seed=2)
    return model, x


@pytest.mark.parametrize("mode", ["auto", "graph"])
def test_compiled_methods_match_eager(mode):
    model, x = _model()
    model.inference_mode = mode
    compiled = {
        "log_prob": model.log_prob(x), "bits_per_dim": model.bits_per_dim(x),
        "forward": model.forward(x), "inverse": model.inverse(x),
        "sample": model.sample(3, temperature=0.7, seed=5),
    }
    if mode == "auto":
        assert model.inference_uses_xla is True  # every op of this model compiles
    model.run_eagerly = True
    eager = {
        "log_prob": model.log_prob(x), "bits_per_dim": model.bits_per_dim(x),
        "forward": model.forward(x), "inverse": model.inverse(x),
        "sample": model.sample(3, temperature=0.7, seed=5),
    }
    for name in compiled:
        for a, b in zip(tf.nest.flatten(compiled[name]), tf.nest.flatten(eager[name])):
            assert relative_error(a, b) < 1e-5, name
    assert float(tf.reduce_max(tf.abs(eager["sample"]))) > 0.1  # a real draw


def test_no_retracing_for_new_n_seed_temperature_or_batch():
    model, x = _model()
    model.inference_mode = "graph"
    model.sample(2, seed=1)
    model.log_prob(x)
    functions = dict(model._inference_cache())
    assert len(functions) == 2
    for n, seed, temperature in ((5, 2, 0.3), (9, None, 1.0), (1, 7, 2.0)):
        assert model.sample(n, temperature=temperature, seed=seed).shape == (n, 4, 4, 2)
    model.log_prob(x[:3])
    assert model._inference_cache() == functions
    assert all(fn.experimental_get_tracing_count() == 1 for fn in functions.values())


def test_eager_switches_and_errors():
    model, x = _model()
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 4, 4, 2\), got \(2, 4, 4, 3\)"):
        model.log_prob(np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="inference_mode"):
        model.inference_mode = "fast"
    model.inference_mode = "eager"
    model.log_prob(x)
    tf.config.run_functions_eagerly(True)
    try:
        model.inference_mode = "auto"
        model.log_prob(x)
    finally:
        tf.config.run_functions_eagerly(False)
    assert model._inference_cache() == {}  # nothing was compiled


def test_compile_defaults():
    model, x = _model()
    assert train_step_compiles(model) == (True, "")
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    accelerated = bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
    # XLA training by default on an accelerator; on CPU only for models that opt in (not this one)
    assert model.jit_compile is accelerated and model.steps_per_execution == (8 if accelerated else 1)
    model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=True)
    assert model.jit_compile is True
    model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
    assert model.jit_compile is False and model.steps_per_execution == 1


def test_compile_defaults_pick_xla_and_several_steps_for_small_glows(monkeypatch):
    """Glow opts in to XLA training on CPU for events up to ``CPU_XLA_TRAINING_MAX_DIMS`` (256)
    values, with 8 steps per execution, and fit runs that path; a larger one trains in graph mode
    one step per call. (conftest turns the opt-in off for the rest of the suite.)"""
    from tfinv.models import glow

    assert glow.CPU_XLA_TRAINING_MAX_DIMS == 256
    monkeypatch.setattr(glow.Glow, "cpu_xla_training_max_dims", glow.CPU_XLA_TRAINING_MAX_DIMS)
    small = tfinv.models.Glow((4, 4, 1), levels=1, steps_per_level=1, hidden_channels=4)
    large = tfinv.models.Glow((16, 16, 2), levels=1, steps_per_level=1, hidden_channels=4)
    assert small.num_dims <= small.cpu_xla_training_max_dims < large.num_dims
    small.compile(optimizer=keras.optimizers.SGD(0.01))
    large.compile(optimizer=keras.optimizers.SGD(0.01))
    accelerated = bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
    assert small.jit_compile is True and small.steps_per_execution == 8
    assert large.jit_compile is accelerated and large.steps_per_execution == (8 if accelerated else 1)
    # fit with XLA, 8 steps per call: 5 batches (one partial call) move every trained weight
    data = np.random.default_rng(3).uniform(0.5, 16.5, (20, 4, 4, 1)).astype(np.float32)
    small.initialize(data[:8])
    before = [np.array(v) for v in small.trainable_variables]
    history = small.fit(tf.data.Dataset.from_tensor_slices(data).batch(4), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert all(np.any(np.array(v) != b) for v, b in zip(small.trainable_variables, before))
    small.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=False)
    assert small.jit_compile is False and small.steps_per_execution == 1
