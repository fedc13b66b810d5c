"""The training loop shared by ``tfinv train``, the benchmarks and Python users.

Example::

    from tfinv import data, models, training

    images, _ = data.digits_arrays("train")
    model = models.Glow(data.DIGITS_SHAPE, steps_per_level=2, hidden_channels=16, num_levels=data.DIGITS_NUM_LEVELS)
    result = training.fit_flow(model, images, epochs=2, backup_dir="runs/glow/backup")  # more epochs for real
    print(training.dataset_bits_per_dim(model, data.digits_arrays("test")[0]))

`fit_flow` trains a `tfinv.FlowModel` by maximum likelihood on integer images (dequantised
every epoch), `fit_classifier` a model returning logits on ``(image, label)`` pairs. Both train on
`tfinv.data.dequantized_epochs`, whose epoch ``e`` depends only on ``(seed, e)``; with
``backup_dir`` they back the run up after every epoch through `BackupAndRestore` (Keras's
callback, written atomically), so a run interrupted at any point (SIGINT, SIGKILL, a preempted
machine) and started again with the same arguments continues from its last finished epoch and
ends with the same weights, bit for bit on CPU, as a run that was never interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from typing import Any, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfinv import data
from tfinv.files import default_file_mode, replace_directory

__all__ = [
    "BackupAndRestore",
    "FitResult",
    "conditional_bits_per_dim",
    "fit_conditional_flow",
    "dataset_bits_per_dim",
    "evaluate_bits_per_dim",
    "fit_classifier",
    "fit_flow",
    "make_strategy",
    "restored_epoch",
    "set_mixed_precision",
]


@dataclasses.dataclass
class FitResult:
    """What a training run did.

    Attributes:
        history: per-epoch logs of the *whole* run (``{"loss": [...], ...}``), including epochs
            run before a resume (restored from the backup).
        fit_seconds: wall time of this process's ``fit`` call.
        initial_epoch: the epoch this process started at (> 0 after a resume).
        epochs: epochs finished in total.
    """

    history: dict[str, list[float]]
    fit_seconds: float
    initial_epoch: int
    epochs: int


# ---------------------------------------------------------------- backups
_STATE = "state"
_WEIGHTS = "latest.weights.h5"
_METADATA = "training_metadata.json"


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Holds SIGINT back while the block runs, then delivers it: a backup is never left half-made."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(signal.SIGINT, None)
            else:
                raise KeyboardInterrupt


def restored_epoch(backup_dir: str | os.PathLike) -> int:
    """Number of finished epochs recorded in ``backup_dir`` by `BackupAndRestore` (0 if none)."""
    path = os.path.join(os.fspath(backup_dir), _STATE, _METADATA)
    if not os.path.isfile(path):
        return 0
    with open(path) as f:
        return int(json.load(f)["epoch"])


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's `keras.callbacks.BackupAndRestore`, saved atomically and once per epoch.

    At every epoch end the weights (model and optimizer) and the epoch count are written into a
    fresh folder that replaces ``backup_dir/state`` in one rename (`tfinv.files.replace_directory`),
    with SIGINT held back meanwhile: a kill or Ctrl-C at any moment leaves the previous epoch's
    complete backup. On ``fit``'s start the backup, if any, is loaded and ``fit`` continues at the
    recorded epoch. The per-epoch logs are kept in the backup too (`history`), so a resumed run
    reports its whole history.

    Backups are per epoch only (Keras's ``save_freq=N`` batches restarts the interrupted epoch
    from its first batch on resume, with weights that already saw part of it: the resumed run
    would differ from an uninterrupted one). Resuming is exact when the data of epoch ``e`` does
    not depend on how the run started, as with `tfinv.data.dequantized_epochs`.

    Under `tf.distribute.MultiWorkerMirroredStrategy`, as Keras's callback does, only the chief
    (``strategy.extended.should_checkpoint``) writes ``backup_dir``; every worker restores from it
    (a file system shared by the workers), so a job whose worker was killed restarts all workers
    at the chief's last finished epoch.

    Args:
        backup_dir: folder of the backup; used by nothing else.
        delete_checkpoint: remove ``backup_dir`` when ``fit`` ends normally (Keras's default);
            ``tfinv train`` passes False and removes it after its outputs are written.
    """

    def __init__(self, backup_dir: str | os.PathLike, delete_checkpoint: bool = True):
        super().__init__(os.fspath(backup_dir), save_freq="epoch", double_checkpoint=False,
                         delete_checkpoint=delete_checkpoint)
        state = os.path.join(self.backup_dir, _STATE)
        self._weights_path = os.path.join(state, _WEIGHTS)
        self._training_metadata_path = os.path.join(state, _METADATA)
        self.history: dict[str, list[float]] = {}

    def _writes(self) -> bool:
        """Whether this process writes the backup: always, except on the non-chief workers of a
        multi-worker strategy (they restore from the chief's backup, on a shared file system)."""
        return bool(self.model.distribute_strategy.extended.should_checkpoint)

    def on_train_begin(self, logs=None):
        if self._writes():
            for stale in _stale_staging(self.backup_dir):  # left by a run killed while saving
                shutil.rmtree(stale, ignore_errors=True)
        self.history = {}
        if os.path.isfile(self._training_metadata_path):
            with open(self._training_metadata_path) as f:
                self.history = json.load(f).get("history", {})
        super().on_train_begin(logs)

    def on_train_end(self, logs=None):
        if self._writes():  # a non-chief worker never removes the chief's backup
            super().on_train_end(logs)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        super().on_epoch_end(epoch, logs)

    def _save_model(self):
        if not self._writes():
            # A non-chief worker saves too (reading synchronised variables may take collective
            # ops every worker must join), into a scratch folder it removes.
            with tempfile.TemporaryDirectory(prefix="tfinv-worker-backup-") as scratch:
                self.model.save_weights(os.path.join(scratch, _WEIGHTS), overwrite=True)
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        with _sigint_deferred():
            staging = tempfile.mkdtemp(prefix=f".{_STATE}.staging-", dir=self.backup_dir)
            try:
                os.chmod(staging, default_file_mode(directory=True))
                self.model.save_weights(os.path.join(staging, _WEIGHTS), overwrite=True)
                metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen,
                            "history": self.history}
                with open(os.path.join(staging, _METADATA), "w") as f:
                    json.dump(metadata, f)
                    f.flush()
                    os.fsync(f.fileno())
                replace_directory(staging, os.path.join(self.backup_dir, _STATE))
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise


def _stale_staging(backup_dir: str) -> list[str]:
    if not os.path.isdir(backup_dir):
        return []
    prefix = f".{_STATE}.staging-"
    return [os.path.join(backup_dir, n) for n in os.listdir(backup_dir) if n.startswith(prefix)]


# ---------------------------------------------------------------- fitting
def _fit(
    model: keras.Model,
    make_batches,
    num_examples: int,
    *,
    epochs: int,
    batch_size: int,
    validation_data,
    backup_dir: str | os.PathLike | None,
    callbacks: Sequence[keras.callbacks.Callback],
    verbose: int | str,
    drop_remainder: bool,
) -> FitResult:
    first_epoch = min(restored_epoch(backup_dir), int(epochs)) if backup_dir is not None else 0
    backup = None
    all_callbacks: list[keras.callbacks.Callback] = [keras.callbacks.TerminateOnNaN()]
    if backup_dir is not None:
        backup = BackupAndRestore(backup_dir, delete_checkpoint=False)
        all_callbacks.append(backup)
    all_callbacks.extend(callbacks)
    steps = data.steps_per_epoch(num_examples, batch_size, drop_remainder)
    started = time.perf_counter()
    history = model.fit(
        make_batches(first_epoch),
        epochs=int(epochs),
        initial_epoch=first_epoch,
        steps_per_epoch=steps,
        validation_data=validation_data,
        shuffle=False,  # every epoch is shuffled by its own seed (dequantized_epochs)
        verbose=verbose,
        callbacks=all_callbacks,
    )
    fit_seconds = time.perf_counter() - started
    logs = backup.history if backup is not None else history.history
    logs = {k: [float(v) for v in vs] for k, vs in logs.items()}
    return FitResult(logs, fit_seconds, first_epoch, len(logs.get("loss", [])))


def fit_flow(
    model,
    images: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
    validation_images: np.ndarray | None = None,
    jit_compile: bool = False,
    backup_dir: str | os.PathLike | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | str = 0,
    drop_remainder: bool = False,
    optimizer: keras.optimizers.Optimizer | None = None,
    initialize: bool = True,
    labels: np.ndarray | None = None,
) -> FitResult:
    """Trains a flow by maximum likelihood on integer images; returns a `FitResult`.

    Steps: ``model.initialize`` (data-dependent ActNorm initialisation) on the first batch of
    epoch 0, ``compile`` with Adam (or ``optimizer``), and ``fit`` on
    `tfinv.data.dequantized_epochs` (fresh noise and order every epoch, a function of ``seed``
    and the epoch), with `keras.callbacks.TerminateOnNaN`.

    Args:
        model: a built `tfinv.FlowModel` (e.g. `tfinv.models.Glow`).
        images: ``(N, H, W, C)`` integer counts (e.g. `tfinv.data.load_arrays`).
        epochs: epochs in total (a resumed run continues up to this number).
        batch_size: examples per step.
        learning_rate: Adam's learning rate (ignored with ``optimizer``).
        seed: drives the data order and noise.
        validation_images: counts evaluated after every epoch (fixed noise), reported as
            ``val_loss`` / ``val_bits_per_dim``.
        jit_compile: XLA-compile the train step.
        backup_dir: back the run up there after every epoch (`BackupAndRestore`) and, if it holds
            a backup, continue from it. The folder is kept after training.
        callbacks: more Keras callbacks.
        verbose: Keras ``fit`` verbosity (0 silent, 1 progress bar, 2 one line per epoch).
        drop_remainder: drop each epoch's last, smaller batch (equal step shapes).
        optimizer: the optimizer (default ``keras.optimizers.Adam(learning_rate)``).
        initialize: run the data-dependent initialisation (False if the model already had it).
        labels: ``(N,)`` integer labels fed to ``fit`` as ``y`` beside the images (a
            `tfinv.models.FlowGMM` takes ``-1`` for unlabelled examples); ``None``: images alone.
    """
    images = np.asarray(images)
    if initialize:
        first = data.dequantized_epochs(images, epochs=1, batch_size=batch_size, seed=seed,
                                        drop_remainder=drop_remainder)
        model.initialize(next(iter(first)))
    model.compile(optimizer=optimizer or keras.optimizers.Adam(learning_rate), jit_compile=jit_compile)
    validation = None
    if validation_images is not None:
        validation = data.dequantized_dataset(validation_images, batch_size=batch_size, seed=seed,
                                              shuffle=False, fixed_noise=True)

    def make_batches(first_epoch: int) -> tf.data.Dataset:
        return data.dequantized_epochs(images, labels, epochs=epochs, first_epoch=first_epoch,
                                       batch_size=batch_size, seed=seed, drop_remainder=drop_remainder,
                                       with_labels=labels is not None)

    return _fit(model, make_batches, len(images), epochs=epochs, batch_size=batch_size,
                validation_data=validation, backup_dir=backup_dir, callbacks=callbacks,
                verbose=verbose, drop_remainder=drop_remainder)


def _with_contexts(dataset: tf.data.Dataset, contexts: np.ndarray) -> tf.data.Dataset:
    """``(x, index)`` batches -> ``(x, contexts[index])``."""
    table = tf.convert_to_tensor(np.asarray(contexts, np.float32))
    return dataset.map(lambda x, index: (x, tf.gather(table, index)))


def _check_contexts(images: np.ndarray, contexts: np.ndarray, what: str) -> np.ndarray:
    contexts = np.asarray(contexts, np.float32)
    if len(contexts) != len(images):
        raise ValueError(f"{what}: expected one context per image ({len(images)}), got {len(contexts)}")
    return contexts


def _fixed_noise_pairs(images: np.ndarray, contexts: np.ndarray, batch_size: int, seed: int,
                       what: str) -> tf.data.Dataset:
    """``(x, context)`` batches of integer images in order, dequantised with fixed noise (evaluation)."""
    images = np.asarray(images)
    contexts = _check_contexts(images, contexts, what)
    dataset = data.dequantized_dataset(images, np.arange(len(images)), batch_size=batch_size, seed=seed,
                                       shuffle=False, fixed_noise=True, with_labels=True)
    return _with_contexts(dataset, contexts)


def fit_conditional_flow(
    model,
    images: np.ndarray,
    contexts: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    jit_compile: bool | str = False,
    backup_dir: str | os.PathLike | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | str = 0,
) -> FitResult:
    """`fit_flow` for a conditional flow (e.g. `tfinv.models.ConditionalGlow`): maximum likelihood
    of ``log p(x | y)`` on integer images ``images`` ``(N, H, W, C)`` paired with ``contexts``
    ``(N,) + context_shape`` (row ``i`` goes with image ``i`` in every epoch: the epochs are
    `tfinv.data.dequantized_epochs` of the images, a resumed run sees the same batches).
    ``validation``: ``(images, contexts)`` evaluated after every epoch with fixed noise."""
    images = np.asarray(images)
    contexts = _check_contexts(images, contexts, "fit_conditional_flow")
    index = np.arange(len(images), dtype=np.int64)

    def make_batches(first_epoch: int) -> tf.data.Dataset:
        epochs_ds = data.dequantized_epochs(images, index, epochs=epochs, first_epoch=first_epoch,
                                            batch_size=batch_size, seed=seed, with_labels=True)
        return _with_contexts(epochs_ds, contexts)

    model.initialize(next(iter(make_batches(0))))  # a resumed run's backup then restores the weights
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=jit_compile)
    validation_data = None
    if validation is not None:
        validation_data = _fixed_noise_pairs(*validation, batch_size, seed, "fit_conditional_flow validation")
    return _fit(model, make_batches, len(images), epochs=epochs, batch_size=batch_size,
                validation_data=validation_data, backup_dir=backup_dir, callbacks=callbacks, verbose=verbose,
                drop_remainder=False)


def conditional_bits_per_dim(model, images: np.ndarray, contexts: np.ndarray, batch_size: int = 256,
                             seed: int = 0) -> float:
    """Mean ``-log p(x | y) / (D ln 2)`` of integer images with fixed dequantisation noise
    (as `dataset_bits_per_dim`), each image with its context row."""
    dataset = _fixed_noise_pairs(images, contexts, batch_size, seed, "conditional_bits_per_dim")
    total, count = 0.0, 0
    for x, context in dataset:
        total += float(tf.reduce_sum(tf.cast(model.bits_per_dim(x, context), tf.float64)))
        count += int(x.shape[0])
    if count == 0:
        raise ValueError("cannot evaluate bits/dim on an empty dataset")
    return total / count


def fit_classifier(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    jit_compile: bool = False,
    backup_dir: str | os.PathLike | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | str = 0,
    optimizer: keras.optimizers.Optimizer | None = None,
) -> FitResult:
    """Trains a model returning class logits on dequantised ``(image, label)`` pairs.

    Loss: sparse categorical cross-entropy from logits; metric ``accuracy``. Data, backups and
    arguments as in `fit_flow` (``validation`` is an ``(images, labels)`` pair).
    """
    images, labels = np.asarray(images), np.asarray(labels)
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )
    validation_ds = None
    if validation is not None:
        validation_ds = data.dequantized_dataset(*validation, batch_size=batch_size, seed=seed, shuffle=False,
                                                 fixed_noise=True, with_labels=True)

    def make_batches(first_epoch: int) -> tf.data.Dataset:
        return data.dequantized_epochs(images, labels, epochs=epochs, first_epoch=first_epoch,
                                       batch_size=batch_size, seed=seed, with_labels=True)

    return _fit(model, make_batches, len(images), epochs=epochs, batch_size=batch_size,
                validation_data=validation_ds, backup_dir=backup_dir, callbacks=callbacks,
                verbose=verbose, drop_remainder=False)


# ---------------------------------------------------------------- evaluation
def evaluate_bits_per_dim(model, dataset: tf.data.Dataset, jit_compile: bool = False) -> float:
    """Mean of ``model.bits_per_dim(x)`` over every example of ``dataset`` (batches of ``x`` or ``(x, y)``)."""
    batch_sum = tf.function(
        lambda x: tf.reduce_sum(tf.cast(model.bits_per_dim(x), tf.float64)),
        jit_compile=jit_compile,
        reduce_retracing=True,
    )
    total, count = 0.0, 0
    for batch in dataset:
        x = batch[0] if isinstance(batch, tuple) else batch
        total += float(batch_sum(x))
        count += int(x.shape[0])
    if count == 0:
        raise ValueError("cannot evaluate bits/dim on an empty dataset")
    return total / count


def dataset_bits_per_dim(model, images: np.ndarray, batch_size: int = 256, seed: int = 0,
                         jit_compile: bool = False) -> float:
    """Bits/dim of ``images`` (integer counts) with fixed noise: reproducible for a given ``seed``,
    independent of batch size and order (unlike ``fit``'s running averages)."""
    dataset = data.dequantized_dataset(images, batch_size=batch_size, seed=seed, shuffle=False, fixed_noise=True)
    return evaluate_bits_per_dim(model, dataset, jit_compile)


def finite_or_none(value: Any) -> float | None:
    """``float(value)`` if finite, else ``None`` (JSON has no NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------- strategies and precision
#: ``tfinv train --strategy`` values.
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
#: ``tfinv train --mixed-precision`` values -> Keras dtype policies.
MIXED_PRECISION = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def make_strategy(name: str = "default") -> tf.distribute.Strategy:
    """The `tf.distribute.Strategy` called ``name``.

    * ``"default"``: the current (default, single-device) strategy;
    * ``"mirrored"``: `tf.distribute.MirroredStrategy` over the local GPUs, or the logical CPUs;
    * ``"multi_worker"``: `tf.distribute.MultiWorkerMirroredStrategy`, configured by the
      ``TF_CONFIG`` environment variable (cluster and this worker's task);
    * ``"tpu"``: `tf.distribute.TPUStrategy` on the TPU the cluster resolver finds.

    Build the model and call `fit_flow` inside ``strategy.scope()``. `fit_flow`'s data-dependent
    initialisation then runs once, in the cross-replica context, on the *global* first batch,
    and assigns the same ActNorm parameters to every replica (initialising each replica on its own
    shard would make them diverge). The loss is per example (`tfinv.FlowModel.compute_loss`), so
    Keras's reduction over replicas is correct. ``jit_compile=True`` under a strategy fails on
    logical CPUs (see the project's STACK notes); TPUs compile every step with XLA.

    Raises:
        ValueError: unknown name, or ``"tpu"`` without a reachable TPU, or ``"multi_worker"``
            with an unreadable ``TF_CONFIG``.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return _mirrored_strategy()
    if name == "multi_worker":
        config = os.environ.get("TF_CONFIG")
        if config:
            try:
                json.loads(config)
            except ValueError as err:
                raise ValueError(f"--strategy multi_worker: TF_CONFIG is not valid JSON ({err})") from err
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as err:
            raise ValueError(f"--strategy tpu: no TPU found ({str(err).splitlines()[0]})") from err
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")


@functools.lru_cache(maxsize=None)
def _mirrored_strategy() -> tf.distribute.MirroredStrategy:
    """One `MirroredStrategy` per process: a second instance's collective all-reduce was seen to
    collide with the first's (TF 2.21: "Shape mismatch in the collective instance")."""
    return tf.distribute.MirroredStrategy()


def set_mixed_precision(name: str | None) -> str:
    """Sets the global Keras dtype policy for ``name`` (``"bf16"``, ``"fp16"``; ``None``: float32);
    returns the policy's name. Call it before building the model."""
    if name is None:
        policy = "float32"
    elif name in MIXED_PRECISION:
        policy = MIXED_PRECISION[name]
    else:
        raise ValueError(f"unknown mixed precision {name!r}; expected one of {sorted(MIXED_PRECISION)}")
    keras.config.set_dtype_policy(policy)
    return policy
