"""Benchmark: an invertible CNN classifier against a plain CNN of the same widths, and Glow with
periodic convolutions against Glow's 1x1 convolutions, on the embedded digits.

Prints one JSON object to stdout:

* ``classification``: test accuracy of `tfinv.models.InvertibleCNN` (Finzi et al.: periodic
  convolutions + smooth leaky ReLUs + Haar downsampling, linear head) and of a plain CNN with the
  same widths per resolution (``Conv2D`` + ReLU, zero padding, a learned stride-2 ``Conv2D`` to
  ``4C`` channels in place of the invertible downsampling, the same head), both trained with
  ``model.fit`` for the same epochs; the gap in points; how exactly the invertible model's input
  is rebuilt from its features (``max|reconstruct(features(x)) - x| / max|x|`` over the test
  split); parameters and fit times.
* ``density``: test bits/dim (mean ``model.bits_per_dim`` over the fixed-noise test split, as
  ``tfinv train`` reports it) of `tfinv.models.Glow` with ``linear="inv_conv1x1"`` and
  ``linear="periodic_conv"``, each trained as the foundation's Glow (10 epochs, batch 64, Adam
  1e-3). ``periodic_conv`` uses 3x3 kernels, which need feature maps of at least 3x3: on 8x8
  digits that allows one level (squeeze to 4x4x4); the 1x1 baseline is reported both at its
  default two levels and at one level (same architecture, only the linear layer differs).
  ``PeriodicConv`` starts near the identity (no channel mixing) where ``InvConv1x1`` starts as a
  random rotation, so a variant with a random-rotation centre tap (`rotate_centre_taps`) is
  reported too. Last, a one-level flow of Karami et al.'s `ConvolutionalFlowStep` (ActNorm ->
  PeriodicConv -> S-Log -> DataAdaptiveConv), with and without the S-Log gate, same budget.

Run: ``python benchmarks/invertible_cnn_digits.py [--epochs 60] [--glow-epochs 10]``. Timings
are for reading, never asserted in tests.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfinv  # noqa: E402
from tfinv import data  # noqa: E402
from tfinv import training  # noqa: E402
from tfinv.blocks.convolutional_flow_step import ConvolutionalFlowStep  # noqa: E402
from tfinv.layers.logit_preprocess import LogitPreprocess  # noqa: E402
from tfinv.layers.periodic_conv import PeriodicConv  # noqa: E402
from tfinv.layers.squeeze import Squeeze  # noqa: E402
from tfinv.models.invertible_cnn import InvertibleCNN  # noqa: E402

PIXEL_SCALE = 1.0 / (data.DIGITS_NUM_LEVELS - 1)  # counts 0..16 -> [0, 1]


def plain_cnn(args: argparse.Namespace, num_classes: int) -> keras.Model:
    """The non-invertible counterpart of `InvertibleCNN` with the same widths per resolution."""
    height, width, channels = data.DIGITS_SHAPE
    inputs = keras.Input(data.DIGITS_SHAPE)
    h = inputs * PIXEL_SCALE
    size = min(height, width)
    for level in range(args.downsamplings + 1):
        k = min(args.kernel_size, size)
        for _ in range(args.depth):
            h = keras.layers.Conv2D(channels, k, padding="same", activation="relu")(h)
        if level < args.downsamplings:
            channels *= 4
            h = keras.layers.Conv2D(channels, 2, strides=2)(h)  # learned downsampling to 4C
            size //= 2
    head_channels = channels if args.head_channels is None else args.head_channels
    h = h[..., :head_channels]
    h = keras.layers.GlobalAveragePooling2D()(h) if args.head == "average" else keras.layers.Flatten()(h)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(h), name="plain_cnn")


def invertible_cnn(args: argparse.Namespace, num_classes: int) -> InvertibleCNN:
    return InvertibleCNN(
        data.DIGITS_SHAPE,
        num_classes=num_classes,
        downsamplings=args.downsamplings,
        depth=args.depth,
        kernel_size=args.kernel_size,
        activation=args.activation,
        downsampling=args.downsampling,
        head=args.head,
        head_channels=args.head_channels,
        input_scale=PIXEL_SCALE,
        negative_slope=args.negative_slope,
        conditioning_weight=args.conditioning_weight,
        seed=args.seed,
        name="invertible_cnn",
    )


def train_classifier(model: keras.Model, args: argparse.Namespace) -> dict:
    train = data.digits(batch_size=args.batch_size, split="train", dequantize=False, seed=args.seed,
                        with_labels=True)
    test = data.digits(batch_size=256, split="test", dequantize=False, shuffle=False, with_labels=True)
    model.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    started = time.perf_counter()
    history = model.fit(train, epochs=args.epochs, verbose=0)
    fit_seconds = time.perf_counter() - started
    _, test_accuracy = model.evaluate(test, verbose=0)
    return {
        "test_accuracy": round(float(test_accuracy), 4),
        "final_train_accuracy": round(float(history.history["accuracy"][-1]), 4),
        "num_parameters": int(model.count_params()),
        "fit_seconds": round(fit_seconds, 2),
    }


def reconstruction_error(model: InvertibleCNN) -> float:
    """``max|reconstruct(features(x)) - x| / max|x|`` over the test images (pixel counts)."""
    images, _ = data.digits_arrays("test", with_labels=False)
    x = tf.constant(images, tf.float32)
    x_back = model.reconstruct(model.features(x))
    return float(np.max(np.abs(np.asarray(x_back, np.float64) - images)) / np.max(np.abs(images)))


def rotate_centre_taps(model: keras.Model, seed: int) -> None:
    """Replaces the identity in every `PeriodicConv`'s centre tap by a random rotation (keeping
    the initial noise): the periodic convolution then starts as Glow's random-rotation 1x1
    convolution plus small spatial taps, instead of (almost) the identity."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, PeriodicConv):
            kernel = layer.kernel.numpy()
            centre = (kernel.shape[0] - 1) // 2
            channels = kernel.shape[2]
            rotation = np.linalg.qr(rng.standard_normal((channels, channels)))[0]
            kernel[centre, centre] += rotation - np.eye(channels)
            layer.kernel.assign(kernel)


def glow(linear: str, levels: int, args: argparse.Namespace) -> keras.Model:
    return tfinv.models.Glow(data.DIGITS_SHAPE, levels=levels, steps_per_level=4, hidden_channels=64,
                             num_levels=data.DIGITS_NUM_LEVELS, seed=args.seed, linear=linear)


def convolutional_flow(args: argparse.Namespace, nonlinearity: bool) -> keras.Model:
    """Karami et al.'s components in one level: logit, squeeze to 4x4x4, 4 `ConvolutionalFlowStep`s."""
    steps = [ConvolutionalFlowStep(hidden_channels=64, seed=args.seed + i, parity=i % 2,
                                   nonlinearity=nonlinearity, name=f"step_{i}") for i in range(4)]
    return tfinv.FlowModel([LogitPreprocess(data.DIGITS_NUM_LEVELS), Squeeze()] + steps,
                           input_shape=data.DIGITS_SHAPE, name="convolutional_flow")


def train_density(make, args: argparse.Namespace, rotate: bool = False) -> dict:
    keras.utils.set_random_seed(args.seed)
    train_images, _ = data.digits_arrays("train", with_labels=False)
    test_images, _ = data.digits_arrays("test", with_labels=False)
    model = make()
    if rotate:
        rotate_centre_taps(model, args.seed)
    result = training.fit_flow(model, train_images, epochs=args.glow_epochs, batch_size=64,
                               learning_rate=1e-3, seed=args.seed, drop_remainder=True)
    return {
        "test_bits_per_dim": round(training.dataset_bits_per_dim(model, test_images, seed=args.seed), 4),
        "final_train_bits_per_dim": round(float(result.history["bits_per_dim"][-1]), 4),
        "num_parameters": int(model.count_params()),
        "fit_seconds": round(result.fit_seconds, 2),
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=60, help="classifier epochs")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--downsamplings", type=int, default=2)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--kernel-size", type=int, default=3)
    parser.add_argument("--activation", default="smooth_leaky_relu")
    parser.add_argument("--downsampling", default="haar")
    parser.add_argument("--head", default="average")
    parser.add_argument("--head-channels", type=int, default=None)
    parser.add_argument("--negative-slope", type=float, default=0.3)
    parser.add_argument("--conditioning-weight", type=float, default=0.1)
    parser.add_argument("--glow-epochs", type=int, default=10)
    parser.add_argument("--skip-glow", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    num_classes = 10
    keras.utils.set_random_seed(args.seed)
    invertible = invertible_cnn(args, num_classes)
    invertible_result = train_classifier(invertible, args)
    invertible_result["reconstruction_relative_error"] = reconstruction_error(invertible)
    invertible_result["latent_shape"] = list(invertible.latent_shape)
    keras.utils.set_random_seed(args.seed)
    plain_result = train_classifier(plain_cnn(args, num_classes), args)
    result = {
        "benchmark": "invertible_cnn_digits",
        "classification": {
            "invertible_cnn": invertible_result,
            "plain_cnn": plain_result,
            "accuracy_gap_points": round(100 * (plain_result["test_accuracy"] - invertible_result["test_accuracy"]), 2),
        },
    }
    if not args.skip_glow:
        result["density"] = {
            "glow_inv_conv1x1_levels2": train_density(lambda: glow("inv_conv1x1", 2, args), args),
            "glow_inv_conv1x1_levels1": train_density(lambda: glow("inv_conv1x1", 1, args), args),
            "glow_periodic_conv_levels1": train_density(lambda: glow("periodic_conv", 1, args), args),
            "glow_periodic_conv_levels1_rotation_init": train_density(
                lambda: glow("periodic_conv", 1, args), args, rotate=True),
            "convolutional_flow_steps_levels1": train_density(lambda: convolutional_flow(args, True), args),
            "convolutional_flow_steps_no_s_log_levels1": train_density(
                lambda: convolutional_flow(args, False), args),
        }
    result["wall_seconds"] = round(time.perf_counter() - started, 2)
    result["config"] = vars(args)
    result["environment"] = {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpu_count": os.cpu_count(),
    }
    return result


def main(argv=None) -> int:
    print(json.dumps(run(parse_args(argv)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
