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
User errors (bad data, a file that is not a tfinv model, an impossible configuration) print one
line ``tfinv <command>: error: ...`` and exit with code 2; `main` returns the exit code.

Models are built by the functions in `MODEL_BUILDERS`; add one with `register_model`.
"""

from __future__ import annotations

import os

# Must precede the first TensorFlow import to take effect (TF reads it once, at import).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable, Iterator, Sequence  # noqa: E402

__all__ = ["MODEL_BUILDERS", "ModelBuilder", "UsageError", "evaluate_bits_per_dim", "main", "register_model"]


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
def evaluate_bits_per_dim(model, dataset, jit_compile: bool = False) -> float:
    """Mean of ``model.bits_per_dim(x)`` over every example of ``dataset`` (batches of ``x`` or ``(x, y)``)."""
    import tensorflow as tf

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


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _write_metrics(path: str, args: argparse.Namespace, model, history, fit_seconds: float, started: float,
                   **task_fields: Any) -> dict:
    """Writes ``metrics.json``: the task's figures plus what every run records (epochs, time,
    parameters, history, the CLI options and the model config); returns the dict."""
    options = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    metrics = {
        "model": args.model,
        "dataset": os.fspath(args.dataset),
        **task_fields,
        "epochs": len(history.history.get("loss", [])),
        "fit_seconds": round(fit_seconds, 3),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "num_parameters": int(model.count_params()),
        "history": {k: [_finite_or_none(float(v)) for v in vs] for k, vs in history.history.items()},
        "config": {"cli": options, "model": model.get_config()},
    }
    with open(path, "w") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    return metrics


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


# ---------------------------------------------------------------- train
def _train(args: argparse.Namespace) -> int:
    import keras

    from tfinv import data

    started = time.perf_counter()
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
    input_shape = tuple(int(s) for s in train_images.shape[1:])

    keras.utils.set_random_seed(args.seed)
    if classify:
        train_split = (train_images, train_labels[: args.max_train])
        test_split = (test_images, test_labels[: args.max_test])
        return _train_classifier(args, train_split, test_split, num_levels, started)
    with _as_usage_error():
        model = MODEL_BUILDERS[args.model].build(args, input_shape, num_levels)
    train_ds = data.dequantized_dataset(train_images, batch_size=args.batch_size, seed=args.seed)
    test_ds = data.dequantized_dataset(
        test_images, batch_size=args.batch_size, seed=args.seed, shuffle=False, fixed_noise=True
    )
    model.initialize(next(iter(train_ds)))
    model.compile(optimizer=keras.optimizers.Adam(args.lr), jit_compile=args.jit)
    fit_started = time.perf_counter()
    history = model.fit(
        train_ds,
        epochs=args.epochs,
        validation_data=test_ds,
        shuffle=False,  # the dataset reshuffles itself every epoch
        verbose=args.verbose,
        callbacks=[keras.callbacks.TerminateOnNaN()],
    )
    fit_seconds = time.perf_counter() - fit_started

    # Bits/dim of the whole splits with fixed noise: reproducible, unlike fit's running averages.
    evaluation = dict(shuffle=False, fixed_noise=True, batch_size=args.batch_size, seed=args.seed)
    train_bpd = evaluate_bits_per_dim(model, data.dequantized_dataset(train_images, **evaluation), args.jit)
    test_bpd = evaluate_bits_per_dim(model, data.dequantized_dataset(test_images, **evaluation), args.jit)

    os.makedirs(args.out, exist_ok=True)
    model_path = os.path.join(args.out, "model.keras")
    samples_path = os.path.join(args.out, "samples.png")
    metrics_path = os.path.join(args.out, "metrics.json")
    model.save(model_path)
    samples = model.sample(args.num_samples, temperature=args.temperature, seed=args.seed)
    data.save_image_grid(samples.numpy(), samples_path, num_levels)

    metrics = _write_metrics(
        metrics_path, args, model, history, fit_seconds, started,
        num_levels=num_levels, input_shape=list(input_shape),
        num_train=int(len(train_images)), num_test=int(len(test_images)),
        train_bits_per_dim=_finite_or_none(train_bpd), test_bits_per_dim=_finite_or_none(test_bpd),
    )
    print(
        f"train bits/dim {train_bpd:.4f}, test bits/dim {test_bpd:.4f} after "
        f"{metrics['epochs']} epoch(s) in {fit_seconds:.1f} s; wrote {model_path}, {samples_path}, "
        f"{metrics_path}"
    )
    if not (math.isfinite(train_bpd) and math.isfinite(test_bpd)):
        print("tfinv train: training diverged (non-finite bits/dim); try a smaller --lr", file=sys.stderr)
        return 1
    return 0


def _train_classifier(args: argparse.Namespace, train_split, test_split, num_levels: int,
                      started: float) -> int:
    """``tfinv train`` for a classification model: fit on (image, label), report accuracy."""
    import keras

    from tfinv import data

    (train_images, train_labels), (test_images, test_labels) = train_split, test_split
    input_shape = tuple(int(s) for s in train_images.shape[1:])
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    with _as_usage_error():
        model = MODEL_BUILDERS[args.model].build(args, input_shape, num_levels, num_classes=num_classes)
    batches = dict(batch_size=args.batch_size, seed=args.seed, with_labels=True)
    train_ds = data.dequantized_dataset(train_images, train_labels, **batches)
    evaluation = dict(shuffle=False, fixed_noise=True, **batches)
    test_ds = data.dequantized_dataset(test_images, test_labels, **evaluation)
    model.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=args.jit,
    )
    fit_started = time.perf_counter()
    history = model.fit(
        train_ds,
        epochs=args.epochs,
        validation_data=test_ds,
        shuffle=False,
        verbose=args.verbose,
        callbacks=[keras.callbacks.TerminateOnNaN()],
    )
    fit_seconds = time.perf_counter() - fit_started
    # Whole splits with fixed noise: reproducible, unlike fit's running averages.
    train_scores = model.evaluate(data.dequantized_dataset(train_images, train_labels, **evaluation),
                                  return_dict=True, verbose=0)
    test_scores = model.evaluate(test_ds, return_dict=True, verbose=0)

    os.makedirs(args.out, exist_ok=True)
    model_path = os.path.join(args.out, "model.keras")
    metrics_path = os.path.join(args.out, "metrics.json")
    model.save(model_path)
    metrics = _write_metrics(
        metrics_path, args, model, history, fit_seconds, started,
        task="classification", num_levels=num_levels, input_shape=list(input_shape),
        num_classes=num_classes, num_train=int(len(train_images)), num_test=int(len(test_images)),
        train_accuracy=_finite_or_none(train_scores["accuracy"]),
        test_accuracy=_finite_or_none(test_scores["accuracy"]),
        train_loss=_finite_or_none(train_scores["loss"]), test_loss=_finite_or_none(test_scores["loss"]),
    )
    print(
        f"train accuracy {train_scores['accuracy']:.4f}, test accuracy {test_scores['accuracy']:.4f} "
        f"after {metrics['epochs']} epoch(s) in {fit_seconds:.1f} s; wrote {model_path}, {metrics_path}"
    )
    if not (math.isfinite(train_scores["loss"]) and math.isfinite(test_scores["loss"])):
        print("tfinv train: training diverged (non-finite loss); try a smaller --lr", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- sample
def _sample(args: argparse.Namespace) -> int:
    import tfinv
    from tfinv import data

    with _as_usage_error():
        model = tfinv.load_model(args.model)
    num_levels = args.num_levels or getattr(model, "num_levels", None)
    if num_levels is None:
        raise UsageError(f"{args.model!r} does not record its pixel levels; pass --num-levels")
    with _as_usage_error():
        samples = model.sample(args.n, temperature=args.temperature, seed=args.seed)
    data.save_image_grid(samples.numpy(), args.out, num_levels, scale=args.scale)
    print(f"wrote {args.n} samples (temperature {args.temperature}) to {args.out}")
    return 0


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The ``tfinv`` argument parser (subcommands ``train`` and ``sample``)."""
    from tfinv.blocks.glow_step import COUPLINGS, LINEAR_LAYERS

    parser = argparse.ArgumentParser(prog="tfinv", description="Invertible networks in TensorFlow/Keras.")
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
    train.add_argument("--seed", type=int, default=0, help="seed of weights, shuffling, noise and samples")
    train.add_argument(
        "--jit", action=argparse.BooleanOptionalAction, default=False,
        help="XLA-compile the train step (off by default: on 2 CPU cores the ~15 s compile "
        "outweighs the faster steps for short runs)",
    )
    train.add_argument("--max-train", type=_positive_int, default=None, help="use only the first N train images")
    train.add_argument("--max-test", type=_positive_int, default=None, help="use only the first N test images")
    train.add_argument("--num-samples", type=_positive_int, default=64, help="samples in samples.png")
    train.add_argument("--temperature", type=_positive_float, default=0.7, help="sampling temperature")
    train.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1, help="Keras fit verbosity")
    train.add_argument("--out", required=True, help="output directory (created if needed)")
    train.set_defaults(func=_train)

    sample = commands.add_parser(
        "sample", formatter_class=argparse.ArgumentDefaultsHelpFormatter, help="draw samples from a saved model into a PNG grid",
        description="Load a .keras model saved by `tfinv train` and write a PNG grid of samples.",
    )
    sample.add_argument("--model", required=True, help="path of a .keras file written by tfinv")
    sample.add_argument("--n", type=_positive_int, default=64, help="number of samples")
    sample.add_argument("--temperature", type=_positive_float, default=0.7)
    sample.add_argument("--seed", type=int, default=0)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``tfinv`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    0 on success, 2 on a usage error (one line on stderr, no traceback), 1 if training diverged.
    """
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


if __name__ == "__main__":
    sys.exit(main())
