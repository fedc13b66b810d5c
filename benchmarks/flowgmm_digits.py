"""Benchmark: semi-supervised FlowGMM on the embedded digits with 10 / 50 / 100 labels.

For each label count ``n`` (class-balanced, seeded; the rest of the 1437 training images are
unlabelled) it trains, for the same number of optimiser steps:

* ``flowgmm``: `tfinv.models.FlowGMM` (a small Glow, fixed class means) on all training images,
  labelled examples repeated so that about half of every batch is labelled (the paper also
  oversamples labelled data);
* ``flow_labelled_only``: the same FlowGMM trained on the ``n`` labelled examples alone;
* ``cnn_labelled_only``: a small CNN classifier (cross-entropy) on the ``n`` labelled examples;
* ``flowgmm_consistency``: ``flowgmm`` with the paper's consistency regulariser (weight 1,
  ramped up over ``--consistency-rampup`` steps; the second view a random translation by up to
  one pixel); other ``--consistency-settings WEIGHT:SHIFT`` add columns
  ``flowgmm_consistency_w{WEIGHT}_shift{SHIFT}`` (shift 0: the second view is the input itself,
  i.e. hard pseudo-labels).

and reports test accuracy on the 360 test images (fixed dequantisation noise). Prints one JSON
object to stdout. Writes two PNGs of the ``flowgmm`` model trained with the most labels:
``--samples-figure`` (class-conditional samples ``f^{-1}(mu_k + T eps)``, one row per class,
T = 0.7) and ``--interpolation-figure`` (rows: latent interpolation between the first test image
of class ``2i`` and of class ``2i + 1``, 9 steps, the real images at both ends). Budget: ``--steps`` steps per model (default 800; ~5 min in all on 2 shared cores).

Run: ``python benchmarks/flowgmm_digits.py [--steps 800] [--labels 10 50 100]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from _common import log, stdout_to_stderr  # noqa: E402
from tfinv import data  # noqa: E402
from tfinv.models import FlowGMM  # noqa: E402
from tfinv.models.flow_gmm import UNLABELLED, oversample_labelled, semi_supervised_labels  # noqa: E402

NUM_CLASSES = 10


def make_flowgmm(args, seed: int, consistency: tuple[float, int] | None = None) -> FlowGMM:
    extra = ({} if consistency is None else
             dict(consistency_weight=consistency[0], consistency_shift=consistency[1],
                  consistency_rampup=args.consistency_rampup))
    return FlowGMM.glow((8, 8, 1), NUM_CLASSES, levels=2, steps_per_level=args.steps_per_level,
                        hidden_channels=args.hidden_channels, num_levels=data.DIGITS_NUM_LEVELS,
                        mean_scale=args.mean_scale, seed=seed, name="flowgmm", **extra)


def write_figures(model: FlowGMM, test_x: np.ndarray, test_y: np.ndarray, args) -> None:
    """Class-conditional samples and latent interpolations of ``model`` as PNGs."""
    samples = model.sample_classes(np.repeat(np.arange(NUM_CLASSES), 8), temperature=0.7, seed=args.seed)
    data.save_image_grid(samples.numpy(), args.samples_figure, data.DIGITS_NUM_LEVELS, columns=8)
    rows = []
    for a in range(0, NUM_CLASSES, 2):
        start, end = test_x[np.flatnonzero(test_y == a)[0]], test_x[np.flatnonzero(test_y == a + 1)[0]]
        z, _ = model.forward(np.stack([start, end]))
        path = model.interpolate(z[0], z[1], 9).numpy()
        rows.append(np.concatenate([start[None], path, end[None]]))
    data.save_image_grid(np.concatenate(rows), args.interpolation_figure, data.DIGITS_NUM_LEVELS, columns=11)


def train_flow(model: FlowGMM, images: np.ndarray, labels: np.ndarray, args, seed: int) -> float:
    """Trains ``model`` for ``args.steps`` steps on dequantised ``(images, labels)``; returns seconds."""
    batches = data.dequantized_epochs(images, labels, epochs=10**6, batch_size=args.batch_size, seed=seed,
                                      with_labels=True)
    first = next(iter(batches))[0]
    model.initialize(first)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
    started = time.perf_counter()
    model.fit(batches.take(args.steps), epochs=1, verbose=0)
    return time.perf_counter() - started


def cnn(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Rescaling(1.0 / data.DIGITS_NUM_LEVELS),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dropout(0.3),
        keras.layers.Dense(NUM_CLASSES),
    ], name="cnn")


def train_cnn(model: keras.Model, images: np.ndarray, labels: np.ndarray, args, seed: int) -> float:
    batches = data.dequantized_epochs(images, labels, epochs=10**6, batch_size=args.batch_size, seed=seed,
                                      with_labels=True)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    started = time.perf_counter()
    model.fit(batches.take(args.steps), epochs=1, verbose=0)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--steps-per-level", type=int, default=2)
    parser.add_argument("--hidden-channels", type=int, default=32)
    parser.add_argument("--mean-scale", type=float, default=1.0)
    parser.add_argument("--labelled-fraction", type=float, default=0.5)
    parser.add_argument("--consistency-settings", nargs="*", default=["1.0:1"],
                        help="WEIGHT:SHIFT of each flowgmm_consistency run (none: skip them)")
    parser.add_argument("--consistency-rampup", type=int, default=200)
    parser.add_argument("--skip-baselines", action="store_true", help="skip flow_labelled_only and the CNN")
    figures = os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures")
    parser.add_argument("--samples-figure", default=os.path.join(figures, "flowgmm_digits_samples.png"))
    parser.add_argument("--interpolation-figure", default=os.path.join(figures, "flowgmm_digits_interpolation.png"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    train_x, train_y = data.digits_arrays("train")
    test_x, test_y = data.digits_arrays("test")
    rng = np.random.default_rng(1234)
    test_float = test_x.astype(np.float32) + rng.uniform(0, 1, test_x.shape).astype(np.float32)
    results = []
    started = time.perf_counter()
    with stdout_to_stderr() as out:
        for n in args.labels:
            labels = semi_supervised_labels(train_y, n, NUM_CLASSES, seed=args.seed)
            row = {"labels": n}
            keras.utils.set_random_seed(args.seed)
            model = make_flowgmm(args, args.seed)
            x, y = oversample_labelled(train_x, labels, args.labelled_fraction)
            row["flowgmm_seconds"] = train_flow(model, x, y, args, args.seed)
            row["flowgmm"] = float(np.mean(model.predict_classes(test_float) == test_y))
            row["flowgmm_test_bits_per_dim"] = float(np.mean(model.bits_per_dim(test_float).numpy()))
            log(f"{n} labels: FlowGMM {row['flowgmm']:.3f}")
            if n == max(args.labels):
                write_figures(model, test_float, test_y, args)

            for setting in args.consistency_settings:
                weight, shift = float(setting.split(":")[0]), int(setting.split(":")[1])
                name = "flowgmm_consistency" + ("" if (weight, shift) == (1.0, 1) else f"_w{weight:g}_shift{shift}")
                keras.utils.set_random_seed(args.seed)
                regularised = make_flowgmm(args, args.seed, consistency=(weight, shift))
                row[f"{name}_seconds"] = train_flow(regularised, x, y, args, args.seed)
                row[name] = float(np.mean(regularised.predict_classes(test_float) == test_y))
                row[f"{name}_test_bits_per_dim"] = float(np.mean(regularised.bits_per_dim(test_float).numpy()))
                log(f"{n} labels: {name} {row[name]:.3f}")
            if args.skip_baselines:
                results.append(row)
                continue

            keep = labels != UNLABELLED
            keras.utils.set_random_seed(args.seed)
            only = make_flowgmm(args, args.seed)
            row["flow_labelled_only_seconds"] = train_flow(only, train_x[keep], labels[keep], args, args.seed)
            row["flow_labelled_only"] = float(np.mean(only.predict_classes(test_float) == test_y))
            log(f"{n} labels: flow on labelled only {row['flow_labelled_only']:.3f}")

            classifier = cnn(args.seed)
            row["cnn_labelled_only_seconds"] = train_cnn(classifier, train_x[keep], labels[keep], args, args.seed)
            logits = classifier.predict(test_float, verbose=0)
            row["cnn_labelled_only"] = float(np.mean(np.argmax(logits, -1) == test_y))
            row["cnn_parameters"] = int(classifier.count_params())
            row["flow_parameters"] = int(model.count_params())
            log(f"{n} labels: CNN {row['cnn_labelled_only']:.3f}")
            results.append(row)
        report = {
            "benchmark": "flowgmm_digits",
            "config": vars(args),
            "train_images": int(len(train_x)),
            "test_images": int(len(test_x)),
            "results": results,
            "figures": [args.samples_figure, args.interpolation_figure],
            "wall_seconds": time.perf_counter() - started,
            "tensorflow": tf.__version__,
        }
        print(json.dumps(report, indent=2), file=out)


if __name__ == "__main__":
    main()
