"""Compiled inference of `FlowModel` (tfinv.core.compiled_inference): the compiled methods agree
with eager execution, trace once per input signature (no retracing for a new n, seed,
temperature or batch), honour run_eagerly, and report bad inputs as the eager methods do; the
compile() defaults (XLA detection, steps_per_execution); sampling's draw and flow in one call,
XLA's rejection of a model falling back to graph mode, and the CPU defaults of models that opt in
to XLA (Glow, flows of dense vector layers)."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfinv
from tfinv import layers
from tfinv.core import InvertibleLayer
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
    # each entry is one trace (a ConcreteFunction cannot retrace)
    assert all(isinstance(fn, tf.types.experimental.ConcreteFunction) for fn in functions.values())


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
    before = [v.numpy() for v in small.trainable_variables]
    history = small.fit(tf.data.Dataset.from_tensor_slices(data).batch(4), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert all(np.any(v.numpy() != b) for v, b in zip(small.trainable_variables, before))
    small.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=False)
    assert small.jit_compile is False and small.steps_per_execution == 1


def _vector_flow(dims: int = 8, extra=()):
    layers_ = [layers.VectorActNorm(), layers.VectorInvLinear(seed=1), layers.VectorAffineCoupling(parity=0, hidden_units=8),
               *extra, layers.VectorAffineCoupling(parity=1, hidden_units=8)]
    model = tfinv.FlowModel(layers_, input_shape=(dims,))
    model.initialize(np.random.default_rng(0).standard_normal((16, dims)).astype(np.float32))
    perturb_weights(model, 0.1, seed=3)
    return model


def test_flows_of_dense_vector_layers_opt_in_to_xla_on_cpu(monkeypatch):
    """A flow made only of layers that prefer XLA on CPU (VectorActNorm, VectorInvLinear,
    VectorAffineCoupling) trains under XLA with 8 steps per call and infers under XLA by
    default, up to CPU_XLA_MAX_DIMS values; one other layer, or a larger event, keeps graph mode.
    (conftest turns the training opt-in off for the rest of the suite.)"""
    from tfinv.core import flow_model

    monkeypatch.setattr(flow_model.FlowModel, "cpu_xla_training_max_dims", None)
    accelerated = bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
    small, mixed = _vector_flow(), _vector_flow(extra=[layers.Reverse()])
    large = _vector_flow(dims=flow_model.CPU_XLA_MAX_DIMS + 2)
    assert small._cpu_xla_max_dims("training") == small._cpu_xla_max_dims("inference") == flow_model.CPU_XLA_MAX_DIMS
    assert mixed._cpu_xla_max_dims("training") == 0 and large._cpu_xla_inference() is False
    for model, expected in ((small, True), (mixed, accelerated), (large, accelerated)):
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        assert model.jit_compile is expected and model.steps_per_execution == (8 if expected else 1)
        x = np.random.default_rng(1).standard_normal((4, model.num_dims)).astype(np.float32)
        compiled = model.log_prob(x)
        uses_xla = [k[1] for k in model._inference_cache() if k[0][0] == "log_prob"]
        assert uses_xla == [small._cpu_xla_inference() if model is small else accelerated]
        model.run_eagerly = True
        assert relative_error(compiled, model.log_prob(x)) < 1e-5
        model.run_eagerly = False
    # XLA, 8 steps per call: 5 batches (one partial call) move every trained weight
    data = np.random.default_rng(2).standard_normal((20, 8)).astype(np.float32)
    before = [v.numpy() for v in small.trainable_variables]
    history = small.fit(tf.data.Dataset.from_tensor_slices(data).batch(4), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert all(np.any(v.numpy() != b) for v, b in zip(small.trainable_variables, before))


def test_glow_infers_under_xla_on_cpu_up_to_its_limit():
    """Glow's data direction (log_prob, forward, bits_per_dim) runs under XLA on CPU up to
    CPU_XLA_INFERENCE_MAX_DIMS values (measured faster than graph mode at 8x8x1 and 32x32x3)."""
    from tfinv.models import glow

    small = tfinv.models.Glow((4, 4, 1), levels=1, steps_per_level=1, hidden_channels=4)
    assert glow.CPU_XLA_INFERENCE_MAX_DIMS == 3072 and small._cpu_xla_inference() is True
    x = np.random.default_rng(3).uniform(0.5, 16.5, (3, 4, 4, 1)).astype(np.float32)
    small.initialize(x)
    small.log_prob(x)
    assert [k[1] for k in small._inference_cache() if k[0][0] == "log_prob"] == [True]
    plain, _ = _model()  # a FlowModel of image layers does not opt in
    assert plain._cpu_xla_inference() is False


def test_sampling_draws_and_inverts_in_one_call():
    """Compiled sampling is one graph function: the draw (TF's stateless kernel, seed [seed, 0])
    and, nested in it, the inverse flow as an XLA function. A seed gives the eager samples; with a
    global seed and no seed, resetting it repeats the draws, as TF's eager random ops do."""
    model, _ = _model()
    drawn = model.sample(4, temperature=0.6, seed=11)
    outer = [fn for key, fn in model._inference_cache().items() if key[0][0] == "_draw_and_sample"]
    assert len(model._inference_cache()) == 2  # the draw-and-invert function and its nested part
    nested = [key for key in model._inference_cache() if key[0] == "nested"]
    assert len(outer) == 1 and nested == [("nested", "_sample_from_noise", ("training", False),
                                           ("eps", (None, 4, 4, 2), "float32"), ("temperature", (), "float32"),
                                           ("context", "None"))]
    graph = outer[0].graph
    calls = [op for op in graph.get_operations() if op.type in ("PartitionedCall", "StatefulPartitionedCall")]
    assert any(op.type == "StatelessRandomNormalV2" for op in graph.get_operations()) and len(calls) == 1
    assert graph.as_graph_def().library.function and any(
        "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b for f in graph.as_graph_def().library.function)
    eps = tf.random.stateless_normal((4, 4, 4, 2), seed=[11, 0])
    assert relative_error(drawn, model._sample_from_noise.eager(model, eps, 0.6, None)) < 1e-5
    tf.random.set_seed(5)
    first, second = model.sample(3), model.sample(3)
    tf.random.set_seed(5)
    again = model.sample(3)
    assert np.array_equal(first, again) and not np.array_equal(first, second)
    model.inference_mode = "eager"
    tf.random.set_seed(5)
    assert relative_error(model.sample(3), first) < 1e-5  # the same pairs, eager


class _LuSolveLinear(InvertibleLayer):
    """``z = x W`` whose inverse solves by ``tf.linalg.lu``, an op XLA rejects (STACK.md)."""

    event_ndims = 1

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], input_shape[-1]), initializer="identity")

    def _forward_and_log_det(self, x):
        return x @ self.w, tf.zeros(tf.shape(x)[:-1])

    def _inverse_and_log_det(self, z):
        lu, perm = tf.linalg.lu(tf.transpose(self.w))
        x = tf.transpose(tf.linalg.lu_solve(lu, perm, tf.transpose(z)))
        return x, tf.zeros(tf.shape(z)[:-1])


def test_sampling_falls_back_to_graph_mode_when_xla_rejects_the_model(caplog):
    layer = _LuSolveLinear()
    model = tfinv.FlowModel([layer], input_shape=(3,))
    model.build()
    layer.w.assign([[2.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.1, 0.0, 1.5]])
    with caplog.at_level(logging.WARNING, logger="tfinv"):
        drawn = model.sample(5, seed=4)
    assert model.inference_uses_xla is False and "does not compile with XLA" in caplog.text
    eps = tf.random.stateless_normal((5, 3), seed=[4, 0])
    np.testing.assert_allclose(drawn @ layer.w, eps, rtol=0, atol=1e-5)
    assert all(not key[1] for key in model._inference_cache())  # nothing cached under XLA
    assert model.sample(2, seed=1).shape == (2, 3)
