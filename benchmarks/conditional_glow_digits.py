"""Benchmark: a class-conditional Glow on the embedded digits (context = one-hot label).

Trains ``Glow(..., context_shape=(10,))`` on ``(x, one_hot(y))`` pairs for a fixed budget and
prints one JSON object to stdout:

* ``test_bits_per_dim_conditional``: mean ``-log p(x | y) / (D ln 2)`` over the fixed-noise test
  split, with each image's true label;
* ``test_bits_per_dim_marginal``: the same images under the label mixture
  ``p(x) = (1/10) sum_y p(x | y)`` (a proper unconditional density of the same model);
* ``test_label_accuracy``: ``argmax_y p(x | y)`` against the true label (the flow used as a
  generative classifier, for reading only);
* ``png``: a grid of samples, one row per class (temperature ``--temperature``).

Run: ``python benchmarks/conditional_glow_digits.py [--epochs 5] [--learned-prior] [--png PATH]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfinv  # noqa: E402
from tfinv import data  # noqa: E402
from tfinv.data.image_grid import image_grid  # noqa: E402

from _common import add_glow_training_arguments, log, write_file_whole  # noqa: E402

NUM_CLASSES = 10


def parse_args(argv=None) -> argparse.Namespace:
    parser = add_glow_training_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--learned-prior", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--samples-per-class", type=int, default=10)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--png", default="conditional_glow_digits.png", help="sample grid to write")
    return parser.parse_args(argv)


def one_hot(ds: tf.data.Dataset) -> tf.data.Dataset:
    return ds.map(lambda x, y: (x, tf.one_hot(y, NUM_CLASSES)))


def evaluate(model: tfinv.FlowModel, ds: tf.data.Dataset) -> dict:
    """Conditional and label-marginal bits/dim and generative-classifier accuracy."""
    num_dims = model.num_dims
    labels_eye = tf.eye(NUM_CLASSES)

    @tf.function(reduce_retracing=True)
    def per_class_log_prob(x):
        # (batch, classes): log p(x | y) for every label y.
        return tf.stack([model.log_prob(x, tf.tile(labels_eye[y][None], [tf.shape(x)[0], 1]))
                         for y in range(NUM_CLASSES)], axis=1)

    conditional, marginal, correct, count = 0.0, 0.0, 0, 0
    for x, y in ds:
        log_probs = tf.cast(per_class_log_prob(x), tf.float64)
        label = tf.argmax(y, axis=-1)
        conditional += float(-tf.reduce_sum(tf.gather(log_probs, label, batch_dims=1)))
        marginal += float(-tf.reduce_sum(tf.reduce_logsumexp(log_probs, axis=1) - math.log(NUM_CLASSES)))
        correct += int(tf.reduce_sum(tf.cast(tf.argmax(log_probs, axis=1) == label, tf.int32)))
        count += int(x.shape[0])
    scale = count * num_dims * math.log(2.0)
    return {
        "test_bits_per_dim_conditional": conditional / scale,
        "test_bits_per_dim_marginal": marginal / scale,
        "test_label_accuracy": correct / count,
        "num_test": count,
    }


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    train_images, train_labels = data.digits_arrays("train", with_labels=True)
    test_images, test_labels = data.digits_arrays("test", with_labels=True)
    train_ds = one_hot(data.dequantized_dataset(
        train_images, train_labels, batch_size=args.batch_size, seed=args.seed, with_labels=True,
        drop_remainder=True))
    test_ds = one_hot(data.dequantized_dataset(
        test_images, test_labels, batch_size=256, seed=args.seed, shuffle=False, fixed_noise=True,
        with_labels=True))
    model = tfinv.models.Glow(
        data.DIGITS_SHAPE, levels=args.levels, steps_per_level=args.steps_per_level,
        hidden_channels=args.hidden_channels, num_levels=data.DIGITS_NUM_LEVELS, seed=args.seed,
        learned_prior=args.learned_prior, context_shape=(NUM_CLASSES,),
    )
    model.initialize(next(iter(train_ds)))
    model.compile(optimizer=keras.optimizers.Adam(args.lr))
    log(f"training {args.epochs} epochs on {len(train_images)} labelled digits")
    fit_started = time.perf_counter()
    history = model.fit(train_ds, epochs=args.epochs, shuffle=False, verbose=0)
    fit_seconds = time.perf_counter() - fit_started

    metrics = evaluate(model, test_ds)
    per_class = args.samples_per_class
    labels = np.repeat(np.arange(NUM_CLASSES), per_class)
    samples = model.sample(len(labels), temperature=args.temperature, seed=args.seed,
                           context=np.eye(NUM_CLASSES, dtype=np.float32)[labels])
    write_file_whole(args.png, tf.io.encode_png(image_grid(samples, data.DIGITS_NUM_LEVELS, columns=per_class)).numpy())
    return {
        "benchmark": "conditional_glow_digits",
        **metrics,
        "final_train_bits_per_dim": float(history.history["bits_per_dim"][-1]),
        "samples_finite": bool(np.all(np.isfinite(samples))),
        "png": os.path.abspath(args.png),
        "png_layout": f"{NUM_CLASSES} rows (labels 0-9) x {per_class} samples, temperature {args.temperature}",
        "fit_seconds": round(fit_seconds, 3),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "num_parameters": int(model.count_params()),
        "config": {**vars(args), "num_train": int(len(train_images))},
        "environment": {"tensorflow": tf.__version__, "keras": keras.__version__, "tfinv": tfinv.__version__},
    }


def main(argv=None) -> int:
    print(json.dumps(run(parse_args(argv)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
