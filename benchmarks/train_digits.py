"""Benchmark: train the default small Glow on the embedded digits for a fixed budget.

Prints one JSON object to stdout:

* ``train_images_per_second``: median over the training calls after the first ``--warmup-steps``
  (so tracing/compilation is excluded) of ``batch_size * steps in the call / call time``, timed between consecutive
  ``on_train_batch_end`` calls (each synchronised by reading the loss); ``_p10``/``_p90`` too;
* ``test_bits_per_dim``: mean ``model.bits_per_dim`` over the whole fixed-noise test split;
* ``peak_rss_mb``: the process's peak resident memory (``resource.getrusage``);
* wall times, parameter count and the configuration.

Run: ``python benchmarks/train_digits.py [--epochs 5] [--jit] [--learned-prior]``. Timings are for reading, never
asserted in tests.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfinv  # noqa: E402
from tfinv import data  # noqa: E402
from tfinv import training  # noqa: E402

from _common import add_glow_training_arguments  # noqa: E402


class StepTimer(keras.callbacks.Callback):
    """Records the wall time between consecutive ``on_train_batch_end`` calls and the number of
    train steps in between (``steps_per_execution`` > 1 runs several steps per call)."""

    def __init__(self):
        super().__init__()
        self.step_seconds: list[float] = []
        self.step_counts: list[int] = []
        self._last: float | None = None
        self._last_batch = -1

    def on_epoch_begin(self, epoch, logs=None):
        self._last = time.perf_counter()  # exclude the validation pass between epochs
        self._last_batch = -1

    def on_train_batch_end(self, batch, logs=None):
        if logs and "loss" in logs:
            float(logs["loss"])  # wait for the step to finish (results may be asynchronous)
        now = time.perf_counter()
        self.step_seconds.append(now - self._last)
        self.step_counts.append(batch - self._last_batch)
        self._last, self._last_batch = now, batch


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def parse_args(argv=None) -> argparse.Namespace:
    parser = add_glow_training_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--jit", action=argparse.BooleanOptionalAction, default=None,
                        help="XLA or not (default: FlowModel.compile's choice, jit_compile='auto')")
    parser.add_argument("--learned-prior", action=argparse.BooleanOptionalAction, default=False,
                        help="Glow's learned split priors and learned top prior")
    parser.add_argument("--warmup-steps", type=int, default=10, help="first steps left out of the throughput")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    train_images, _ = data.digits_arrays("train", with_labels=False)
    test_images, _ = data.digits_arrays("test", with_labels=False)
    model = tfinv.models.Glow(
        data.DIGITS_SHAPE,
        levels=args.levels,
        steps_per_level=args.steps_per_level,
        hidden_channels=args.hidden_channels,
        num_levels=data.DIGITS_NUM_LEVELS,
        seed=args.seed,
        learned_prior=args.learned_prior,
    )
    timer = StepTimer()
    # Equal batches (drop_remainder): every step has the same shape, so each timing is the same work.
    result = training.fit_flow(
        model, train_images, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        seed=args.seed, jit_compile="auto" if args.jit is None else args.jit, drop_remainder=True, callbacks=[timer],
    )

    steps = timer.step_seconds[args.warmup_steps :]
    counts = timer.step_counts[args.warmup_steps :]
    if not steps:
        raise SystemExit(f"no steps left after --warmup-steps {args.warmup_steps}; raise --epochs")
    rates = np.asarray([args.batch_size * n / s for n, s in zip(counts, steps)])
    test_bpd = training.dataset_bits_per_dim(model, test_images, batch_size=256, seed=args.seed)
    return {
        "benchmark": "train_digits",
        "train_images_per_second": round(float(statistics.median(rates)), 1),
        "train_images_per_second_p10": round(float(np.percentile(rates, 10)), 1),
        "train_images_per_second_p90": round(float(np.percentile(rates, 90)), 1),
        "timed_steps": int(sum(counts)),
        "jit_compile": bool(model.jit_compile),
        "steps_per_execution": int(model.steps_per_execution or 1),
        "first_step_seconds": round(timer.step_seconds[0], 3),
        "final_train_bits_per_dim": float(result.history["bits_per_dim"][-1]),
        "test_bits_per_dim": test_bpd,
        "fit_seconds": round(result.fit_seconds, 3),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "num_parameters": int(model.count_params()),
        "config": {**vars(args), "num_train": int(len(train_images)), "num_test": int(len(test_images))},
        "environment": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "tfinv": tfinv.__version__,
            "cpu_count": os.cpu_count(),
            "gpus": len(tf.config.list_physical_devices("GPU")),
        },
    }


def main(argv=None) -> int:
    print(json.dumps(run(parse_args(argv)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
