"""Benchmark: ConditionalGlow posteriors for super-resolution, inpainting or deblurring of the digits.

The clean digit ``u = counts / 16`` (in ``[0, 1]``) is observed through the task's operator
(`tfinv.inverse_problems`), ``y = A(u) + noise``; the flow models the dequantised counts
``x = counts + U[0, 1)`` (``ConditionalGlow(num_levels=17)``) given ``y``. Prints one JSON object:

* ``psnr_posterior_mean``: PSNR (range 1) of the posterior mean of ``--samples`` samples, mapped
  back to ``[0, 1]`` as ``(x - 0.5) / 16`` and clipped, against ``u`` over the test split;
  ``psnr_observation_baseline``: the same for the naive estimate from ``y`` alone (nearest
  upsampling / zero-filled / blurred ``y``);
* ``calibration``: coverage of the central q-intervals (q = 0.1..0.9) of the test ``x`` (fixed
  dequantisation noise) and its mean error against q;
* ``test_bits_per_dim_conditional``: mean ``-log p(x | y) / (D ln 2)`` on the test split;
* ``psnr_cnn_regressor``: the same for a plain CNN point estimate ``y -> u``
  (`tfinv.inverse_problems.matched_cnn_regressor`: 4 convolutions, the widest with at most the
  cINN's parameter count) trained with MSE on the same pairs for the same epochs;
* ``png``: rows y, truth, 4 posterior samples, posterior mean, CNN estimate, posterior std (std
  scaled to its max);
* ``calibration_png``: nominal vs empirical coverage of the central credible intervals.

Run: ``python benchmarks/cinn_digits.py --task superres|inpaint|deblur [--epochs 20] [--png PATH]
[--calibration-png PATH]`` (matplotlib, from the ``benchmarks`` extra, draws the calibration plot).
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

from tfinv import inverse_problems as ip  # noqa: E402
from tfinv.data.digits import DIGITS_NUM_LEVELS, digits_arrays  # noqa: E402
from tfinv.data.image_grid import save_image_grid  # noqa: E402
from tfinv.models import ConditionalGlow  # noqa: E402

from _common import add_glow_training_arguments, log, save_calibration_plot, stdout_to_stderr, trainable_parameters  # noqa: E402

TASKS = ("superres", "inpaint", "deblur")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=TASKS, default="superres")
    parser.add_argument("--noise-std", type=float, default=0.05)
    add_glow_training_arguments(parser, epochs=20)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--png", default="cinn_digits.png")
    parser.add_argument("--calibration-png", default="cinn_digits_calibration.png")
    return parser.parse_args(argv)


def operator(task: str, noise_std: float):
    if task == "superres":
        return ip.SuperResolution(noise_std)
    if task == "inpaint":
        return ip.Inpainting(noise_std, hole=4)
    return ip.Deblurring(noise_std, blur_std=1.0, kernel_size=5)


def naive_estimate(task: str, y: np.ndarray) -> np.ndarray:
    """``u`` guessed from ``y`` alone: nearest upsampling, the zero-filled image, the blurred image."""
    if task == "superres":
        return np.repeat(np.repeat(y, 2, axis=1), 2, axis=2)
    if task == "inpaint":
        return y[..., :1]
    return y


def to_unit(x: np.ndarray) -> np.ndarray:
    return np.clip((x - 0.5) / (DIGITS_NUM_LEVELS - 1), 0.0, 1.0)


def main(argv=None) -> dict:
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    op = operator(args.task, args.noise_std)
    train_counts, _ = digits_arrays("train", with_labels=False)
    test_counts, _ = digits_arrays("test", with_labels=False)
    scale = DIGITS_NUM_LEVELS - 1
    y_train = op(train_counts.astype(np.float32) / scale, seed=args.seed)
    y_test = op(test_counts.astype(np.float32) / scale, seed=args.seed + 1)
    rng = np.random.default_rng(args.seed + 2)
    x_test = (test_counts + rng.uniform(size=test_counts.shape)).astype(np.float32)
    counts = train_counts.astype(np.float32)

    def dequantize(c, y):
        return c + tf.random.uniform(tf.shape(c)), y

    data = (tf.data.Dataset.from_tensor_slices((counts, y_train)).shuffle(len(counts), seed=args.seed)
            .batch(args.batch_size).map(dequantize))
    model = ConditionalGlow((8, 8, 1), observation_shape=y_train.shape[1:], levels=args.levels,
                            steps_per_level=args.steps_per_level, hidden_channels=args.hidden_channels,
                            num_levels=DIGITS_NUM_LEVELS, seed=args.seed)
    model.initialize(counts[:256] + 0.5, y_train[:256])
    model.compile(optimizer=keras.optimizers.Adam(args.lr))
    start = time.perf_counter()
    history = model.fit(data, epochs=args.epochs, verbose=0)
    train_seconds = time.perf_counter() - start
    log(f"{args.task}: {args.epochs} epochs in {train_seconds:.0f} s, loss {history.history['loss'][-1]:.3f}")

    # The CNN regressor: same pairs (clean u in [0, 1] from y), same epochs, MSE, at most the cINN's size.
    regressor = ip.matched_cnn_regressor(y_train.shape[1:], (8, 8, 1), trainable_parameters(model))
    regressor.compile(optimizer=keras.optimizers.Adam(args.lr), loss="mse")
    start = time.perf_counter()
    regressor.fit(y_train, train_counts.astype(np.float32) / scale, batch_size=args.batch_size, epochs=args.epochs,
                  shuffle=True, verbose=0)
    regressor_seconds = time.perf_counter() - start
    cnn_estimate = np.clip(regressor.predict(y_test, verbose=0), 0.0, 1.0)

    bits = float(np.mean(model.bits_per_dim(x_test, y_test)))
    samples = model.posterior_samples(y_test, k=args.samples, seed=args.seed + 3)  # (K, N, 8, 8, 1)
    truth = test_counts.astype(np.float64) / scale
    mean = ip.posterior_mean(to_unit(samples))
    std = ip.posterior_std(to_unit(samples))
    result = {
        "benchmark": "cinn_digits",
        "task": args.task,
        "config": vars(args),
        "train_seconds": train_seconds,
        "final_train_loss": float(history.history["loss"][-1]),
        "test_bits_per_dim_conditional": bits,
        "psnr_posterior_mean": ip.psnr(mean, truth, 1.0),
        "psnr_single_sample": ip.psnr(to_unit(samples[0]), truth, 1.0),
        "psnr_cnn_regressor": ip.psnr(cnn_estimate, truth, 1.0),
        "psnr_observation_baseline": ip.psnr(np.clip(naive_estimate(args.task, y_test), 0, 1), truth, 1.0),
        "cinn_parameters": int(trainable_parameters(model)),
        "cnn_regressor_parameters": int(trainable_parameters(regressor)),
        "cnn_regressor_width": int(regressor.get_layer("conv_0").filters),
        "cnn_regressor_train_seconds": regressor_seconds,
        "mean_posterior_std": float(std.mean()),
        "calibration": ip.calibration(samples, x_test),
        "png": os.path.abspath(args.png),
    }
    result["calibration_png"] = save_calibration_plot(
        {f"cINN, {args.task}": result["calibration"]}, args.calibration_png,
        title=f"digits {args.task}: credible-interval calibration")
    show = 10
    rows = [naive_estimate(args.task, y_test[:show]), truth[:show]]
    rows += [to_unit(samples[j, :show]) for j in range(4)]
    rows += [mean[:show], cnn_estimate[:show], std[:show] / max(float(std[:show].max()), 1e-12)]
    save_image_grid(np.concatenate(rows).astype(np.float32), args.png, num_levels=1, columns=show)
    return result


if __name__ == "__main__":
    with stdout_to_stderr() as stdout:
        print(json.dumps(main(), indent=2), file=stdout)
