"""Reversible blocks (RevViTBlock, RevResBlock, IRevNetBlock), ReversibleStack's memory-efficient
backprop, the RevViT classifier and ``tfinv train --model revvit``.

Tolerances (float32, relative as in tfinv.testing.contract): contract as tests/test_contract.py;
reversible gradients vs autodiff <= 1e-5 per tensor (relative to the tensor's largest entry;
gradients that vanish identically, such as attention's key bias, to the largest gradient).
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinv import cli, data
from tfinv.blocks.reversible_stack import ReversibleStack
from tfinv.layers import ActNorm, AffineCoupling
from tfinv.layers.i_rev_net_block import IRevNetBlock
from tfinv.layers.rev_res_block import RevResBlock
from tfinv.layers.rev_vit_block import RevViTBlock
from tfinv.models import RevViT
from tfinv.testing import cases, contract
from tfinv.testing.contract import perturb_weights

_NAMES = ("RevViTBlock", "RevResBlock", "IRevNetBlock", "ReversibleStack")
#: The reversible cases of the contract registry (tests/test_contract.py runs the harness on them).
CASES = [c for c in cases() if c.name.startswith(_NAMES)]


def _ids(items):
    return [c.name for c in items]


# ----------------------------------------------------------------------------- the contract
@pytest.fixture(scope="module", params=CASES, ids=_ids(CASES))
def built(request):
    case = request.param
    layer, x = case.build()
    return case, layer, x


def test_log_det_is_zero_with_batch_shape(built):
    _, layer, x = built
    z, fldj = layer.forward_and_log_det(x)
    _, ildj = layer.inverse_and_log_det(z)
    assert fldj.shape == (x.shape[0],) and ildj.shape == (x.shape[0],)
    assert np.all(np.asarray(fldj) == 0.0) and np.all(np.asarray(ildj) == 0.0)


def test_stack_config_keeps_mode_and_blocks():
    stack = ReversibleStack([RevResBlock(), IRevNetBlock(stride=2)], memory_efficient=False)
    clone = ReversibleStack.from_config(stack.get_config())
    assert clone.memory_efficient is False and clone.event_ndims == 3
    assert [type(b).__name__ for b in clone.blocks] == ["RevResBlock", "IRevNetBlock"]
    assert clone.blocks[1].stride == 2


# ----------------------------------------------------------------------------- gradients
def _gradients(stack, x, mode):
    def grads(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            z, log_det = stack.forward_and_log_det(x)
            # Non-linear in z and using the log-det, so every cotangent is non-trivial.
            loss = tf.reduce_sum(tf.sin(z) * z) + 0.5 * tf.reduce_sum(log_det**2)
        return tape.gradient(loss, [x, *stack.trainable_variables])

    if mode != "eager":
        grads = tf.function(grads, jit_compile=(mode == "jit"))
    return [np.asarray(g, np.float64) for g in grads(x)]


def _gradient_errors(actual, expected):
    """Per tensor ``max|a - e| / max|e|``; a gradient that vanishes in exact arithmetic (below
    1e-4 of the largest: only attention's key bias, which softmax ignores) is pure rounding
    noise in both and is measured against the largest gradient instead. Returns the errors and
    the indices of the vanishing tensors."""
    scales = [float(np.max(np.abs(e))) for e in expected]
    largest = max(scales)
    vanishing = [i for i, s in enumerate(scales) if s < 1e-4 * largest]
    errors = [
        float(np.max(np.abs(a - e))) / (largest if i in vanishing else scales[i])
        for i, (a, e) in enumerate(zip(actual, expected))
    ]
    return errors, vanishing


STACKS = {
    "tokens": (lambda me: ReversibleStack([RevViTBlock(8, 2), RevViTBlock(8, 4, mlp_ratio=2),
                                           RevViTBlock(8, 1)], memory_efficient=me), (3, 5, 16)),
    # AffineCoupling has no fused rule: reconstructed by inverse + recomputation, its log-det
    # depends on x and on weights, so the log-det cotangent path is exercised too.
    "images-mixed": (lambda me: ReversibleStack([RevResBlock(hidden_channels=4), ActNorm(),
                                                 AffineCoupling(hidden_channels=4),
                                                 IRevNetBlock(stride=2, hidden_channels=4), IRevNetBlock()],
                                                memory_efficient=me), (2, 4, 4, 4)),
}


def test_blocks_of_one_configuration_share_one_loop_body_under_xla():
    """Under XLA, identical blocks run as one loop body with each block's weights substituted:
    gradients still match ordinary autodiff per block (<= 1e-5 per tensor, as above)."""
    from tfinv.blocks import reversible_stack

    make = lambda me: ReversibleStack([RevViTBlock(4, 1, mlp_ratio=1) for _ in range(3)], memory_efficient=me)
    reversible, ordinary = make(True), make(False)
    assert reversible_stack._same_configuration(reversible.blocks)
    assert not reversible_stack._same_configuration(STACKS["tokens"][0](True).blocks)
    x = tf.constant(np.random.default_rng(2).standard_normal((2, 3, 8)).astype(np.float32))
    reversible.build(x.shape)
    ordinary.build(x.shape)
    perturb_weights(reversible, 0.2, seed=4)
    ordinary.set_weights(reversible.get_weights())
    got, expected = _gradients(reversible, x, "jit"), _gradients(ordinary, x, "jit")
    errors, vanishing = _gradient_errors(got, expected)
    names = ["x"] + [v.path for v in reversible.trainable_variables]
    assert all(names[i].endswith("key/bias") for i in vanishing), [names[i] for i in vanishing]
    assert max(errors) <= 1e-5, dict(zip(names, errors))


@pytest.mark.parametrize("mode", ["eager", "graph", "jit"])
@pytest.mark.parametrize("name", sorted(STACKS))
def test_reversible_gradients_match_autodiff(name, mode):
    make, shape = STACKS[name]
    x = tf.constant(np.random.default_rng(1).standard_normal(shape).astype(np.float32))
    reversible, ordinary = make(True), make(False)
    reversible.build(x.shape)
    ordinary.build(x.shape)
    perturb_weights(reversible, 0.2, seed=3)
    ordinary.set_weights(reversible.get_weights())
    assert contract.relative_error(reversible(x), ordinary(x)) == 0.0
    got, expected = _gradients(reversible, x, mode), _gradients(ordinary, x, mode)
    names = ["x"] + [v.path for v in reversible.trainable_variables]
    assert len(got) == len(names) > 10
    errors, vanishing = _gradient_errors(got, expected)
    assert all(names[i].endswith("key/bias") for i in vanishing), [names[i] for i in vanishing]
    assert max(errors) <= 1e-5, sorted(zip(errors, names))[-3:]


# ----------------------------------------------------------------------------- RevViT and fit
def _revvit(memory_efficient=True, **kw):
    config = dict(patch_size=4, dim=8, depth=2, heads=2, num_classes=10, image_shape=(8, 8, 1),
                  mlp_ratio=2, input_scale=1 / 17)
    config.update(kw)
    return RevViT(memory_efficient=memory_efficient, **config)


def _labelled(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 17, (n, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, n)


@pytest.mark.parametrize("jit", [False, True])
def test_fit_updates_match_ordinary_backprop(jit):
    """model.fit (graph or XLA): reversible backprop gives ordinary backprop's losses and weights."""
    x, y = _labelled()
    results = []
    for memory_efficient in (True, False):
        keras.utils.set_random_seed(0)
        model = _revvit(memory_efficient)
        if results:
            model.set_weights(results[0][1])
        start = [w.copy() for w in model.get_weights()]
        model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        results.append((history.history["loss"], start, model.get_weights()))
    (loss_rev, start, w_rev), (loss_ord, _, w_ord) = results
    np.testing.assert_allclose(loss_rev, loss_ord, rtol=1e-5)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(w_rev, start)) > 1e-3  # it trained
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(w_rev, w_ord)) < 1e-5


def test_revvit_learns_digits_and_round_trips_through_keras_file(tmp_path):
    import tfinv

    keras.utils.set_random_seed(0)
    model = _revvit(patch_size=2, dim=16, depth=2)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    train = tfinv.data.digits(64, "train", with_labels=True).take(8)
    history = model.fit(train, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0] - 0.3, history.history
    x = next(iter(tfinv.data.digits(8, "test", with_labels=True, shuffle=False)))[0]
    logits = model(x)
    assert logits.shape == (8, 10)
    path = tmp_path / "revvit.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, RevViT) and loaded.blocks.memory_efficient
    assert contract.relative_error(loaded(x), logits) == 0.0


def test_mirrored_strategy_matches_single_device(tmp_path):
    """Reversible backprop under MirroredStrategy (2 logical CPUs): the loss and update of one
    device, and of ordinary backprop; fused optimizer updates are refused there."""
    script = textwrap.dedent(
        """
        import json, numpy as np, tensorflow as tf, keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from tfinv.models import RevViT
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 17, (16, 8, 8, 1)).astype("float32")
        y = rng.integers(0, 10, 16)
        initial = []

        def run(strategy, memory_efficient, fused_update=False):
            with strategy.scope():
                model = RevViT(patch_size=4, dim=8, depth=2, heads=2, image_shape=(8, 8, 1),
                               mlp_ratio=2, input_scale=1 / 17, memory_efficient=memory_efficient,
                               fused_update=fused_update)
                if not initial:
                    initial.extend(model.get_weights())
                model.set_weights(initial)
                model.compile(optimizer=keras.optimizers.SGD(0.1),
                              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
            loss = model.fit(ds, epochs=1, verbose=0).history["loss"][0]
            return loss, model.get_weights()

        one_loss, one_w = run(tf.distribute.OneDeviceStrategy("/cpu:0"), True)
        two_loss, two_w = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), True)
        ord_loss, ord_w = run(tf.distribute.OneDeviceStrategy("/cpu:0"), False)
        try:  # fused optimizer updates need the gradients summed over replicas first
            run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), True, fused_update=True)
            fused_error = None
        except ValueError as error:
            fused_error = str(error)
        diff = lambda u, v: max(float(np.max(np.abs(a - b))) for a, b in zip(u, v))
        print(json.dumps({"one": one_loss, "two": two_loss, "ordinary": ord_loss,
                          "two_vs_one": diff(one_w, two_w), "one_vs_ordinary": diff(one_w, ord_w),
                          "moved": diff(one_w, initial), "fused_error": fused_error}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert abs(result["two"] - result["one"]) <= 1e-5 * abs(result["one"]), result
    assert abs(result["ordinary"] - result["one"]) <= 1e-5 * abs(result["one"]), result
    assert result["moved"] > 1e-3, result
    assert result["two_vs_one"] < 1e-5 and result["one_vs_ordinary"] < 1e-5, result
    assert "needs a single replica, got a tf.distribute strategy with 2" in (result["fused_error"] or ""), result


# ----------------------------------------------------------------------------- bad input
def test_rev_vit_block_errors():
    with pytest.raises(ValueError, match=r"dim divisible by heads .* got dim=10, heads=4"):
        RevViTBlock(dim=10, heads=4)
    with pytest.raises(ValueError, match=r"splits the last axis into two equal streams: it must be even, got 15"):
        RevViTBlock(dim=8, heads=2).forward(tf.zeros((1, 3, 15)))
    with pytest.raises(ValueError, match=r"expects tokens \(B, N, 2 \* dim\) = \(B, N, 16\) .* got last axis 12"):
        RevViTBlock(dim=8, heads=2).forward(tf.zeros((1, 3, 12)))
    with pytest.raises(ValueError, match=r"expects inputs of rank >= 3"):
        RevViTBlock(dim=8, heads=2).forward(tf.zeros((3, 16)))


def test_image_block_errors():
    with pytest.raises(ValueError, match=r"RevResBlock .* it must be even, got 3"):
        RevResBlock().forward(tf.zeros((1, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"IRevNetBlock .* C must be even, got 5"):
        IRevNetBlock().forward(tf.zeros((1, 4, 4, 5)))
    with pytest.raises(ValueError, match=r"stride 2 needs even H and W, got \(H, W\) = \(5, 4\)"):
        IRevNetBlock(stride=2).forward(tf.zeros((1, 5, 4, 2)))
    with pytest.raises(ValueError, match=r"stride must be one of \(1, 2\), got 3"):
        IRevNetBlock(stride=3)
    with pytest.raises(ValueError, match="kernel_size must be a positive odd integer"):
        RevResBlock(kernel_size=2)


def test_stack_and_model_errors():
    with pytest.raises(ValueError, match="non-empty list of blocks"):
        ReversibleStack([])
    with pytest.raises(TypeError, match="takes InvertibleLayer instances, got Dense"):
        ReversibleStack([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"H and W divisible by patch_size=3, got \(H, W\) = \(8, 8\)"):
        RevViT(patch_size=3, dim=8, depth=1, heads=2, image_shape=(8, 8, 1))
    with pytest.raises(ValueError, match=r"dim divisible by heads"):
        RevViT(patch_size=2, dim=6, depth=1, heads=4)
    model = _revvit(depth=1)
    with pytest.raises(ValueError, match=r"expects images of shape \(batch, 8, 8, 1\), got \(2, 8, 8, 3\)"):
        model(tf.zeros((2, 8, 8, 3)))


# ----------------------------------------------------------------------------- CLI
def test_cli_trains_revvit_and_reports_accuracy(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "revvit", "--patch-size", "4", "--dim", "8", "--depth", "1", "--heads", "2",
            "--epochs", "1", "--max-train", "64", "--max-test", "32", "--verbose", "0", "--out", str(out)]
    assert cli.main(args) == 0
    assert "test accuracy" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "classification" and metrics["num_classes"] == 10
    assert metrics["num_train"] == 64 and metrics["num_test"] == 32 and metrics["epochs"] == 1
    assert metrics["config"]["model"]["depth"] == 1 and metrics["config"]["model"]["memory_efficient"]
    assert not (out / "samples.png").exists()
    model = keras.saving.load_model(out / "model.keras", safe_mode=True)
    assert isinstance(model, RevViT) and model.input_scale == pytest.approx(1 / 17)
    # The reported accuracy and loss are the saved model's on the test split (fixed noise).
    options = metrics["config"]["cli"]
    images, labels = data.load_arrays(options["dataset"], "test", key=options["key"], num_levels=17,
                                      with_labels=True)
    batches = data.dequantized_dataset(images[:32], labels[:32], batch_size=options["batch_size"],
                                       seed=options["seed"], shuffle=False, fixed_noise=True, with_labels=True)
    logits = np.concatenate([np.asarray(model(x)) for x, _ in batches])
    y = labels[:32]
    assert metrics["test_accuracy"] == pytest.approx(float(np.mean(np.argmax(logits, -1) == y)), abs=1e-6)
    log_softmax = logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1,
                                         keepdims=True)) - logits.max(-1, keepdims=True)
    cross_entropy = -np.mean(log_softmax[np.arange(len(y)), y])
    assert metrics["test_loss"] == pytest.approx(float(cross_entropy), rel=1e-4)


def test_cli_revvit_configuration_error_is_a_usage_error(tmp_path, capsys):
    args = ["train", "--model", "revvit", "--dim", "10", "--heads", "4", "--epochs", "1", "--out", str(tmp_path / "x")]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfinv train: error: ") and "divisible by heads" in err
    assert not (tmp_path / "x").exists()
