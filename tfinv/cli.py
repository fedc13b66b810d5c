"""The ``tfinv`` command line: ``tfinv train`` and ``tfinv sample`` (plus ``tfinv export`` and
``tfinv serve``, which the export and serving stages register through entry points).

Examples::

    tfinv train --dataset digits --epochs 10 --out runs/glow-digits
    tfinv train --dataset faces.npz --num-levels 256 --levels 3 --out runs/faces
    tfinv sample --model runs/glow-digits/model.keras --n 64 --temperature 0.7 --out grid.png
    tfinv train --model revvit --epochs 30 --dim 32 --depth 4 --out runs/revvit-digits

``train`` writes ``DIR/model.keras``, ``DIR/samples.png`` (a grid of samples) and
``DIR/metrics.json`` (bits/dim of the train and test splits, time, parameters, config). For a
classifier (``--model revvit``) it trains on the labels and writes ``DIR/model.keras`` and
``DIR/metrics.json`` (train and test accuracy); no samples.
User errors (bad data, a file that is not a tfinv model, an impossible configuration, an
unusable destination, a bad option) print one line ``tfinv <command>: error: ...`` and exit with
code 2; `main` returns the exit code. Destinations are checked before any training.

Run folder: training backs up to ``DIR/backup`` after every epoch; the outputs are written into a
staging folder beside ``DIR`` that replaces ``DIR`` in one atomic exchange
(`tfinv.files.staged_directory`), so a killed run leaves the previous run's files untouched and
a folder never mixes two runs; entries tfinv did not write are carried over. SIGINT/SIGTERM end
training with one line naming the backup (exit code 130); ``--resume`` continues it
(`tfinv.training`). ``tfinv --verbose COMMAND`` shows TensorFlow's start-up logging, hidden by
default (`tfinv._startup`).

The training loop itself lives in `tfinv.training` (shared with the benchmarks); this module
parses arguments, checks inputs and destinations, and reports.

Models are built by the functions in `MODEL_BUILDERS`; add one with `register_model`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Callable, Iterator, Sequence

__all__ = ["MODEL_BUILDERS", "ModelBuilder", "UsageError", "build_parser", "main", "register_model"]


class UsageError(Exception):
    """An error caused by the command's arguments or inputs: reported in one line, exit code 2."""


@contextlib.contextmanager
def _as_usage_error() -> Iterator[None]:
    """Turns the library's input-validation errors into `UsageError` (only around user input)."""
    try:
        yield
    except (ValueError, FileNotFoundError, IsADirectoryError) as err:
        raise UsageError(str(err)) from err


# ---------------------------------------------------------------- model registry
@dataclasses.dataclass(frozen=True)
class ModelBuilder:
    """A model the CLI can train.

    Attributes:
        build: ``build(args, input_shape, num_levels) -> keras.Model`` from the parsed arguments,
            the shape of one image and the data's pixel levels; a classifier's builder also gets
            ``num_classes=`` (the number of label values).
        description: one line for ``--help``.
        task: ``"density"`` (a `FlowModel` trained by maximum likelihood on images alone) or
            ``"classification"`` (a model returning logits, trained on ``(image, label)`` pairs
            with sparse categorical cross-entropy).
    """

    build: Callable[..., Any]
    description: str
    task: str = "density"


TASKS = ("density", "classification")
#: ``--strategy`` choices (`tfinv.training.make_strategy`), listed here so --help needs no TensorFlow.
STRATEGY_NAMES = ("default", "mirrored", "multi_worker", "tpu")


#: name -> `ModelBuilder`; ``tfinv train --model NAME`` accepts exactly these names.
MODEL_BUILDERS: dict[str, ModelBuilder] = {}


def register_model(name: str, description: str, task: str = "density"):
    """Decorator registering ``build(args, input_shape, num_levels)`` as ``--model name``
    (``task``: ``"density"`` or ``"classification"``, see `ModelBuilder`)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")

    def decorator(build):
        if name in MODEL_BUILDERS:
            raise ValueError(f"a model named {name!r} is already registered")
        MODEL_BUILDERS[name] = ModelBuilder(build, description, task)
        return build

    return decorator


@register_model("glow", "multi-scale Glow (tfinv.models.Glow), a flow trained by maximum likelihood")
def _build_glow(args: argparse.Namespace, input_shape: tuple[int, ...], num_levels: int):
    from tfinv.models import Glow

    return Glow(
        input_shape,
        levels=args.levels,
        steps_per_level=args.steps_per_level,
        hidden_channels=args.hidden_channels,
        coupling=args.coupling,
        num_levels=num_levels,
        seed=args.seed,
        linear=args.linear,
        name="glow",
    )


@register_model(
    "mixerflow",
    "MixerFlow (tfinv.models.MixerFlow): MLP-Mixer blocks on image patches as a flow, trained by maximum likelihood",
)
def _build_mixerflow(args: argparse.Namespace, input_shape: tuple[int, ...], num_levels: int):
    from tfinv.models import MixerFlow

    return MixerFlow(
        input_shape,
        patch_size=args.patch_size,
        num_blocks=args.depth,
        hidden_units=args.hidden_channels,
        num_levels=num_levels,
        seed=args.seed,
        name="mixerflow",
    )


@register_model(
    "revvit",
    "reversible vision transformer classifier (tfinv.models.RevViT), trained on the labels",
    task="classification",
)
def _build_revvit(args: argparse.Namespace, input_shape: tuple[int, ...], num_levels: int, num_classes: int):
    from tfinv.models import RevViT

    return RevViT(
        patch_size=args.patch_size,
        dim=args.dim,
        depth=args.depth,
        heads=args.heads,
        num_classes=num_classes,
        memory_efficient=args.memory_efficient,
        image_shape=input_shape,
        input_scale=1.0 / num_levels,
        name="revvit",
    )


# ---------------------------------------------------------------- helpers
def _write_metrics(path: str, args: argparse.Namespace, model, result, started: float,
                   **task_fields: Any) -> dict:
    """Writes ``metrics.json`` (whole or not at all): the task's figures plus what every run
    records (epochs, time, parameters, history, the CLI options and the model config)."""
    from tfinv.files import atomic_write
    from tfinv.training import finite_or_none

    options = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    metrics = {
        "model": args.model,
        "dataset": os.fspath(args.dataset),
        **task_fields,
        "epochs": result.epochs,
        "resumed_at_epoch": result.initial_epoch,
        "fit_seconds": round(result.fit_seconds, 3),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "num_parameters": int(model.count_params()),
        "history": {k: [finite_or_none(v) for v in vs] for k, vs in result.history.items()},
        "config": {"cli": options, "model": model.get_config()},
    }
    with atomic_write(path) as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    return metrics


def _number(kind, text: str, expected: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _number(int, text, "an integer >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _number(float, text, "a finite number > 0")
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


def _temperature(text: str) -> float:
    value = _positive_float(text)
    if value > FLOAT32_MAX:  # the noise is float32: a larger factor overflows to inf
        raise argparse.ArgumentTypeError(f"expected a temperature <= {FLOAT32_MAX:.4g} (float32), got {text}")
    return value


FLOAT32_MAX = 3.4028234663852886e38


def _seed(text: str) -> int:
    value = _number(int, text, "a seed in [0, 2**32 - 1]")
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, 2**32 - 1], got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``tfinv train: error: ...``), exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ---------------------------------------------------------------- train
#: Files ``tfinv train`` writes into its run folder, and the folder of the run's backup.
RUN_FILES = ("model.keras", "samples.png", "metrics.json")
BACKUP_DIR = "backup"
#: Options a resumed run may change (they do not affect the weights of the epochs already run).
RESUMABLE_CHANGES = ("epochs", "verbose", "resume", "num_samples", "temperature", "max_test", "out")


def _run_options(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k not in ("func", "command", "tf_logging")}


def _prepare_backup(args: argparse.Namespace, out: str) -> str:
    """Checks ``--resume`` against ``OUT/backup`` before any training; returns the backup folder."""
    from tfinv import training

    backup = os.path.join(out, BACKUP_DIR)
    options_path = os.path.join(backup, "options.json")
    done = training.restored_epoch(backup) if os.path.isdir(backup) else 0
    if not args.resume:
        if _has_state(backup):
            raise UsageError(
                f"{backup} holds the backup of an interrupted run ({done} epoch(s) done): pass --resume "
                f"to continue it, or remove that folder to start again"
            )
        return backup
    if os.path.isfile(options_path):
        with open(options_path) as f:
            before = json.load(f)
        now = json.loads(json.dumps(_run_options(args)))
        changed = sorted(k for k in set(before) | set(now)
                         if k not in RESUMABLE_CHANGES and before.get(k) != now.get(k))
        if changed:
            detail = ", ".join(f"--{k.replace('_', '-')} {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
            raise UsageError(f"--resume needs the options of the interrupted run; changed: {detail}")
    return backup


def _has_state(backup: str) -> bool:
    """True if ``backup`` holds a training state (not just the options of a run that never got
    through an epoch)."""
    return os.path.isdir(os.path.join(backup, "state"))


def _record_options(args: argparse.Namespace, backup: str) -> None:
    from tfinv.files import atomic_write

    os.makedirs(backup, exist_ok=True)
    with atomic_write(os.path.join(backup, "options.json")) as f:
        json.dump(_run_options(args), f, indent=2)


@contextlib.contextmanager
def _interrupts_reported(backup: str) -> Iterator[None]:
    """SIGINT/SIGTERM during training: one line naming the backup, exit code 130 (no traceback)."""
    import signal

    from tfinv import training

    def terminate(signum, frame):
        raise KeyboardInterrupt

    import tensorflow as tf

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except KeyboardInterrupt:
        done = training.restored_epoch(backup) if os.path.isdir(backup) else 0
        if not done:
            raise _Interrupted("interrupted before the first epoch ended; nothing to resume") from None
        raise _Interrupted(
            f"interrupted; {done} epoch(s) backed up in {backup}: run the same command with --resume to continue"
        ) from None
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError) as err:
        if not _in_cluster():
            raise
        # A peer of a multi-worker job died (killed, preempted): the collective ops abort here.
        done = training.restored_epoch(backup) if os.path.isdir(backup) else 0
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise _ClusterFailure(
            f"a worker of the cluster failed ({reason}); {done} epoch(s) backed up in {backup}: restart every "
            f"worker with the same command and --resume to continue"
        ) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Interrupted(Exception):
    """Training stopped by a signal: reported in one line, exit code 130."""


class _ClusterFailure(Exception):
    """A multi-worker job lost a worker: reported in one line, exit code 75 (EX_TEMPFAIL: restart
    the workers with ``--resume``)."""


#: Exit code of a multi-worker run whose cluster lost a worker (sysexits' EX_TEMPFAIL: retry).
EXIT_CLUSTER_FAILURE = 75


def _train(args: argparse.Namespace) -> int:
    from tfinv import data, files

    started = time.perf_counter()
    with _as_usage_error():
        out = files.check_output_directory(args.out, "--out")
    backup = _prepare_backup(args, out)
    classify = MODEL_BUILDERS[args.model].task == "classification"
    with _as_usage_error():
        num_levels = data.resolve_num_levels(args.dataset, args.num_levels)
        train_images, train_labels = data.load_arrays(
            args.dataset, "train", key=args.key, num_levels=num_levels, with_labels=classify
        )
        test_images, test_labels = data.load_arrays(
            args.dataset, "test", key=args.key, num_levels=num_levels, with_labels=classify
        )
    train_images = train_images[: args.max_train]
    test_images = test_images[: args.max_test]

    import keras

    from tfinv import training

    with _as_usage_error():
        strategy = training.make_strategy(args.strategy)
    policy = keras.config.dtype_policy()
    training.set_mixed_precision(args.mixed_precision)
    created = not os.path.exists(out)
    try:
        return _train_reporting_precision(args, out, backup, strategy, classify, train_images, train_labels,
                                          test_images, test_labels, num_levels, started)
    except BaseException:
        if _is_chief():  # other workers of a cluster never write the run folder
            _remove_empty_backup(backup, out if created else None)
        raise
    finally:
        keras.config.set_dtype_policy(policy)  # in-process callers keep their policy


def _train_reporting_precision(args, *rest) -> int:
    """`_train_in_scope`; an op that fails under ``--mixed-precision`` becomes one usage line."""
    import keras
    import tensorflow as tf

    try:
        return _train_in_scope(args, *rest)
    except (TypeError, tf.errors.InvalidArgumentError) as err:
        if args.mixed_precision is None:
            raise
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"--mixed-precision {args.mixed_precision}: model {args.model!r} does not run under "
            f"{keras.config.dtype_policy().name} ({first_line})"
        ) from err


def _train_in_scope(args, out, backup, strategy, classify, train_images, train_labels, test_images, test_labels,
                    num_levels, started) -> int:
    import keras

    input_shape = tuple(int(s) for s in train_images.shape[1:])
    # Every worker of a multi-worker job restores from the chief's backup (Keras's multi-worker
    # BackupAndRestore assumes a shared file system); only the chief writes it and the outputs.
    chief = _is_chief()
    keras.utils.set_random_seed(args.seed)
    if classify:
        train_split = (train_images, train_labels[: args.max_train])
        test_split = (test_images, test_labels[: args.max_test])
        with strategy.scope():
            return _train_classifier(args, out, backup, train_split, test_split, num_levels, started, chief)
    with strategy.scope():
        return _train_flow(args, out, backup, train_images, test_images, input_shape, num_levels, started, chief)


def _train_flow(args: argparse.Namespace, out: str, backup: str, train_images, test_images, input_shape,
                num_levels: int, started: float, chief: bool) -> int:
    """``tfinv train`` for a flow (inside the strategy's scope): fit by maximum likelihood, report bits/dim."""
    from tfinv import data, files, training

    with _as_usage_error():
        model = MODEL_BUILDERS[args.model].build(args, input_shape, num_levels)
    if chief:
        _record_options(args, backup)
    with _interrupts_reported(backup):
        result = training.fit_flow(
            model, train_images, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
            seed=args.seed, validation_images=test_images, jit_compile="auto" if args.jit is None else args.jit, verbose=args.verbose,
            backup_dir=backup,
        )
        # Bits/dim of the whole splits with fixed noise: reproducible, unlike fit's running averages.
        evaluation = dict(batch_size=args.batch_size, seed=args.seed, jit_compile=bool(args.jit))
        train_bpd = training.dataset_bits_per_dim(model, train_images, **evaluation)
        test_bpd = training.dataset_bits_per_dim(model, test_images, **evaluation)
        samples = model.sample(args.num_samples, temperature=args.temperature, seed=args.seed)
        if not chief:
            return _save_as_worker(model)
        # Every output is written into a staging folder that replaces OUT in one step.
        with files.staged_directory(out, keep=_foreign_entries(out)) as staging:
            files.save_model_atomic(model, os.path.join(staging, "model.keras"))
            data.save_image_grid(samples.numpy(), os.path.join(staging, "samples.png"), num_levels)
            metrics = _write_metrics(
                os.path.join(staging, "metrics.json"), args, model, result, started,
                num_levels=num_levels, input_shape=list(input_shape),
                num_train=int(len(train_images)), num_test=int(len(test_images)),
                train_bits_per_dim=training.finite_or_none(train_bpd),
                test_bits_per_dim=training.finite_or_none(test_bpd),
            )
    print(
        f"train bits/dim {train_bpd:.4f}, test bits/dim {test_bpd:.4f} after {metrics['epochs']} epoch(s)"
        f"{_resumed(result)} in {result.fit_seconds:.1f} s; wrote {', '.join(_written(out, RUN_FILES))}"
    )
    if not (math.isfinite(train_bpd) and math.isfinite(test_bpd)):
        print("tfinv train: training diverged (non-finite bits/dim); try a smaller --lr", file=sys.stderr)
        return 1
    return 0


def _remove_empty_backup(backup: str, created_out: str | None) -> None:
    """After a failure before the first epoch was backed up: removes the backup folder (and the
    run folder, if this run created it and it is empty), so nothing is left to trip a rerun."""
    import shutil

    if os.path.isdir(backup) and not _has_state(backup):
        shutil.rmtree(backup, ignore_errors=True)
    if created_out is not None and os.path.isdir(created_out) and not os.listdir(created_out):
        os.rmdir(created_out)


def _cluster_task() -> tuple[str, int]:
    """This process's ``(task type, index)`` in ``TF_CONFIG`` (``("chief", 0)`` without one)."""
    try:
        task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
    except ValueError:
        return "chief", 0
    return str(task.get("type", "chief")), int(task.get("index", 0))


def _in_cluster() -> bool:
    """True when ``TF_CONFIG`` names a cluster of several tasks (a multi-worker job)."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except ValueError:
        return False
    return sum(len(tasks) for tasks in cluster.values() if isinstance(tasks, list)) > 1


def _is_chief() -> bool:
    """True for the process that writes the outputs: the chief, or worker 0 of a cluster without one."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except ValueError:
        cluster = {}
    kind, index = _cluster_task()
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)


def _save_as_worker(model) -> int:
    """A non-chief worker's part of the chief's save: the same save into a private temporary
    folder, then removed. Saving reads synchronised variables through collective ops that every
    worker of a multi-worker strategy must join (a worker that skipped it would leave the chief
    waiting for it); only the chief's copy is kept. Returns 0."""
    import shutil
    import tempfile

    from tfinv import files

    scratch = tempfile.mkdtemp(prefix="tfinv-worker-save-")
    try:
        files.save_model_atomic(model, os.path.join(scratch, "model.keras"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _foreign_entries(out: str) -> tuple[str, ...]:
    """Entries of an existing run folder that tfinv did not write: kept in the new folder."""
    if not os.path.isdir(out):
        return ()
    ours = set(RUN_FILES) | {BACKUP_DIR}
    return tuple(name for name in sorted(os.listdir(out)) if name not in ours)


def _written(out: str, names: Sequence[str]) -> list[str]:
    return [os.path.join(out, name) for name in names]


def _resumed(result) -> str:
    return f" (resumed after epoch {result.initial_epoch})" if result.initial_epoch else ""


def _train_classifier(args: argparse.Namespace, out: str, backup: str, train_split, test_split,
                      num_levels: int, started: float, chief: bool = True) -> int:
    """``tfinv train`` for a classification model: fit on (image, label), report accuracy."""
    from tfinv import data, files, training

    (train_images, train_labels), (test_images, test_labels) = train_split, test_split
    input_shape = tuple(int(s) for s in train_images.shape[1:])
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    with _as_usage_error():
        model = MODEL_BUILDERS[args.model].build(args, input_shape, num_levels, num_classes=num_classes)
    if chief:
        _record_options(args, backup)
    with _interrupts_reported(backup):
        result = training.fit_classifier(
            model, train_images, train_labels, epochs=args.epochs, batch_size=args.batch_size,
            learning_rate=args.lr, seed=args.seed, validation=test_split, jit_compile=bool(args.jit),
            verbose=args.verbose, backup_dir=backup,
        )
        # Whole splits with fixed noise: reproducible, unlike fit's running averages.
        evaluation = dict(batch_size=args.batch_size, seed=args.seed, shuffle=False, fixed_noise=True,
                          with_labels=True)
        train_scores = model.evaluate(data.dequantized_dataset(train_images, train_labels, **evaluation),
                                      return_dict=True, verbose=0)
        test_scores = model.evaluate(data.dequantized_dataset(test_images, test_labels, **evaluation),
                                     return_dict=True, verbose=0)
        if not chief:
            return _save_as_worker(model)
        with files.staged_directory(out, keep=_foreign_entries(out)) as staging:
            files.save_model_atomic(model, os.path.join(staging, "model.keras"))
            metrics = _write_metrics(
                os.path.join(staging, "metrics.json"), args, model, result, started,
                task="classification", num_levels=num_levels, input_shape=list(input_shape),
                num_classes=num_classes, num_train=int(len(train_images)), num_test=int(len(test_images)),
                train_accuracy=training.finite_or_none(train_scores["accuracy"]),
                test_accuracy=training.finite_or_none(test_scores["accuracy"]),
                train_loss=training.finite_or_none(train_scores["loss"]),
                test_loss=training.finite_or_none(test_scores["loss"]),
            )
    print(
        f"train accuracy {train_scores['accuracy']:.4f}, test accuracy {test_scores['accuracy']:.4f} "
        f"after {metrics['epochs']} epoch(s){_resumed(result)} in {result.fit_seconds:.1f} s; "
        f"wrote {', '.join(_written(out, ('model.keras', 'metrics.json')))}"
    )
    if not (math.isfinite(train_scores["loss"]) and math.isfinite(test_scores["loss"])):
        print("tfinv train: training diverged (non-finite loss); try a smaller --lr", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- sample
def _sample(args: argparse.Namespace) -> int:
    import tfinv
    from tfinv import data, files

    with _as_usage_error():
        out = files.check_output_file(args.out, "--out", suffix=".png")
        model = tfinv.load_model(args.model)
    num_levels = args.num_levels or getattr(model, "num_levels", None)
    if num_levels is None:
        raise UsageError(f"{args.model!r} does not record its pixel levels; pass --num-levels")
    with _as_usage_error():
        samples = model.sample(args.n, temperature=args.temperature, seed=args.seed)
        data.save_image_grid(samples.numpy(), out, num_levels, scale=args.scale)
    print(f"wrote {args.n} samples (temperature {args.temperature}) to {args.out}")
    return 0


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The ``tfinv`` argument parser (subcommands ``train`` and ``sample``)."""
    from tfinv.blocks.glow_step import COUPLINGS, LINEAR_LAYERS

    parser = _Parser(prog="tfinv", description="Invertible networks in TensorFlow/Keras.")
    parser.add_argument(
        "--verbose", action="store_true", dest="tf_logging",
        help="show TensorFlow's start-up and runtime logging (quiet by default); give it before the command",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="train a model, save it, a sample grid and metrics",
        description="Train a model on dequantised integer images and write DIR/model.keras, "
        "DIR/samples.png and DIR/metrics.json (classifiers such as revvit: no samples, "
        "accuracy in the metrics).",
    )
    train.add_argument(
        "--model",
        default="glow",
        choices=sorted(MODEL_BUILDERS),
        help="; ".join(f"{k}: {v.description}" for k, v in sorted(MODEL_BUILDERS.items())),
    )
    train.add_argument("--dataset", default="digits", help="'digits' (embedded) or the path of an .npz file")
    train.add_argument("--key", default=None, help="image array name in an .npz file (default 'images')")
    train.add_argument(
        "--num-levels", type=_positive_int, default=None,
        help="pixel levels of an .npz file's counts (default 256; digits: 17)",
    )
    train.add_argument("--epochs", type=_positive_int, default=10)
    train.add_argument("--batch-size", type=_positive_int, default=64)
    train.add_argument("--levels", type=_positive_int, default=2, help="Glow scales L")
    train.add_argument("--steps-per-level", type=_positive_int, default=4, help="Glow steps K per scale")
    train.add_argument("--hidden-channels", type=_positive_int, default=64, help="coupling network width (Glow), hidden units (MixerFlow)")
    train.add_argument("--coupling", default="affine", choices=sorted(COUPLINGS))
    train.add_argument("--patch-size", type=_positive_int, default=2, help="RevViT / MixerFlow patch side (divides H and W)")
    train.add_argument("--dim", type=_positive_int, default=32, help="RevViT width (features per stream)")
    train.add_argument("--depth", type=_positive_int, default=4, help="RevViT reversible blocks / MixerFlow blocks")
    train.add_argument("--heads", type=_positive_int, default=2, help="RevViT attention heads (divide --dim)")
    train.add_argument(
        "--memory-efficient", action=argparse.BooleanOptionalAction, default=True,
        help="RevViT: rebuild activations in the backward pass instead of storing them",
    )
    train.add_argument(
        "--linear", default="inv_conv1x1", choices=sorted(LINEAR_LAYERS),
        help="channel-mixing layer of every Glow step (tfinv.blocks.glow_step.LINEAR_LAYERS)",
    )
    train.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate")
    train.add_argument("--seed", type=_seed, default=0, help="seed of weights, shuffling, noise and samples")
    train.add_argument(
        "--jit", action=argparse.BooleanOptionalAction, default=None,
        help="XLA-compile the train step (default: FlowModel.compile's choice, XLA when the model "
        "compiles; --no-jit for short runs, where the compile outweighs the faster steps)",
    )
    train.add_argument(
        "--strategy", default="default", choices=list(STRATEGY_NAMES),
        help="tf.distribute strategy: mirrored (local GPUs or logical CPUs), multi_worker (reads "
        "TF_CONFIG; only the chief writes outputs), tpu (fails clearly without a TPU)",
    )
    train.add_argument(
        "--mixed-precision", default=None, choices=["bf16", "fp16"],
        help="Keras mixed-precision policy (mixed_bfloat16 / mixed_float16); default float32",
    )
    train.add_argument("--max-train", type=_positive_int, default=None, help="use only the first N train images")
    train.add_argument("--max-test", type=_positive_int, default=None, help="use only the first N test images")
    train.add_argument("--num-samples", type=_positive_int, default=64, help="samples in samples.png")
    train.add_argument("--temperature", type=_temperature, default=0.7, help="sampling temperature")
    train.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1, help="Keras fit verbosity")
    train.add_argument(
        "--out", required=True,
        help="run folder (created if needed); its outputs are staged beside it and swapped in at the end, "
        "so an interrupted run leaves the previous run's files untouched",
    )
    train.add_argument(
        "--resume", action="store_true",
        help="continue the interrupted run backed up in OUT/backup (same options; --epochs may grow)",
    )
    train.set_defaults(func=_train)

    sample = commands.add_parser(
        "sample", formatter_class=argparse.ArgumentDefaultsHelpFormatter, help="draw samples from a saved model into a PNG grid",
        description="Load a .keras model saved by `tfinv train` and write a PNG grid of samples.",
    )
    sample.add_argument("--model", required=True, help="path of a .keras file written by tfinv")
    sample.add_argument("--n", type=_positive_int, default=64, help="number of samples")
    sample.add_argument("--temperature", type=_temperature, default=0.7)
    sample.add_argument("--seed", type=_seed, default=0)
    sample.add_argument("--num-levels", type=_positive_int, default=None, help="override the model's pixel levels")
    sample.add_argument("--scale", type=_positive_int, default=4, help="pixel upscaling of the PNG")
    sample.add_argument("--out", default="samples.png", help="PNG file to write")
    sample.set_defaults(func=_sample)
    _add_plugin_commands(commands)
    return parser


#: Entry-point group through which later stages add subcommands (``tfinv export``, ``tfinv
#: serve``): the library never imports those stages, they register themselves (setup.cfg).
PLUGIN_GROUP = "tfinv.commands"


def _add_plugin_commands(commands) -> None:
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        try:
            register = entry.load()
        except ImportError as err:  # the stage's optional dependencies are not installed
            stub = commands.add_parser(entry.name, help=f"(unavailable: {err})")
            stub.set_defaults(func=_unavailable(entry.name, err))
            continue
        register(commands)


def _unavailable(name: str, err: Exception):
    def run(args: argparse.Namespace) -> int:
        raise UsageError(f"'tfinv {name}' needs extra dependencies: {err} (pip install 'tfinv[export,serving]')")

    return run


def _command_name(argv: Sequence[str]) -> str | None:
    """The subcommand of ``argv`` (its first token that is not an option), or None."""
    return next((token for token in argv if not token.startswith("-")), None)


def _lean_command(name: str | None):
    """The ``register`` function of plugin command ``name`` if it runs without TensorFlow (it says
    so with ``register.needs_tensorflow = False``, as ``tfinv serve`` and ``tfinv query`` do),
    else None."""
    if name is None or name in ("train", "sample"):
        return None
    from importlib.metadata import entry_points

    for entry in entry_points(group=PLUGIN_GROUP, name=name):
        try:
            register = entry.load()
        except ImportError:  # reported by the full parser's stub
            return None
        return register if getattr(register, "needs_tensorflow", True) is False else None
    return None


def _lean_parser(name: str, register) -> argparse.ArgumentParser:
    """A ``tfinv`` parser holding only plugin command ``name`` (built without importing TensorFlow)."""
    parser = _Parser(prog="tfinv", description="Invertible networks in TensorFlow/Keras.")
    parser.add_argument("--verbose", action="store_true", dest="tf_logging", help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``tfinv`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    0 on success, 2 on a usage error (one line on stderr, no traceback), 1 if training diverged,
    130 if training was interrupted (SIGINT/SIGTERM; one line naming the backup), 75 if a worker
    of a multi-worker job failed (one line: restart every worker with ``--resume``).

    Commands that need no TensorFlow (``tfinv serve``, ``tfinv query``, ``tfinv serve-config``)
    run without importing it: ``tfinv serve`` is the same lean ONNX server as ``tfinv-serve``.
    Every other command imports TensorFlow first, with its start-up logging held back when this
    process is the ``tfinv`` console command (`tfinv._startup`; ``tfinv --verbose`` shows it).
    """
    from tfinv import _startup

    argv = list(sys.argv[1:] if argv is None else argv)
    name = _command_name(argv)
    lean = _lean_command(name)
    if lean is not None:
        parser = _lean_parser(name, lean)
    else:
        if _startup.is_quiet_command():
            _startup.import_tensorflow(quiet=True)
        parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse reports its own errors (and --help) this way
        return int(exit_.code or 0)
    try:
        return args.func(args)
    except UsageError as err:
        print(f"tfinv {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a destination that became unwritable, a full disk: the user's to fix
        print(f"tfinv {args.command}: error: {err}", file=sys.stderr)
        return 2
    except _Interrupted as err:
        print(f"tfinv {args.command}: {err}", file=sys.stderr)
        return 130
    except _ClusterFailure as err:
        print(f"tfinv {args.command}: {err}", file=sys.stderr)
        return EXIT_CLUSTER_FAILURE
    except KeyboardInterrupt:  # before training started: nothing to back up
        print(f"tfinv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
