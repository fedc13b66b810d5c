"""The ``tfinv`` command line: ``tfinv train``, ``tfinv sample`` and ``tfinv diagnose`` (plus ``tfinv export`` and
``tfinv serve``, which the export and serving stages register through entry points).

Examples::

    tfinv train --dataset digits --epochs 10 --out runs/glow-digits
    tfinv train --dataset faces.npz --num-levels 256 --levels 3 --out runs/faces
    tfinv sample --model runs/glow-digits/model.keras --n 64 --temperature 0.7 --out grid.png
    tfinv train --model revvit --epochs 30 --dim 32 --depth 4 --out runs/revvit-digits
    tfinv train --model cinn --task superres --epochs 15 --out runs/cinn-superres
    tfinv sample --model runs/cinn-superres/model.keras --context runs/cinn-superres/observations.npy --n 8
    tfinv diagnose --model runs/glow-digits/model.keras --out runs/glow-digits/diagnostics
    tfinv train --model flowgmm --labels 100 --epochs 20 --out runs/flowgmm-digits
    tfinv ood --model runs/glow-digits/model.keras --data digits --out ood.json --histogram ood.png

``train`` writes ``DIR/model.keras``, ``DIR/samples.png`` (a grid of samples) and
``DIR/metrics.json`` (bits/dim of the train and test splits, time, parameters, config). For a
classifier (``--model revvit``) it trains on the labels and writes ``DIR/model.keras`` and
``DIR/metrics.json`` (train and test accuracy); no samples. For a conditional INN (``--model cinn
--task superres|inpaint|deblur|ct``) it makes ``(x, y)`` pairs with the task's forward operator
(`tfinv.inverse_problems`) from the images scaled to ``[0, 1]``, learns ``p(x | y)`` and writes
``DIR/model.keras``, ``DIR/posterior.png`` (rows: naive estimate from y, truth, 4 posterior
samples, posterior mean, posterior std), ``DIR/metrics.json`` (PSNR of the posterior mean, of a
plain CNN regressor with at most the cINN's trainable parameters trained with MSE on the same pairs,
and of the naive estimate; the calibration curve q / coverage / error; conditional bits/dim),
``DIR/calibration.png`` (the calibration curve) and ``DIR/observations.npy`` (test observations,
a ready ``--context`` file for ``tfinv sample``). ``--task ct --photons I0``: low-dose Poisson noise
on the sinogram instead of Gaussian ``--noise-std``.

``tfinv sample --context FILE`` draws posterior samples of a conditional model: FILE is a ``.npy``
array of float observations ``y``, shape ``(N,) + observation_shape`` (or one observation,
``observation_shape``), on the scale the model was trained with (``tfinv train --model cinn``:
the operator applied to images in ``[0, 1]``); the PNG has one row of ``--n`` samples per
observation, and ``--npy FILE`` also saves them as ``(n, N, H, W, C)`` float32 counts.
``DIR/metrics.json`` (train and test accuracy); no samples. ``--model flowgmm`` is
semi-supervised: ``--labels N`` keeps N training labels in total (class-balanced, ``N // K`` per
class, the remainder drawn at random; seeded by ``--seed``), the other training images are
unlabelled; it writes ``DIR/samples.png`` with one row of class-conditional samples per class and
``metrics.json`` with the test accuracy of the Bayes classifier and the bits/dim.
``ood`` scores an in-distribution set against OOD sets with `tfinv.ood` and writes a JSON report
(AUROC per score and set), optionally a histogram PNG of the scores.
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
        task: ``"density"`` (a `FlowModel` trained by maximum likelihood on images alone),
            ``"classification"`` (a model returning logits, trained on ``(image, label)`` pairs
            with sparse categorical cross-entropy), ``"semi_supervised"`` (a
            `tfinv.models.FlowGMM` trained on images with ``--labels`` of their labels, ``-1``
            for the others; the builder also gets ``num_classes=``) or ``"inverse"`` (a conditional
            flow learning ``p(x | y)`` from ``(image, observation)`` pairs of ``--task``'s operator;
            its builder also gets ``operator=``, a `tfinv.inverse_problems` operator).
        options: the model-specific ``tfinv train`` options (argparse dests) the model reads;
            giving another model's option (e.g. ``--heads`` to glow) is a usage error, not
            silently ignored.
    """

    build: Callable[..., Any]
    description: str
    task: str = "density"
    options: tuple[str, ...] = ()


TASKS = ("density", "classification", "semi_supervised", "inverse")
#: ``--strategy`` choices (`tfinv.training.make_strategy`), listed here so --help needs no TensorFlow.
STRATEGY_NAMES = ("default", "mirrored", "multi_worker", "tpu")


#: name -> `ModelBuilder`; ``tfinv train --model NAME`` accepts exactly these names.
MODEL_BUILDERS: dict[str, ModelBuilder] = {}


def register_model(name: str, description: str, task: str = "density", options: Sequence[str] = ()):
    """Decorator registering ``build(args, input_shape, num_levels)`` as ``--model name``
    (``task``: one of `TASKS`; ``options``: the model-specific train options it reads, see
    `ModelBuilder`)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")

    def decorator(build):
        if name in MODEL_BUILDERS:
            raise ValueError(f"a model named {name!r} is already registered")
        MODEL_BUILDERS[name] = ModelBuilder(build, description, task, tuple(options))
        return build

    return decorator


#: The Glow options of `_glow_options`, read by every Glow-based model.
GLOW_OPTIONS = ("levels", "steps_per_level", "hidden_channels", "coupling")
#: Options that belong to one ``--task`` of ``--model cinn``.
TASK_OPTIONS = {"angles": ("ct",), "photons": ("ct",), "hole": ("inpaint",)}


def _check_model_options(args: argparse.Namespace, given: Sequence[str]) -> None:
    """`UsageError` for a model-specific option given on the command line (``given``: dests)
    that ``--model`` (or its ``--task``) does not read."""
    builder = MODEL_BUILDERS[args.model]
    specific = {option for b in MODEL_BUILDERS.values() for option in b.options}
    foreign = [option for option in given if option in specific and option not in builder.options]
    if foreign:
        flags = ", ".join("--" + option.replace("_", "-") for option in foreign)
        own = ", ".join("--" + option.replace("_", "-") for option in builder.options) or "none"
        raise UsageError(f"{flags} {'does' if len(foreign) == 1 else 'do'} not apply to --model {args.model} "
                         f"(its model options: {own})")
    for option, tasks in TASK_OPTIONS.items():
        if option in given and args.task not in tasks:
            raise UsageError(f"--{option} applies to --model cinn --task {' or '.join(tasks)}, not --task {args.task}")


def _glow_options(args: argparse.Namespace, num_levels: int) -> dict[str, Any]:
    """The multi-scale Glow options every Glow-based model takes from the command line."""
    return dict(levels=args.levels, steps_per_level=args.steps_per_level, hidden_channels=args.hidden_channels,
                coupling=args.coupling or "affine", num_levels=num_levels, seed=args.seed)


@register_model("glow", "multi-scale Glow (tfinv.models.Glow), a flow trained by maximum likelihood",
                options=(*GLOW_OPTIONS, "linear", "learned_prior", "conditioner_actnorm", "attention"))
def _build_glow(args: argparse.Namespace, input_shape: tuple[int, ...], num_levels: int):
    from tfinv.models import Glow

    return Glow(
        input_shape,
        **_glow_options(args, num_levels),
        linear=args.linear,
        learned_prior=getattr(args, "learned_prior", False),
        conditioner_actnorm=getattr(args, "conditioner_actnorm", False),
        attention=getattr(args, "attention", None),
        name="glow",
    )


@register_model(
    "mixerflow",
    "MixerFlow (tfinv.models.MixerFlow): MLP-Mixer blocks on image patches as a flow, trained by maximum likelihood",
    options=("patch_size", "depth", "hidden_channels"),
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
    options=("patch_size", "dim", "depth", "heads", "memory_efficient"),
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


@register_model(
    "flowgmm",
    "FlowGMM (tfinv.models.FlowGMM): a Glow with one Gaussian per class, semi-supervised on --labels labels",
    task="semi_supervised",
    options=(*GLOW_OPTIONS, "consistency_weight", "labels", "labelled_fraction"),
)
def _build_flowgmm(args: argparse.Namespace, input_shape: tuple[int, ...], num_levels: int, num_classes: int):
    from tfinv.models import FlowGMM

    return FlowGMM.glow(
        input_shape,
        num_classes,
        **_glow_options(args, num_levels),
        consistency_weight=args.consistency_weight,
        name="flowgmm",
    )


#: ``--task`` choices of ``tfinv train --model cinn`` (forward operators of `tfinv.inverse_problems`).
INVERSE_TASKS = ("superres", "inpaint", "deblur", "ct")


@register_model(
    "cinn",
    "conditional Glow (tfinv.models.ConditionalGlow) learning the posterior p(x | y) of the inverse problem --task",
    task="inverse",
    options=(*GLOW_OPTIONS, "linear", "task", "noise_std", "photons", "angles", "hole", "posterior_samples"),
)
def _build_cinn(args: argparse.Namespace, input_shape: tuple[int, ...], num_levels: int, operator):
    from tfinv.inverse_problems import Tomography
    from tfinv.models import ConditionalGlow

    network = None
    if isinstance(operator, Tomography):  # features of the filtered back-projection of the sinogram
        network = operator.conditioning_network(input_shape, features=32, hidden=args.hidden_channels)
    return ConditionalGlow(
        input_shape,
        observation_shape=operator.observation_shape(input_shape),
        conditioning_network=network,
        levels=args.levels,
        steps_per_level=args.steps_per_level,
        hidden_channels=args.hidden_channels,
        coupling=args.coupling or "soft_clamp",
        num_levels=num_levels,
        seed=args.seed,
        linear=args.linear,
        name="cinn",
    )


def _inverse_operator(args: argparse.Namespace):
    """The forward operator of ``--task`` (``y = A(x) + noise`` on images in ``[0, 1]``)."""
    from tfinv import inverse_problems as ip

    if args.task == "superres":
        return ip.SuperResolution(args.noise_std)
    if args.task == "inpaint":
        return ip.Inpainting(args.noise_std, hole=args.hole)
    if args.task == "deblur":
        return ip.Deblurring(args.noise_std, blur_std=1.0, kernel_size=5)
    if args.photons is not None:
        return ip.Tomography(photons=args.photons, angles=args.angles)
    return ip.Tomography(args.noise_std, angles=args.angles)


def _naive_estimate(operator, y, image_shape):
    """``x`` guessed from ``y`` alone, in ``[0, 1]``: nearest upsampling (super-resolution), the
    zero-filled image (inpainting), ``y`` itself (deblurring), the filtered back-projection (CT)."""
    import numpy as np

    from tfinv import inverse_problems as ip

    if isinstance(operator, ip.SuperResolution):
        f = operator.factor
        guess = np.repeat(np.repeat(y, f, axis=1), f, axis=2)
    elif isinstance(operator, ip.Inpainting):
        guess = y[..., :-1]
    elif isinstance(operator, ip.Tomography):
        guess = operator.fbp(y, image_shape)
    else:
        guess = y
    return np.clip(guess, 0.0, 1.0)


# ---------------------------------------------------------------- helpers
def _write_metrics(path: str, args: argparse.Namespace, model, result, started: float,
                   **task_fields: Any) -> dict:
    """Writes ``metrics.json`` (whole or not at all): the task's figures plus what every run
    records (epochs, time, parameters, history, the CLI options and the model config)."""
    from tfinv.files import atomic_write
    from tfinv.training import finite_or_none

    options = {k: v for k, v in vars(args).items() if k not in ("func", "command") and not k.startswith("_")}
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
RESUMABLE_CHANGES = ("epochs", "verbose", "resume", "num_samples", "temperature", "max_test", "out",
                     "posterior_samples")
#: Files ``tfinv train --model cinn`` writes into its run folder.
INVERSE_RUN_FILES = ("model.keras", "posterior.png", "calibration.png", "metrics.json", "observations.npy")


def _run_options(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k not in ("func", "command", "tf_logging") and not k.startswith("_")}


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
    finished = [name for name in ("metrics.json", "model.keras") if os.path.isfile(os.path.join(out, name))]
    if not _has_state(backup) and finished:
        # nothing to continue: training afresh would replace the finished run's files
        raise UsageError(
            f"--resume: {out} holds a finished run ({', '.join(finished)}) and no interrupted one to "
            f"continue; run without --resume to train it again (its files are replaced), or pick another --out"
        )
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
    inverse = MODEL_BUILDERS[args.model].task == "inverse"
    if args.task is not None and not inverse:
        raise UsageError(f"--task {args.task} applies to a conditional model (--model cinn), not --model {args.model}")
    if inverse and args.task is None:
        args.task = "superres"
    if args.coupling is None:  # the cINN's couplings have the soft-clamped scale (finite posterior draws)
        args.coupling = "soft_clamp" if inverse else "affine"
    if args.photons is not None:
        if args.task != "ct":
            raise UsageError(f"--photons (low-dose Poisson noise) applies to --model cinn --task ct, not "
                             f"--model {args.model}" + (f" --task {args.task}" if args.task else ""))
        if args.noise_std is not None:
            raise UsageError("--task ct takes either --noise-std (Gaussian noise) or --photons (Poisson noise), "
                             "not both")
    elif args.noise_std is None:
        args.noise_std = 0.05
    backup = _prepare_backup(args, out)
    task = MODEL_BUILDERS[args.model].task
    classify = task == "classification"
    if args.labels is not None and task != "semi_supervised":
        raise UsageError(f"--labels applies to semi-supervised models (flowgmm), not --model {args.model}")
    _check_model_options(args, getattr(args, "_given", ()))
    with _as_usage_error():
        num_levels = data.resolve_num_levels(args.dataset, args.num_levels)
        train_images, train_labels = data.load_arrays(
            args.dataset, "train", key=args.key, num_levels=num_levels, label_key=args.label_key,
            with_labels=task in ("classification", "semi_supervised"),
        )
        test_images, test_labels = data.load_arrays(
            args.dataset, "test", key=args.key, num_levels=num_levels, label_key=args.label_key,
            with_labels=task in ("classification", "semi_supervised"),
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
    if MODEL_BUILDERS[args.model].task == "semi_supervised":
        train_split = (train_images, train_labels[: args.max_train])
        test_split = (test_images, test_labels[: args.max_test])
        with strategy.scope():
            return _train_flowgmm(args, out, backup, train_split, test_split, num_levels, started, chief)
    if classify:
        train_split = (train_images, train_labels[: args.max_train])
        test_split = (test_images, test_labels[: args.max_test])
        with strategy.scope():
            return _train_classifier(args, out, backup, train_split, test_split, num_levels, started, chief)
    if MODEL_BUILDERS[args.model].task == "inverse":
        with strategy.scope():
            return _train_inverse(args, out, backup, train_images, test_images, input_shape, num_levels, started,
                                  chief)
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


def _tf_config() -> dict:
    """``TF_CONFIG`` as a dict (``{}`` when unset or not JSON: a single-process run)."""
    try:
        config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    except ValueError:
        return {}
    return config if isinstance(config, dict) else {}


def _cluster_task() -> tuple[str, int]:
    """This process's ``(task type, index)`` in ``TF_CONFIG`` (``("chief", 0)`` without one)."""
    task = _tf_config().get("task", {})
    return str(task.get("type", "chief")), int(task.get("index", 0))


def _in_cluster() -> bool:
    """True when ``TF_CONFIG`` names a cluster of several tasks (a multi-worker job)."""
    cluster = _tf_config().get("cluster", {})
    return sum(len(tasks) for tasks in cluster.values() if isinstance(tasks, list)) > 1


def _is_chief() -> bool:
    """True for the process that writes the outputs: the chief, or worker 0 of a cluster without one."""
    kind, index = _cluster_task()
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in _tf_config().get("cluster", {}))


def _save_as_worker(model) -> int:
    """A non-chief worker's part of the chief's save: the same save into a private temporary
    folder, then removed. Saving reads synchronised variables through collective ops that every
    worker of a multi-worker strategy must join (a worker that skipped it would leave the chief
    waiting for it); only the chief's copy is kept. Returns 0."""
    import tempfile

    from tfinv import files

    with tempfile.TemporaryDirectory(prefix="tfinv-worker-save-") as scratch:
        files.save_model_atomic(model, os.path.join(scratch, "model.keras"))
    return 0


def _foreign_entries(out: str) -> tuple[str, ...]:
    """Entries of an existing run folder that tfinv did not write: kept in the new folder."""
    if not os.path.isdir(out):
        return ()
    ours = set(RUN_FILES) | set(INVERSE_RUN_FILES) | {BACKUP_DIR}
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


def _train_inverse(args: argparse.Namespace, out: str, backup: str, train_images, test_images, input_shape,
                   num_levels: int, started: float, chief: bool) -> int:
    """``tfinv train`` for a conditional INN (inside the strategy's scope): pairs ``(x, y)`` from
    ``--task``'s operator on the images scaled to ``[0, 1]``, maximum likelihood of ``log p(x | y)``
    (``x`` the dequantised counts), then posterior statistics on the test split."""
    import numpy as np

    from tfinv import data, files, training
    from tfinv import inverse_problems as ip

    scale = float(num_levels - 1)
    with _as_usage_error():
        operator = _inverse_operator(args)
        operator.observation_shape(input_shape)  # the operator fits the images (e.g. CT: square, one channel)
        y_train = operator(train_images.astype(np.float32) / scale, seed=args.seed)
        y_test = operator(test_images.astype(np.float32) / scale, seed=args.seed + 1)
        model = MODEL_BUILDERS[args.model].build(args, input_shape, num_levels, operator=operator)
    if chief:
        _record_options(args, backup)
    with _interrupts_reported(backup):
        result = training.fit_conditional_flow(
            model, train_images, y_train, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
            seed=args.seed, validation=(test_images, y_test),
            jit_compile="auto" if args.jit is None else args.jit, verbose=args.verbose, backup_dir=backup,
        )
        train_bpd = training.conditional_bits_per_dim(model, train_images, y_train, args.batch_size, args.seed)
        test_bpd = training.conditional_bits_per_dim(model, test_images, y_test, args.batch_size, args.seed)
        # Posterior statistics on the test split: K samples per observation, in [0, 1].
        samples = model.posterior_samples(y_test, k=args.posterior_samples, temperature=1.0, seed=args.seed)
        unit = np.clip((samples - 0.5) / scale, 0.0, 1.0)
        truth = test_images.astype(np.float64) / scale
        mean, std = ip.posterior_mean(unit), ip.posterior_std(unit)
        rng = np.random.default_rng(args.seed)
        x_test = test_images + rng.uniform(size=test_images.shape)  # fixed dequantisation noise
        calibration = ip.calibration(samples, x_test)
        naive = _naive_estimate(operator, y_test, input_shape)
        regressor, regressor_seconds = _fit_cnn_regressor(args, model, operator, input_shape, y_train,
                                                          train_images / scale)
        cnn_estimate = np.clip(regressor.predict(y_test, batch_size=args.batch_size, verbose=0), 0.0, 1.0)
        if not chief:
            return _save_as_worker(model)
        show = min(8, len(test_images))
        rows = [naive[:show], truth[:show]] + [unit[j, :show] for j in range(min(4, args.posterior_samples))]
        rows += [mean[:show], std[:show] / max(float(std[:show].max()), 1e-12)]
        with files.staged_directory(out, keep=_foreign_entries(out)) as staging:
            files.save_model_atomic(model, os.path.join(staging, "model.keras"))
            data.save_image_grid(np.concatenate(rows).astype(np.float32), os.path.join(staging, "posterior.png"),
                                 num_levels=1, columns=show)
            with files.atomic_write(os.path.join(staging, "observations.npy"), "wb") as f:
                np.save(f, y_test[:show].astype(np.float32), allow_pickle=False)
            files.write_bytes_atomic(os.path.join(staging, "calibration.png"), _png(ip.calibration_chart(
                calibration, title=f"{args.task} test calibration")))
            metrics = _write_metrics(
                os.path.join(staging, "metrics.json"), args, model, result, started,
                task=args.task, num_levels=num_levels, input_shape=list(input_shape),
                observation_shape=list(model.observation_shape),
                num_train=int(len(train_images)), num_test=int(len(test_images)),
                train_bits_per_dim=training.finite_or_none(train_bpd),
                test_bits_per_dim=training.finite_or_none(test_bpd),
                posterior_samples=int(args.posterior_samples),
                psnr_posterior_mean=training.finite_or_none(ip.psnr(mean, truth, 1.0)),
                psnr_naive_estimate=training.finite_or_none(ip.psnr(naive, truth, 1.0)),
                psnr_cnn_regressor=training.finite_or_none(ip.psnr(cnn_estimate, truth, 1.0)),
                cnn_regressor={"trainable_parameters": _trainable_parameters(regressor),
                               "cinn_trainable_parameters": _trainable_parameters(model),
                               "width": int(regressor.get_layer("conv_0").filters),
                               "depth": CNN_REGRESSOR_DEPTH, "epochs": int(args.epochs),
                               "fit_seconds": round(regressor_seconds, 3),
                               "preprocessing": "filtered back-projection" if args.task == "ct" else None},
                mean_posterior_std=float(std.mean()),
                calibration=calibration,
            )
    print(
        f"test bits/dim {test_bpd:.4f} (conditional), PSNR posterior mean {metrics['psnr_posterior_mean']:.2f} dB "
        f"vs CNN regressor {metrics['psnr_cnn_regressor']:.2f} dB vs naive {metrics['psnr_naive_estimate']:.2f} dB, "
        f"calibration error {calibration['error']:.3f} after "
        f"{metrics['epochs']} epoch(s){_resumed(result)} in {result.fit_seconds:.1f} s; "
        f"wrote {', '.join(_written(out, INVERSE_RUN_FILES))}"
    )
    if not (math.isfinite(train_bpd) and math.isfinite(test_bpd)):
        print("tfinv train: training diverged (non-finite bits/dim); try a smaller --lr", file=sys.stderr)
        return 1
    return 0


#: Depth of the plain CNN regressor ``tfinv train --model cinn`` compares the posterior mean with.
CNN_REGRESSOR_DEPTH = 4


def _trainable_parameters(model) -> int:
    return int(sum(math.prod(int(d) for d in w.shape) for w in model.trainable_weights))


def _png(image) -> bytes:
    import tensorflow as tf

    return tf.io.encode_png(image).numpy()


def _fit_cnn_regressor(args: argparse.Namespace, model, operator, input_shape, y_train, x_train):
    """The widest plain CNN regressor ``y -> x`` (`tfinv.inverse_problems.matched_cnn_regressor`)
    within the cINN's trainable-parameter count, trained with MSE on the same pairs, epochs, batch
    size and learning rate (CT: from the filtered back-projection). Returns it and its fit time."""
    import keras
    import numpy as np

    from tfinv import inverse_problems as ip

    keras.utils.set_random_seed(args.seed)
    preprocessing = operator.fbp_layer(input_shape) if isinstance(operator, ip.Tomography) else None
    regressor = ip.matched_cnn_regressor(operator.observation_shape(input_shape), input_shape,
                                         _trainable_parameters(model), depth=CNN_REGRESSOR_DEPTH,
                                         preprocessing=preprocessing)
    regressor.compile(optimizer=keras.optimizers.Adam(args.lr), loss="mse")
    start = time.perf_counter()
    regressor.fit(y_train, x_train.astype(np.float32), epochs=args.epochs, batch_size=args.batch_size,
                  shuffle=True, verbose=0)
    return regressor, time.perf_counter() - start


def _train_flowgmm(args: argparse.Namespace, out: str, backup: str, train_split, test_split,
                   num_levels: int, started: float, chief: bool = True) -> int:
    """``tfinv train --model flowgmm``: semi-supervised FlowGMM on ``--labels`` labels, report accuracy."""
    import numpy as np

    from tfinv import data, files, training
    from tfinv.models.flow_gmm import UNLABELLED, oversample_labelled, semi_supervised_labels

    (train_images, train_labels), (test_images, test_labels) = train_split, test_split
    input_shape = tuple(int(s) for s in train_images.shape[1:])
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    num_labelled = len(train_labels) if args.labels is None else args.labels
    if num_labelled > len(train_labels):
        raise UsageError(f"--labels {num_labelled}: expected at most the {len(train_labels)} training images")
    with _as_usage_error():
        kept = semi_supervised_labels(train_labels, num_labelled, num_classes, seed=args.seed)
        images, labels = (oversample_labelled(train_images, kept, args.labelled_fraction)
                          if 0 < num_labelled < len(kept) else (train_images, kept))
        model = MODEL_BUILDERS[args.model].build(args, input_shape, num_levels, num_classes=num_classes)
    if chief:
        _record_options(args, backup)
    with _interrupts_reported(backup):
        result = training.fit_flow(
            model, images, labels=labels, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
            seed=args.seed, validation_images=test_images, jit_compile="auto" if args.jit is None else args.jit,
            verbose=args.verbose, backup_dir=backup,
        )
        evaluation = dict(batch_size=args.batch_size, seed=args.seed, jit_compile=bool(args.jit))
        train_bpd = training.dataset_bits_per_dim(model, train_images, **evaluation)
        test_bpd = training.dataset_bits_per_dim(model, test_images, **evaluation)
        noise = np.random.default_rng(args.seed).uniform(0.0, 1.0, test_images.shape)
        test_accuracy = float(np.mean(model.predict_classes(test_images + noise.astype(np.float32)) == test_labels))
        per_class = max(1, args.num_samples // num_classes)
        samples = model.sample_classes(np.repeat(np.arange(num_classes), per_class),
                                       temperature=args.temperature, seed=args.seed)
        if not chief:
            return _save_as_worker(model)
        with files.staged_directory(out, keep=_foreign_entries(out)) as staging:
            files.save_model_atomic(model, os.path.join(staging, "model.keras"))
            data.save_image_grid(samples.numpy(), os.path.join(staging, "samples.png"), num_levels, columns=per_class)
            metrics = _write_metrics(
                os.path.join(staging, "metrics.json"), args, model, result, started,
                task="semi_supervised", num_levels=num_levels, input_shape=list(input_shape),
                num_classes=num_classes, num_train=int(len(train_images)), num_test=int(len(test_images)),
                num_labelled=int(np.sum(kept != UNLABELLED)), num_unlabelled=int(np.sum(kept == UNLABELLED)),
                test_accuracy=training.finite_or_none(test_accuracy),
                train_bits_per_dim=training.finite_or_none(train_bpd),
                test_bits_per_dim=training.finite_or_none(test_bpd),
            )
    print(
        f"test accuracy {test_accuracy:.4f} with {metrics['num_labelled']} labels, test bits/dim {test_bpd:.4f} "
        f"after {metrics['epochs']} epoch(s){_resumed(result)} in {result.fit_seconds:.1f} s; "
        f"wrote {', '.join(_written(out, RUN_FILES))}"
    )
    if not (math.isfinite(train_bpd) and math.isfinite(test_bpd)):
        print("tfinv train: training diverged (non-finite bits/dim); try a smaller --lr", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- ood
#: Scores in the report of ``tfinv ood`` (`tfinv.ood`).
OOD_SCORES = ("log_likelihood", "typicality", "typicality_batch", "complexity_corrected")


def _ood(args: argparse.Namespace) -> int:
    """``tfinv ood``: AUROC of `tfinv.ood`'s scores, in-distribution test split vs OOD sets."""
    import numpy as np

    import tfinv
    from tfinv import data, files, ood

    started = time.perf_counter()
    with _as_usage_error():
        out = files.check_output_file(args.out, "--out", suffix=".json")
        histogram = None if args.histogram is None else files.check_output_file(args.histogram, "--histogram",
                                                                               suffix=".png")
        model = tfinv.load_model(args.model)
        num_levels = data.resolve_num_levels(args.data, args.num_levels)
        reference, _ = data.load_arrays(args.data, "train", key=args.key, num_levels=num_levels)
        test, _ = data.load_arrays(args.data, "test", key=args.key, num_levels=num_levels)
    if len(test) < 2 * args.typicality_m:
        raise UsageError(f"--data {args.data}: its test split has {len(test)} images; expected at least "
                         f"2 * --typicality-m = {2 * args.typicality_m}")
    rng = np.random.default_rng(args.seed)
    sets: dict[str, np.ndarray] = {}
    with _as_usage_error():
        for name in args.ood:
            if name in ood.SYNTHETIC_OOD_SETS:
                sets[name] = ood.synthetic_ood_set(name, test, num_levels, seed=args.seed + len(sets))
            else:
                images, _ = data.load_arrays(name, "all", key=args.key, num_levels=num_levels)
                sets[os.path.basename(os.fspath(name))] = images
        # every set is checked against the model before any scoring
        ood.check_images(model, test, f"--data {args.data}")
        for name, images in sets.items():
            ood.check_images(model, images, f"OOD set {name!r}")

    def dequantise(counts):
        return counts.astype(np.float32) + rng.uniform(0.0, 1.0, counts.shape).astype(np.float32)

    # entropy from the train split; the test split's first half calibrates the threshold, the second is scored
    half = len(test) // 2
    with _as_usage_error():
        typicality = ood.TypicalityTest(model, batch_size=args.batch_size).fit(
            dequantise(reference), dequantise(test[:half]), test_batch_size=args.typicality_m,
            alpha=args.alpha, seed=args.seed)
        inside = dequantise(test[half:])

        def scores_of(x, what, seed):
            log_p = ood.log_likelihood_scores(model, x, args.batch_size, what)
            batches = max(1, min(200, len(x) // args.typicality_m * 4))
            return {
                "log_likelihood": log_p,
                "typicality": -np.abs(-log_p - typicality.entropy),
                "typicality_batch": typicality.batch_scores(x, batches, seed=seed),
                "complexity_corrected": log_p / math.log(2.0) + ood.complexity_bits(x, num_levels),
            }

        in_scores = scores_of(inside, "--data", 1)
        table: dict[str, dict[str, float]] = {score: {} for score in OOD_SCORES}
        groups: dict[str, dict[str, np.ndarray]] = {score: {"in-distribution": in_scores[score]} for score in OOD_SCORES}
        bits = {"in-distribution": float(-np.mean(in_scores["log_likelihood"]) / (model.num_dims * math.log(2)))}
        flagged = {"in-distribution": float(np.mean(-in_scores["typicality_batch"] > typicality.threshold))}
        for index, (name, counts) in enumerate(sets.items()):
            x = dequantise(counts)
            if len(x) < args.typicality_m:
                raise ValueError(f"OOD set {name!r} has {len(x)} images; expected at least --typicality-m "
                                 f"{args.typicality_m}")
            out_scores = scores_of(x, f"OOD set {name!r}", 2 + index)
            for score in OOD_SCORES:
                table[score][name] = ood.auroc(in_scores[score], out_scores[score])
                groups[score][name] = out_scores[score]
            bits[name] = float(-np.mean(out_scores["log_likelihood"]) / (model.num_dims * math.log(2)))
            flagged[name] = float(np.mean(-out_scores["typicality_batch"] > typicality.threshold))
    report = {
        "model": os.fspath(args.model),
        "data": os.fspath(args.data),
        "num_levels": num_levels,
        "num_reference": int(len(reference)),
        "num_calibration": int(half),
        "num_in_distribution_scored": int(len(inside)),
        "ood_sets": {name: int(len(v)) for name, v in sets.items()},
        "auroc": table,
        "bits_per_dim": bits,
        "typicality": {"entropy_nats": typicality.entropy, "M": args.typicality_m, "alpha": args.alpha,
                       "threshold": typicality.threshold, "fraction_of_batches_flagged": flagged},
        "histogram": histogram,
        "seed": args.seed,
        "wall_seconds": round(time.perf_counter() - started, 3),
    }
    if histogram is not None:
        import tensorflow as tf

        picture = ood.score_histogram_image(groups)
        files.write_bytes_atomic(histogram, tf.io.encode_png(picture).numpy())
    with files.atomic_write(out) as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    for score in OOD_SCORES:
        print(f"{score:>22}: " + ", ".join(f"{name} {value:.3f}" for name, value in table[score].items()))
    print(f"wrote {out}" + (f" and {histogram}" if histogram else ""))
    return 0


def _ood_set(text: str) -> str:
    if text in ("inverted", "uniform_noise", "constant", "shuffled") or text.endswith(".npz") or os.path.isfile(text):
        return text
    raise argparse.ArgumentTypeError(
        f"expected inverted, uniform_noise, constant, shuffled or the path of an .npz file, got {text!r}")


def _probability(text: str) -> float:
    value = _number(float, text, "a number in (0, 1)")
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _number(float, text, "a finite number >= 0")
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = _number(int, text, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


# ---------------------------------------------------------------- sample
def _sample(args: argparse.Namespace) -> int:
    import tfinv
    from tfinv import data, files

    with _as_usage_error():
        out = files.check_output_file(args.out, "--out", suffix=".png")
        npy = files.check_output_file(args.npy, "--npy", suffix=".npy") if args.npy is not None else None
    context = _read_context(args.context) if args.context is not None else None
    with _as_usage_error():
        model = tfinv.load_model(args.model)
    num_levels = args.num_levels or getattr(model, "num_levels", None)
    if num_levels is None:
        raise UsageError(f"{args.model!r} does not record its pixel levels; pass --num-levels")
    conditional = bool(getattr(model, "is_conditional", False))
    if args.context is not None and not conditional:
        raise UsageError(f"{args.model!r} is not a conditional model (it takes no observation); drop --context")
    if conditional:
        return _sample_posterior(args, model, context, out, npy, num_levels)
    if npy is not None:
        raise UsageError("--npy saves the posterior samples of a conditional model (with --context)")
    with _as_usage_error():
        samples = model.sample(args.n, temperature=args.temperature, seed=args.seed)
        data.save_image_grid(samples.numpy(), out, num_levels, scale=args.scale)
    print(f"wrote {args.n} samples (temperature {args.temperature}) to {args.out}")
    return 0


def _read_context(path: str):
    """``--context FILE``, read before the model is loaded (fail fast): a finite, real, non-empty
    ``.npy`` array (its shape is checked against the model by `_context_for`)."""
    import numpy as np

    expected = "a .npy array of float observations"
    if os.path.isdir(path):
        raise UsageError(f"--context {path!r} is a folder; expected {expected}")
    try:
        y = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"--context {path!r} does not exist; expected {expected}") from None
    except (OSError, ValueError, EOFError) as err:
        raise UsageError(f"--context {path!r} is not a readable .npy array ({err}); expected {expected}") from None
    if not isinstance(y, np.ndarray):  # an .npz archive
        raise UsageError(f"--context {path!r} holds an .npz archive; expected {expected}")
    if not (np.issubdtype(y.dtype, np.floating) or np.issubdtype(y.dtype, np.integer)) \
            or np.issubdtype(y.dtype, np.bool_):
        raise UsageError(f"--context {path!r} has dtype {y.dtype}; expected {expected}")
    if y.size == 0:
        raise UsageError(f"--context {path!r} is empty (shape {y.shape}); expected {expected}")
    y = y.astype(np.float32)
    if not np.all(np.isfinite(y)):
        raise UsageError(f"--context {path!r} holds non-finite values; expected finite observations")
    return y


def _context_for(y, path: str | None, model_path: str, observation_shape: tuple[int, ...]):
    """The observations ``y`` (from `_read_context`) as ``(N,) + observation_shape``."""
    expected = f"a .npy array of float observations of shape (N, {', '.join(map(str, observation_shape))}) " \
               f"or {tuple(observation_shape)}"
    if y is None:
        raise UsageError(f"{model_path!r} is a conditional model: pass --context FILE, {expected}")
    if y.shape == tuple(observation_shape):
        y = y[None]
    if y.shape[1:] != tuple(observation_shape):
        raise UsageError(f"--context {path!r} has shape {y.shape}; expected {expected}")
    return y


def _sample_posterior(args: argparse.Namespace, model, context, out: str, npy: str | None, num_levels: int) -> int:
    """``tfinv sample --context FILE``: ``--n`` posterior samples for every observation in FILE."""
    import numpy as np

    from tfinv import data, files

    y = _context_for(context, args.context, args.model, tuple(model.context_shape))
    with _as_usage_error():
        samples = model.posterior_samples(y, k=args.n, temperature=args.temperature, seed=args.seed)
    # One row per observation, its samples side by side.
    grid = np.swapaxes(samples, 0, 1).reshape((-1,) + tuple(samples.shape[2:]))
    with _as_usage_error():
        data.save_image_grid(grid, out, num_levels, columns=args.n, scale=args.scale)
    if npy is not None:
        with files.atomic_write(npy, "wb") as f:
            np.save(f, samples.astype(np.float32), allow_pickle=False)
    wrote = f"{args.out}" + (f" and {args.npy}" if npy is not None else "")
    print(f"wrote {args.n} posterior samples (temperature {args.temperature}) for each of {len(y)} "
          f"observation(s) to {wrote}")
    return 0


# ---------------------------------------------------------------- diagnose
def _diagnose(args: argparse.Namespace) -> int:
    """``tfinv diagnose``: invertibility diagnostics of a saved model on data (`tfinv.diagnostics`)."""
    import numpy as np

    from tfinv import data, diagnostics, files

    model_dir = os.path.dirname(os.path.abspath(args.model))
    with _as_usage_error():
        out = files.check_output_directory(args.out or os.path.join(model_dir, "diagnostics"), "--out")
        model = diagnostics.load_diagnosable(args.model)
        model_levels = getattr(model, "num_levels", None)
        # an .npz file's levels default to the model's (a named dataset has its own)
        num_levels = data.resolve_num_levels(args.dataset, args.num_levels if args.num_levels is not None or
                                             os.fspath(args.dataset) in data.NAMED_DATASETS else model_levels)
        if model_levels is not None and int(model_levels) != num_levels:
            raise ValueError(f"{args.model!r} was trained on {model_levels} pixel levels, but --dataset "
                             f"{args.dataset} has {num_levels}; pass the model's data")
        images, labels = data.load_arrays(args.dataset, args.split, key=args.key, num_levels=num_levels)
    if len(images) < 2:
        raise UsageError(f"--dataset {args.dataset} ({args.split} split) has {len(images)} image(s); "
                         f"the diagnostics need at least 2")
    rng = np.random.default_rng(args.seed)
    chosen = np.sort(rng.choice(len(images), size=min(args.examples, len(images)), replace=False))
    # dequantised as in training: integer counts plus uniform noise in [0, 1)
    x = images[chosen].astype(np.float32) + rng.uniform(0.0, 1.0, images[chosen].shape).astype(np.float32)
    context = _label_context(model, labels, chosen, args)
    with _as_usage_error():
        report = diagnostics.diagnose(
            model, x, context, iterations=args.iterations, seed=args.seed, layers=args.layers,
            condition_threshold=args.condition_threshold, error_threshold=args.error_threshold,
            progress=args.verbose > 0,
        )
    report["model"]["file"] = os.path.abspath(args.model)
    report["data"] = {"dataset": os.fspath(args.dataset), "split": args.split, "num_levels": num_levels,
                      "indices": [int(i) for i in chosen]}
    written = diagnostics.write_report(report, out)
    lipschitz = report["bi_lipschitz"]
    worst = max((s["relative_max"] for s in report.get("stress_test", {}).get("sets", {}).values()), default=None)
    print(
        f"Lip(f) >= {_maybe(lipschitz['forward']['max'])}, Lip(f^-1) >= {_maybe(lipschitz['inverse']['max'])}, "
        f"largest relative reconstruction error {_maybe(worst)}; {len(report['flags'])} flag(s) over "
        f"{len(report['layers'])} layer(s); wrote {written[0]} and {len(written) - 1} PNG(s)"
    )
    return 0


def _label_context(model, labels, chosen, args: argparse.Namespace):
    """One-hot labels as the context of a class-conditional model (``context_shape == (K,)``)."""
    import numpy as np

    shape = getattr(model, "context_shape", None)
    if shape is None:
        return None
    if len(shape) != 1 or labels is None or int(labels.max()) >= int(shape[0]):
        raise UsageError(
            f"{args.model!r} is conditional (context of shape {tuple(shape)}); tfinv diagnose gives it one-hot "
            f"labels, so it needs a dataset with integer labels below {shape[0]}"
            + ("" if len(shape) == 1 else f", and a model whose context is a vector, not {tuple(shape)}"))
    return np.eye(int(shape[0]), dtype=np.float32)[labels[chosen]]


def _maybe(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The ``tfinv`` argument parser (subcommands ``train``, ``sample``, ``diagnose`` and ``ood``)."""
    from tfinv.step_names import ATTENTION_NAMES, COUPLING_NAMES, linear_names

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
    train.add_argument("--label-key", default=None,
                       help="label array name in an .npz file (default 'labels'; revvit and flowgmm train on labels)")
    train.add_argument(
        "--num-levels", type=_positive_int, default=None,
        help="pixel levels of an .npz file's counts (default 256; digits: 17)",
    )
    train.add_argument("--epochs", type=_positive_int, default=10)
    train.add_argument("--batch-size", type=_positive_int, default=64)
    train.add_argument("--levels", type=_positive_int, default=2, help="Glow scales L")
    train.add_argument("--steps-per-level", type=_positive_int, default=4, help="Glow steps K per scale")
    train.add_argument("--hidden-channels", type=_positive_int, default=64, help="coupling network width (Glow), hidden units (MixerFlow)")
    train.add_argument("--coupling", default=None, choices=sorted(COUPLING_NAMES),
                       help="coupling of every step (default: affine; soft_clamp for --model cinn)")
    train.add_argument("--patch-size", type=_positive_int, default=2, help="RevViT / MixerFlow patch side (divides H and W)")
    train.add_argument("--dim", type=_positive_int, default=32, help="RevViT width (features per stream)")
    train.add_argument("--depth", type=_positive_int, default=4, help="RevViT reversible blocks / MixerFlow blocks")
    train.add_argument("--heads", type=_positive_int, default=2, help="RevViT attention heads (divide --dim)")
    train.add_argument(
        "--memory-efficient", action=argparse.BooleanOptionalAction, default=True,
        help="RevViT: rebuild activations in the backward pass instead of storing them",
    )
    train.add_argument(
        "--linear", default="inv_conv1x1", choices=linear_names(),
        help="channel-mixing layer of every Glow step (tfinv.blocks.glow_step.LINEAR_LAYERS)",
    )
    train.add_argument(
        "--learned-prior", action="store_true",
        help="Glow: learned split priors and learned top prior (Glow's paper)",
    )
    train.add_argument(
        "--conditioner-actnorm", action="store_true",
        help="Glow: ActNorm after each hidden convolution of the coupling conditioners (Glow's paper)",
    )
    train.add_argument(
        "--attention", default=None, choices=sorted(ATTENTION_NAMES),
        help="invertible attention after every Glow step's coupling (iMap / iTrans, arXiv:2106.03959)",
    )
    train.add_argument(
        "--task", default=None, choices=list(INVERSE_TASKS),
        help="--model cinn: the inverse problem (superres: 2x2 average pooling; inpaint: a random square hole; "
        "deblur: Gaussian blur; ct: scikit-image's Radon transform at --angles views, needs tfinv[inverse]); "
        "default superres",
    )
    train.add_argument("--noise-std", type=_positive_float, default=None,
                       help="--model cinn: standard deviation of the Gaussian noise on y (images in [0, 1]; "
                       "default 0.05)")
    train.add_argument("--photons", type=_positive_float, default=None,
                       help="--task ct: low-dose Poisson noise instead: I0, the mean photon count per detector bin "
                       "(tfinv.inverse_problems.Tomography(photons=I0))")
    train.add_argument("--angles", type=_positive_int, default=4, help="--task ct: projection angles over 180 degrees")
    train.add_argument("--hole", type=_positive_int, default=4, help="--task inpaint: side of the square hole")
    train.add_argument("--posterior-samples", type=_positive_int, default=16,
                       help="--model cinn: posterior samples per test observation for the metrics")
    train.add_argument(
        "--labels", type=_non_negative_int, default=None,
        help="flowgmm: number of labelled training images in total (class-balanced: N // K per class, "
        "the remainder at random); the others are unlabelled. Default: all labelled",
    )
    train.add_argument(
        "--labelled-fraction", type=_probability, default=0.5,
        help="flowgmm: labelled images are repeated to make about this share of every epoch",
    )
    train.add_argument(
        "--consistency-weight", type=_non_negative_float, default=0.0,
        help="flowgmm: weight of the paper's consistency regulariser on unlabelled images (0: off)",
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
        help="continue the interrupted run backed up in OUT/backup (same options; --epochs may grow); "
        "refused if OUT holds a finished run and nothing to continue",
    )
    train.set_defaults(func=_train)
    parser.train_parser = train  # `_given_train_options` reads it

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
    sample.add_argument(
        "--context", default=None, metavar="FILE",
        help="conditional models: a .npy array of float observations y, shape (N,) + the model's observation "
        "shape (or one observation); draws --n posterior samples for each, one PNG row per observation",
    )
    sample.add_argument("--npy", default=None, metavar="FILE",
                        help="with --context: also save the samples as a (n, N, H, W, C) float32 .npy array")
    sample.add_argument("--out", default="samples.png", help="PNG file to write")
    sample.set_defaults(func=_sample)

    diagnose = commands.add_parser(
        "diagnose", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="invertibility diagnostics of a saved model: bi-Lipschitz estimates, condition numbers, "
        "log-dets, exploding-inverse stress test",
        description="Load a .keras model saved by `tfinv train` and write OUT/diagnostics.json, "
        "OUT/summary.png and a PNG per layer (tfinv.diagnostics; Behrmann et al., arXiv:2006.09347).",
    )
    diagnose.add_argument("--model", required=True, help="path of a .keras file written by tfinv (a flow, or revvit)")
    diagnose.add_argument("--out", default=None, help="report folder (default: diagnostics/ beside the model)")
    diagnose.add_argument("--dataset", default="digits", help="'digits' (embedded) or the path of an .npz file")
    diagnose.add_argument("--key", default=None, help="image array name in an .npz file (default 'images')")
    diagnose.add_argument("--num-levels", type=_positive_int, default=None,
                          help="pixel levels of an .npz file (default: the model's, else 256)")
    diagnose.add_argument("--split", default="test", choices=["train", "test", "all"], help="data split used")
    diagnose.add_argument("--examples", type=_positive_int, default=64, help="data points (at least 2 used)")
    diagnose.add_argument("--iterations", type=_positive_int, default=20, help="power iterations per estimate")
    diagnose.add_argument("--layers", default="leaves", choices=["leaves", "all", "none"],
                          help="layers reported: the finest, every container too, or only the whole map")
    diagnose.add_argument("--condition-threshold", type=_positive_float, default=1e3,
                          help="flag layers whose local condition number exceeds this")
    diagnose.add_argument("--error-threshold", type=_positive_float, default=1e-3,
                          help="flag relative reconstruction errors above this")
    diagnose.add_argument("--seed", type=_seed, default=0, help="seed of the data points, start vectors, stress sets")
    diagnose.add_argument("--verbose", type=int, choices=[0, 1], default=1, help="progress bar")
    diagnose.set_defaults(func=_diagnose)

    detect = commands.add_parser(
        "ood", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="score out-of-distribution sets with a saved flow: AUROC report (JSON) and a histogram PNG",
        description="Load a .keras flow saved by tfinv and score the test split of --data (in-distribution) "
        "against OOD sets with tfinv.ood: log-likelihood, typicality per example and per batch of M, "
        "complexity-corrected likelihood. The typicality test takes its entropy from the train split of "
        "--data and its threshold from the first half of the test split; the second half is scored. "
        "Writes --out (JSON, whole or not at all) and, with --histogram, a PNG of the score histograms "
        "(in-distribution in blue).",
    )
    detect.add_argument("--model", required=True, help="path of a .keras flow written by tfinv")
    detect.add_argument("--data", default="digits", help="in-distribution data: 'digits' or the path of an .npz file")
    detect.add_argument("--key", default=None, help="image array name in the .npz files (default 'images')")
    detect.add_argument("--num-levels", type=_positive_int, default=None,
                        help="pixel levels of the .npz files (default 256; digits: 17)")
    detect.add_argument(
        "--ood", type=_ood_set, nargs="+", default=["inverted", "uniform_noise", "constant", "shuffled"],
        help="OOD sets: .npz files (all their images) or sets made from the test split of --data: "
        "inverted, uniform_noise, constant, shuffled",
    )
    detect.add_argument("--typicality-m", type=_positive_int, default=10, help="batch size M of the typicality test")
    detect.add_argument("--alpha", type=_probability, default=0.01, help="level of the typicality test")
    detect.add_argument("--batch-size", type=_positive_int, default=256, help="evaluation batch size")
    detect.add_argument("--seed", type=_seed, default=0, help="seed of the dequantisation noise and bootstrap")
    detect.add_argument("--out", default="ood.json", help="JSON report to write")
    detect.add_argument("--histogram", default=None, help="PNG of the score histograms to write")
    detect.set_defaults(func=_ood)
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
            # The stub takes any arguments (no option prefix), so `tfinv serve --port 0` and
            # `--help` alike get the missing-dependency message rather than an argparse error.
            stub = commands.add_parser(entry.name, help=f"(unavailable: {err})", add_help=False, prefix_chars="\0")
            stub.add_argument("ignored", nargs="*")
            stub.set_defaults(func=_unavailable(entry.name, err))
            continue
        _register_plugin(commands, register)


def _register_plugin(commands, register) -> None:
    """Adds a plugin's subcommands, marked so that an extra it imports on first use and finds
    missing is reported in one line (`main`)."""
    before = set(commands.choices)
    register(commands)
    for name in set(commands.choices) - before:
        commands.choices[name].set_defaults(plugin_command=True)


def _missing_extras(name: str, err: Exception) -> str:
    return f"'tfinv {name}' needs extra dependencies: {err} (pip install 'tfinv[export,serving]')"


def _unavailable(name: str, err: Exception):
    def run(args: argparse.Namespace) -> int:
        raise UsageError(_missing_extras(name, err))

    return run


def _command_name(argv: Sequence[str]) -> str | None:
    """The subcommand of ``argv`` (its first token that is not an option), or None."""
    return next((token for token in argv if not token.startswith("-")), None)


def _lean_command(name: str | None):
    """The ``register`` function of plugin command ``name`` if it runs without TensorFlow (it says
    so with ``register.needs_tensorflow = False``, as ``tfinv serve`` and ``tfinv query`` do),
    else None."""
    if name is None or name in ("train", "sample", "diagnose", "ood"):
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
    _register_plugin(commands, register)
    return parser


def _given_train_options(argv: Sequence[str]) -> tuple[str, ...]:
    """The dests of the ``tfinv train`` options present in ``argv`` (abbreviations included):
    ``argv`` parsed again with every default suppressed."""
    parser = build_parser()
    for action in parser.train_parser._actions:
        action.default = argparse.SUPPRESS
    parser.train_parser.set_defaults(func=argparse.SUPPRESS)
    given = vars(parser.parse_args(argv))
    return tuple(k for k in given if k not in ("command", "func", "tf_logging"))


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``tfinv`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    0 on success, 2 on a usage error or a missing extra (one line on stderr, no traceback), 1 if
    training diverged, 130 if training was interrupted (SIGINT/SIGTERM; one line naming the backup),
    75 if a worker of a multi-worker job failed (one line: restart every worker with ``--resume``).

    Commands that need no TensorFlow (``tfinv serve``, ``tfinv query``, ``tfinv serve-config``)
    run without importing it: ``tfinv serve`` is the same lean ONNX server as ``tfinv-serve``.
    Every other command imports TensorFlow first, with its start-up logging held back when this
    process is the ``tfinv`` console command (`tfinv._startup`; ``tfinv --verbose`` shows it).
    """
    from tfinv import _startup

    argv = list(sys.argv[1:] if argv is None else argv)
    name = _command_name(argv)
    try:
        lean = _lean_command(name)
        # The parser needs no TensorFlow (--help and usage errors are fast); a command that runs
        # imports it after parsing.
        args = (_lean_parser(name, lean) if lean is not None else build_parser()).parse_args(argv)
        if getattr(args, "command", None) == "train":
            args._given = _given_train_options(argv)
        if lean is None:
            _startup.import_tensorflow(quiet=_startup.is_quiet_command())
    except SystemExit as exit_:  # argparse reports its own errors (and --help) this way
        return int(exit_.code or 0)
    except KeyboardInterrupt:  # Ctrl-C while TensorFlow loads (seconds): nothing started yet
        print(f"tfinv{' ' + name if name else ''}: interrupted", file=sys.stderr)
        return 130
    try:
        return args.func(args)
    except UsageError as err:
        print(f"tfinv {args.command}: error: {err}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as err:  # a stage's extra (onnx, uvicorn, ...) imported on first use
        if not getattr(args, "plugin_command", False):
            raise
        print(f"tfinv {args.command}: error: {_missing_extras(args.command, err)}", file=sys.stderr)
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
