"""The shared training loop (`tfinv.training`): epoch-keyed data, backups and exact resumption."""

import json
import os
import signal

import keras
import numpy as np
import pytest

import tfinv
from tfinv import data, training
from tfinv.testing.contract import perturb_weights

IMAGES = data.digits_arrays("train", with_labels=False)[0][:40]
FIT = dict(epochs=3, batch_size=16, seed=4)  # 3 steps per epoch (16 + 16 + 8)


def tiny_glow():
    keras.utils.set_random_seed(0)
    return tfinv.models.Glow((8, 8, 1), levels=1, steps_per_level=1, hidden_channels=8, num_levels=17, seed=0)


class InterruptAtStep(keras.callbacks.Callback):
    """Raises KeyboardInterrupt (what SIGINT raises) after the optimizer's ``step``-th update, or
    sends the process a real SIGINT there (``real_signal``)."""

    def __init__(self, step, real_signal=False):
        super().__init__()
        self.step, self.real_signal = step, real_signal

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            if self.real_signal:
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise KeyboardInterrupt


def test_dequantized_epochs_depend_only_on_seed_and_epoch():
    images = np.random.default_rng(0).integers(0, 17, (10, 2, 2, 1))
    whole = [b.numpy() for b in data.dequantized_epochs(images, epochs=3, batch_size=4, seed=1)]
    tail = [b.numpy() for b in data.dequantized_epochs(images, epochs=3, first_epoch=2, batch_size=4, seed=1)]
    assert [len(b) for b in whole] == [4, 4, 2] * 3  # batches never straddle two epochs
    for a, b in zip(whole[6:], tail):
        np.testing.assert_array_equal(a, b)
    first, second = np.concatenate(whole[:3]), np.concatenate(whole[3:6])
    assert not np.array_equal(first, second)  # a new order and new noise every epoch
    for epoch in (first, second):  # each epoch holds every image once, counts + U[0, 1)
        np.testing.assert_array_equal(np.sort(np.floor(epoch).ravel()), np.sort(np.repeat(images.ravel(), 1)))
    other_seed = np.concatenate([b.numpy() for b in data.dequantized_epochs(images, epochs=1, batch_size=4, seed=2)])
    assert not np.array_equal(first, other_seed)


def test_interrupted_run_resumed_from_its_backup_ends_with_identical_weights(tmp_path):
    uninterrupted = tiny_glow()
    expected = training.fit_flow(uninterrupted, IMAGES, validation_images=IMAGES[:8],
                                 backup_dir=tmp_path / "kept", **FIT)
    assert set(expected.history) == {"loss", "bits_per_dim", "val_loss", "val_bits_per_dim"}
    metadata = json.loads((tmp_path / "kept" / "state" / "training_metadata.json").read_text())
    assert metadata["epoch"] == 3 and metadata["history"]["loss"] == expected.history["loss"]

    model = tiny_glow()
    with pytest.raises(KeyboardInterrupt):  # mid-epoch 1 (step 5 of 9): epoch 0 is backed up
        training.fit_flow(model, IMAGES, backup_dir=tmp_path / "b", callbacks=[InterruptAtStep(5, real_signal=True)],
                          **FIT)
    assert training.restored_epoch(tmp_path / "b") == 1
    resumed_model = tiny_glow()
    resumed = training.fit_flow(resumed_model, IMAGES, backup_dir=tmp_path / "b", **FIT)

    assert resumed.initial_epoch == 1 and resumed.epochs == 3
    assert int(resumed_model.optimizer.iterations.numpy()) == 9  # the optimizer state came back too
    difference = max(float(np.max(np.abs(a - b)))
                     for a, b in zip(uninterrupted.get_weights(), resumed_model.get_weights()))
    assert difference == 0.0  # bit-identical on CPU
    assert resumed.history["loss"] == expected.history["loss"]  # the whole history, epoch 0 restored


def test_backup_is_written_atomically_and_sigint_waits_for_it(tmp_path):
    model = tiny_glow()
    callback = training.BackupAndRestore(tmp_path)
    callback.set_model(model)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    callback._current_epoch = 2
    fired = []

    original = model.save_weights

    def save_weights_then_signal(path, **kwargs):
        original(path, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # arrives mid-save: held back until the state is complete
        fired.append(True)

    model.save_weights = save_weights_then_signal
    with pytest.raises(KeyboardInterrupt):
        callback._save_model()
    assert fired and training.restored_epoch(tmp_path) == 2
    assert sorted(os.listdir(tmp_path)) == ["state"]  # no staging folder left behind
    assert sorted(os.listdir(tmp_path / "state")) == ["latest.weights.h5", "training_metadata.json"]


def test_conditional_bits_per_dim_pairs_each_image_with_its_context_and_matches_val_loss():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 17, (10, 4, 4, 1))
    contexts = rng.standard_normal((10, 3)).astype(np.float32)
    model = tfinv.models.Glow((4, 4, 1), levels=1, steps_per_level=1, hidden_channels=4, num_levels=17,
                              context_shape=(3,), seed=1)
    result = training.fit_conditional_flow(model, images[:6], contexts[:6], epochs=1, batch_size=6,
                                           validation=(images[6:], contexts[6:]))
    # the validation set is evaluated as conditional_bits_per_dim does: val_loss is its NLL in nats
    val_bits = training.conditional_bits_per_dim(model, images[6:], contexts[6:])
    assert result.history["val_loss"][-1] == pytest.approx(val_bits * 16 * np.log(2.0), rel=1e-4)
    perturb_weights(model, 0.1, seed=2)  # the context then matters (its conditioner starts at zero)
    # fixed noise in order, image i with context i: the same value whatever the batch size
    noisy = np.concatenate([x.numpy() for x in data.dequantized_dataset(images, batch_size=4, shuffle=False,
                                                                        fixed_noise=True)])
    expected = model.bits_per_dim(noisy, contexts).numpy()
    assert training.conditional_bits_per_dim(model, images, contexts, batch_size=3) == pytest.approx(
        expected.mean(), rel=1e-5)
    assert training.conditional_bits_per_dim(model, images, contexts[::-1]) != pytest.approx(expected.mean(), rel=1e-3)
    with pytest.raises(ValueError, match=r"conditional_bits_per_dim: expected one context per image \(10\), got 9"):
        training.conditional_bits_per_dim(model, images, contexts[:9])


@pytest.mark.parametrize("jit", [False, True])
def test_evaluate_bits_per_dim_is_the_mean_over_every_example(jit):
    model = tfinv.models.Glow((8, 8, 1), levels=1, steps_per_level=1, hidden_channels=8, num_levels=17)
    images, labels = data.digits_arrays("test")
    dataset = data.dequantized_dataset(images[:50], labels[:50], batch_size=16, shuffle=False, fixed_noise=True,
                                       with_labels=True)
    expected = np.concatenate([model.bits_per_dim(x).numpy() for x, _ in dataset]).mean()
    assert training.evaluate_bits_per_dim(model, dataset, jit_compile=jit) == pytest.approx(expected, rel=1e-5)
    # Fixed noise: the same value whatever the batch size.
    assert training.dataset_bits_per_dim(model, images[:50], batch_size=7) == pytest.approx(expected, rel=1e-5)


MIRRORED = r'''
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
from tfinv import cli, data, layers, models, training

images = data.digits_arrays("train", with_labels=False)[0][:32]
batch = next(iter(data.dequantized_epochs(images, epochs=1, batch_size=16, seed=0)))

def glow():
    keras.utils.set_random_seed(0)
    return models.Glow((8, 8, 1), levels=1, steps_per_level=2, hidden_channels=8, num_levels=17, seed=0)

def act_norm_values(model, strategy=None):
    values = []
    for layer in model._flatten_layers():
        if isinstance(layer, layers.ActNorm):
            for variable in (layer.bias, layer.log_scale):
                local = strategy.experimental_local_results(variable.value) if strategy else [variable.value]
                values.append([np.asarray(v) for v in local])
    return values

single = glow()
single.initialize(batch)
expected = [v[0] for v in act_norm_values(single)]
strategy = training.make_strategy("mirrored")
with strategy.scope():
    model = glow()
    model.initialize(batch)  # cross-replica context, global batch
    after_init = act_norm_values(model, strategy)
    training.fit_flow(model, images, epochs=1, batch_size=16, seed=0, initialize=False)
    after_fit = act_norm_values(model, strategy)
report = {
    "replicas": strategy.num_replicas_in_sync,
    "init_spread": max(float(np.max(np.abs(r - v[0]))) for v in after_init for r in v),
    "init_vs_single_device": max(float(np.max(np.abs(v[0] - e))) for v, e in zip(after_init, expected)),
    "fit_spread": max(float(np.max(np.abs(r - v[0]))) for v in after_fit for r in v),
    "fit_moved": max(float(np.max(np.abs(v[0] - w[0]))) for v, w in zip(after_fit, after_init)),
    "count": len(after_init),
}
tiny = ["--levels", "1", "--steps-per-level", "1", "--hidden-channels", "8", "--epochs", "1", "--verbose", "0",
        "--max-train", "32", "--max-test", "16", "--batch-size", "16", "--num-samples", "4"]
report["cli"] = cli.main(["train", *tiny, "--strategy", "mirrored", "--out", sys.argv[1]])
print(json.dumps(report))
'''


def test_data_dependent_init_under_mirrored_strategy_is_identical_on_every_replica(tmp_path):
    """2 logical CPUs (a fresh process: logical devices must be set before TensorFlow starts)."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path / "run")], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2 and report["count"] == 4  # 2 ActNorms x (bias, log_scale)
    assert report["init_spread"] == 0.0 and report["fit_spread"] == 0.0
    assert report["init_vs_single_device"] <= 1e-6  # the global batch's statistics, not a shard's
    assert report["fit_moved"] > 0 and report["cli"] == 0
    assert (tmp_path / "run" / "model.keras").is_file()
