"""ReversibleStack(fused_update=True): the optimizer's update applied to each block inside the
reversible backward pass (LOMO's idea, arXiv:2306.09782) gives standard training's weights and
optimizer state.

Tolerance (float32): weights and optimizer variables after a few steps agree with the standard
path to <= 1e-5 relative per tensor (``max|fused - standard| / max|standard|``; the two paths run
the same per-element update formulas, in another order and, under XLA, another compiled program;
attention's key bias, whose gradient is rounding noise, is measured against the largest tensor).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinv.blocks.reversible_stack import ReversibleStack
from tfinv.layers import ActNorm, AffineCoupling
from tfinv.layers.i_rev_net_block import IRevNetBlock
from tfinv.layers.rev_res_block import RevResBlock
from tfinv.models import IRevNet, RevNet, RevViT
from tfinv.testing.contract import perturb_weights

RTOL = 1e-5
STEPS = 4  # model.fit: 2 epochs of 2 batches

OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(1e-2),
    "sgd-momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    # per-weight clipping, decoupled weight decay and EMA (updated over every weight after the
    # step, the fused ones included) take the same path as in the optimizer's apply
    "adamw-clipnorm-ema": lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.05, clipnorm=0.05, use_ema=True,
                                                         ema_overwrite_frequency=2),
}


def _revvit(fused_update, depth=2):
    """Blocks of one configuration: under XLA the standard backward is one ``tf.while_loop``
    body, the fused one straight-line code ordered by optimization barriers."""
    return RevViT(patch_size=4, dim=8, depth=depth, heads=2, num_classes=10, image_shape=(8, 8, 1), mlp_ratio=2,
                  input_scale=1 / 17, fused_update=fused_update)


def _mixed(fused_update):
    """Blocks of different configurations (a ``tf.switch_case`` loop under XLA on the standard
    path), a block that changes the shape, ActNorm and a coupling whose log-det depends on x; a
    Dense head outside the stack."""
    stack = ReversibleStack([RevResBlock(hidden_channels=4), ActNorm(), AffineCoupling(hidden_channels=4),
                             IRevNetBlock(stride=2, hidden_channels=4), IRevNetBlock()],
                            fused_update=fused_update, name="stack")
    model = keras.Sequential([keras.Input((4, 4, 4)), stack, keras.layers.Flatten(), keras.layers.Dense(3)])
    perturb_weights(stack, 0.2, seed=3)
    return model


def _revnet(fused_update):
    """Two stages (two fused stacks) joined by a strided residual downsampling."""
    return RevNet(image_shape=(8, 8, 1), blocks_per_stage=(2, 2), channels=8, input_scale=1 / 17,
                  fused_update=fused_update)


def _data(model_name):
    rng = np.random.default_rng(0)
    if model_name in ("revvit", "revnet"):
        return rng.uniform(0, 17, (16, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, 16)
    return rng.standard_normal((8, 4, 4, 4)).astype(np.float32), rng.standard_normal((8, 3)).astype(np.float32)


def _train(model_name, fused_update, optimizer_name, jit, initial=None):
    keras.utils.set_random_seed(0)
    model = {"revvit": _revvit, "revnet": _revnet, "mixed": _mixed}[model_name](fused_update)
    if initial is None:
        perturb_weights(model, 0.1, seed=5)  # biases and norms away from their 0 / 1 start too
    else:
        model.set_weights(initial)
    start = [w.copy() for w in model.get_weights()]
    loss = (keras.losses.MeanSquaredError() if model_name == "mixed"
            else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # under XLA also two steps per call of the compiled function (the default of FlowModel there)
    model.compile(optimizer=OPTIMIZERS[optimizer_name](), loss=loss, jit_compile=jit,
                  steps_per_execution=2 if jit else 1)
    model.optimizer.build(model.trainable_variables)  # else the first step is traced twice
    x, y = _data(model_name)
    history = model.fit(x, y, batch_size=len(x) // 2, epochs=STEPS // 2, shuffle=False, verbose=0)
    return model, start, history.history["loss"]


def _relative(a, b):
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def _errors(actual, expected, names) -> dict:
    """Per tensor ``max|a - e| / max|e|``, except for attention's key bias and its optimizer
    slots: softmax ignores the key bias, so its gradient is zero in exact arithmetic and pure
    rounding noise in both paths (which Adam scales up to steps of the learning rate's size);
    those are measured against the largest tensor of the list instead (as in
    tests/test_reversible.py)."""
    actual, expected = [np.asarray(a) for a in actual], [np.asarray(e) for e in expected]
    largest = max(float(np.max(np.abs(e))) for e in expected)
    vanishing = lambda name: "key/bias" in name or "key_bias" in name
    return {n: float(np.max(np.abs(a - e))) / largest if vanishing(n) else _relative(a, e)
            for n, a, e in zip(names, actual, expected) if np.any(e) or vanishing(n)}


@pytest.mark.parametrize("model_name, optimizer_name, jit", [
    ("revvit", "adam", False), ("revvit", "adam", True),
    ("revvit", "sgd-momentum", False), ("revvit", "sgd-momentum", True),
    ("mixed", "adamw-clipnorm-ema", False), ("mixed", "adam", True), ("revnet", "adam", False),
])
def test_fused_updates_equal_standard_training(model_name, optimizer_name, jit):
    standard, start, standard_losses = _train(model_name, False, optimizer_name, jit)
    fused, fused_start, fused_losses = _train(model_name, True, optimizer_name, jit, initial=start)
    assert all(np.array_equal(a, b) for a, b in zip(start, fused_start))
    assert max(_relative(w, s) for w, s in zip(standard.get_weights(), start)) > 1e-3  # it trained
    np.testing.assert_allclose(fused_losses, standard_losses, rtol=RTOL)
    errors = _errors(fused.weights, standard.weights, [w.path for w in standard.weights])
    assert max(errors.values()) <= RTOL, sorted(errors.items(), key=lambda item: item[1])[-3:]
    # the optimizer's state: step counter (advanced once per step), slots, EMA
    names = [v.path for v in standard.optimizer.variables]  # built in the same order: slots align
    assert len(names) > 2 and [v.shape for v in standard.optimizer.variables] == [
        v.shape for v in fused.optimizer.variables]
    assert int(fused.optimizer.iterations) == int(standard.optimizer.iterations) == STEPS
    slot_errors = _errors(fused.optimizer.variables, standard.optimizer.variables, names)
    assert max(slot_errors.values()) <= RTOL, sorted(slot_errors.items(), key=lambda item: item[1])[-3:]


def test_gradient_call_applies_the_update_and_leaves_no_gradient():
    """In a training call (a compiled model under a tape) the backward pass itself updates the
    stack's weights, which get no gradient; a custom loop's ``optimizer.apply`` completes the
    step exactly as ``train_on_batch`` does. Outside training calls gradients are ordinary."""
    x, y = _data("revvit")
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    keras.utils.set_random_seed(0)
    standard = _revvit(False)
    start = [w.copy() for w in standard.get_weights()]
    # SGD with momentum: Adam would turn the rounding noise of attention's key-bias gradient
    # (zero in exact arithmetic: softmax ignores it) into steps of the learning rate's size
    standard.compile(optimizer=OPTIMIZERS["sgd-momentum"](), loss=loss_fn)
    standard.train_on_batch(x, y)

    model = _revvit(True)
    model.set_weights(start)
    model.compile(optimizer=OPTIMIZERS["sgd-momentum"](), loss=loss_fn)
    model.optimizer.build(model.trainable_variables)
    stack_ids = {id(v) for v in model.blocks.trainable_variables}
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x))
    grads = tape.gradient(loss, model.trainable_variables)
    for v, g in zip(model.trainable_variables, grads):
        assert (g is None) == (id(v) in stack_ids), v.path
    moved = [v.path for v, s in zip(model.weights, start) if not np.array_equal(np.asarray(v), s)]
    assert len(moved) == len(stack_ids), moved  # updated inside tape.gradient, before any apply
    assert int(model.optimizer.iterations) == 0
    model.optimizer.apply(grads, model.trainable_variables)
    assert int(model.optimizer.iterations) == 1
    scale = max(float(np.max(np.abs(np.asarray(s)))) for s in standard.weights)
    for w, s in zip(model.weights, standard.weights):  # eager vs graph: rounding differs
        np.testing.assert_allclose(np.asarray(w), np.asarray(s), rtol=RTOL, atol=RTOL * scale, err_msg=w.path)

    # ordinary gradients outside training calls: training=False, or a model without an optimizer
    before = [np.asarray(v).copy() for v in model.weights]
    uncompiled = _revvit(True)
    for m, call in ((model, lambda: model(x, training=False)), (uncompiled, lambda: uncompiled(x))):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(call() ** 2)
        grads = tape.gradient(loss, m.trainable_variables)
        assert all(g is not None for g in grads)
    assert all(np.array_equal(np.asarray(v), b) for v, b in zip(model.weights, before))


def test_fused_update_round_trips_through_config_and_keras_file(tmp_path):
    stack = ReversibleStack([RevResBlock(), IRevNetBlock()], fused_update=True)
    clone = ReversibleStack.from_config(stack.get_config())
    assert clone.fused_update is True and clone.memory_efficient is True
    assert ReversibleStack.from_config(ReversibleStack([RevResBlock()]).get_config()).fused_update is False
    model = _revvit(True, depth=1)
    assert RevViT.from_config(model.get_config()).blocks.fused_update is True
    revnet = RevNet.from_config(_revnet(True).get_config())
    assert revnet.fused_update and all(stage.fused_update for stage in revnet.stages)
    irevnet = IRevNet(image_shape=(8, 8, 1), blocks_per_stage=(1,), channels=4, fused_update=True)
    assert IRevNet.from_config(irevnet.get_config()).stack.fused_update is True
    model.save(tmp_path / "fused.keras")
    loaded = keras.saving.load_model(tmp_path / "fused.keras", safe_mode=True)
    assert loaded.fused_update is True and loaded.blocks.fused_update is True


def _fit_error(optimizer, model=None):
    model = model or _revvit(True, depth=1)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data("revvit")
    with pytest.raises(ValueError) as error:
        model.train_on_batch(x[:4], y[:4])
    return str(error.value)


def test_settings_that_need_every_gradient_first_are_errors():
    assert "global_clipnorm=1.0" in _fit_error(keras.optimizers.Adam(global_clipnorm=1.0))
    assert "cannot use a LossScaleOptimizer (mixed_float16)" in _fit_error(
        keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1)))
    assert "gradient_accumulation_steps=2" in _fit_error(keras.optimizers.SGD(0.1, gradient_accumulation_steps=2))
    with pytest.raises(ValueError, match="fused_update=True needs memory_efficient=True"):
        ReversibleStack([RevResBlock()], memory_efficient=False, fused_update=True)
    with pytest.raises(ValueError, match="fused_update=True needs memory_efficient=True"):
        RevViT(dim=8, depth=1, heads=2, memory_efficient=False, fused_update=True)
    # every trainable weight inside the stack: Keras's apply would have nothing to apply
    only_stack = keras.Sequential([keras.Input((4, 4, 4)), ReversibleStack([RevResBlock(hidden_channels=4)],
                                                                           fused_update=True)])
    only_stack.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="needs a trainable weight outside its fused stacks"):
        only_stack.train_on_batch(np.ones((2, 4, 4, 4), np.float32), np.zeros((2, 4, 4, 4), np.float32))
    # a training call of a model without an optimizer
    model = _revvit(True, depth=1)
    with tf.GradientTape():
        with pytest.raises(ValueError, match="which has none; compile the model with an optimizer"):
            model(_data("revvit")[0][:2], training=True)
