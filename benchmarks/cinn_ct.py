"""Benchmark: ConditionalGlow posteriors for sparse-view / limited-angle CT of random-ellipse phantoms.

Phantoms ``u`` in ``[0, 1]`` (`tfinv.inverse_problems.random_ellipses`, ``--size`` square, zero
outside the inscribed circle) are observed as sinograms ``y = R u + sigma * eps``
(`tfinv.inverse_problems.Tomography`: scikit-image's Radon transform at ``--angles`` views over
``--arc`` degrees, ``circle=True``). The flow models the 256-level quantised phantom,
``x = round(255 u) + U[0, 1)`` (``ConditionalGlow(num_levels=256)``), given ``y``; its
conditioning network starts from the filtered back-projection of ``y`` (a fixed layer holding
scikit-image's ``iradon``, ramp filter) followed by three convolutions. Prints one JSON object:

* ``test`` and ``shepp_logan``: PSNR and SSIM (range 1) of the posterior mean of ``--samples``
  samples (mapped back as ``(x - 0.5) / 255``, clipped), of the FBP (clipped), and of a learned
  post-processing CNN (FBP -> 4 convolutions, at most the cINN's parameter count or
  ``--cnn-max-width`` channels, MSE, same pairs and epochs); the mean posterior std;
* ``calibration``: coverage of the central q-intervals (q = 0.1..0.9) of the test ``x``
  (fixed dequantisation noise) and its mean error against q;
* ``sampling``: draws whose inverse pass overflowed (a non-finite pixel; redrawn with new seeds,
  up to 30 times) out of all draws, and how many were left non-finite;
* ``test_bits_per_dim_conditional``; ``png`` (rows: 2 test phantoms and Shepp-Logan; columns:
  phantom, sinogram, FBP, CNN, posterior mean, posterior std, 3 samples); ``calibration_png``.

Run: ``python benchmarks/cinn_ct.py [--size 64] [--angles 30] [--arc 180] [--noise-std 0.5]
[--epochs 10]``. Needs the ``inverse`` extra (scikit-image) and matplotlib (``benchmarks``).
Not here: Poisson (photon-count) noise; only Gaussian noise on the sinogram.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from skimage.metrics import structural_similarity  # noqa: E402

from tfinv import inverse_problems as ip  # noqa: E402
from tfinv.files import write_bytes_atomic  # noqa: E402
from tfinv.models import ConditionalGlow  # noqa: E402

from _common import log, save_calibration_plot, stdout_to_stderr, trainable_parameters  # noqa: E402

LEVELS = 256


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--angles", type=int, default=30)
    parser.add_argument("--arc", type=float, default=180.0)
    parser.add_argument("--noise-std", type=float, default=0.5)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--steps-per-level", type=int, default=4)
    parser.add_argument("--hidden-channels", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--cnn-max-width", type=int, default=None,
                        help="cap the post-processing CNN's width (its matched width at full resolution can cost far "
                        "more compute than the cINN); the JSON reports both parameter counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--png", default="cinn_ct.png")
    parser.add_argument("--calibration-png", default="cinn_ct_calibration.png")
    return parser.parse_args(argv)


def ssim(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Mean SSIM (scikit-image, range 1) over the images ``(N, H, W, 1)``."""
    return float(np.mean([structural_similarity(e[..., 0], t[..., 0], data_range=1.0)
                          for e, t in zip(np.asarray(estimate, np.float64), np.asarray(truth, np.float64))]))


def scores(estimate: np.ndarray, truth: np.ndarray) -> dict:
    return {"psnr": ip.psnr(estimate, truth, 1.0), "ssim": ssim(estimate, truth)}


def to_unit(x: np.ndarray) -> np.ndarray:
    return np.clip((x - 0.5) / (LEVELS - 1), 0.0, 1.0)


def finite_posterior_samples(model, y: np.ndarray, k: int, seed: int, rounds: int = 30) -> tuple[np.ndarray, dict]:
    """``k`` posterior samples per observation ``(k, N, H, W, 1)``; a draw whose inverse pass
    overflowed (any non-finite pixel) is redrawn with a new seed, up to ``rounds`` times. Returns
    the samples and the counts of non-finite draws (first pass) and of those left after redrawing."""
    samples = np.concatenate([model.posterior_samples(y[i:i + 25], k=k, seed=seed + i) for i in range(0, len(y), 25)],
                             axis=1)
    bad = ~np.all(np.isfinite(samples.reshape(k, len(y), -1)), axis=2)
    first = int(bad.sum())
    for r in range(rounds):
        if not bad.any():
            break
        draws, observations = np.nonzero(bad)
        fresh = np.asarray(model.sample(len(observations), temperature=1.0, seed=seed + 1000 * (r + 1),
                                        context=y[observations]))
        samples[draws, observations] = fresh
        bad = ~np.all(np.isfinite(samples.reshape(k, len(y), -1)), axis=2)
    return samples, {"nonfinite_draws_first_pass": first, "draws": int(k * len(y)),
                     "nonfinite_draws_left": int(bad.sum())}


def save_figure(path: str, rows: list[dict], titles: list[str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(rows), len(titles), figsize=(1.6 * len(titles), 1.7 * len(rows)), dpi=100)
    for r, row in enumerate(rows):
        for c, title in enumerate(titles):
            image = row[title]
            axis = axes[r, c]
            axis.imshow(image, cmap="gray", vmin=0.0 if title != "sinogram" else None,
                        vmax=1.0 if title not in ("sinogram", "posterior std") else None,
                        aspect="auto" if title == "sinogram" else "equal")
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title(title, fontsize=8)
        axes[r, 0].set_ylabel(row["name"], fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    write_bytes_atomic(path, buffer.getvalue())
    return os.path.abspath(path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    shape = (args.size, args.size, 1)
    op = ip.Tomography(args.noise_std, angles=args.angles, arc=args.arc, circle=True)
    start = time.perf_counter()
    op.matrices(shape)
    matrix_seconds = time.perf_counter() - start
    u_train = ip.random_ellipses(args.train, args.size, seed=args.seed)
    u_test = ip.random_ellipses(args.test, args.size, seed=args.seed + 1)
    u_sl = ip.shepp_logan(args.size)
    y_train, y_test, y_sl = op(u_train, seed=args.seed + 2), op(u_test, seed=args.seed + 3), op(u_sl, seed=args.seed + 4)
    counts_train = np.round(u_train * (LEVELS - 1)).astype(np.float32)
    rng = np.random.default_rng(args.seed + 5)
    x_test = (np.round(u_test * (LEVELS - 1)) + rng.uniform(size=u_test.shape)).astype(np.float32)

    def dequantize(c, y):
        return c + tf.random.uniform(tf.shape(c)), y

    data = (tf.data.Dataset.from_tensor_slices((counts_train, y_train)).shuffle(len(counts_train), seed=args.seed)
            .batch(args.batch_size).map(dequantize))
    model = ConditionalGlow(shape, observation_shape=op.observation_shape(shape),
                            conditioning_network=op.conditioning_network(shape, features=32,
                                                                         hidden=args.hidden_channels),
                            levels=args.levels, steps_per_level=args.steps_per_level,
                            hidden_channels=args.hidden_channels, num_levels=LEVELS, seed=args.seed)
    model.initialize(counts_train[:256] + 0.5, y_train[:256])
    model.compile(optimizer=keras.optimizers.Adam(args.lr))
    start = time.perf_counter()
    history = model.fit(data, epochs=args.epochs, verbose=0)
    train_seconds = time.perf_counter() - start
    log(f"ct: cINN {args.epochs} epochs in {train_seconds:.0f} s, loss {history.history['loss'][-1]:.3f}")

    regressor = ip.matched_cnn_regressor(op.observation_shape(shape), shape, trainable_parameters(model),
                                         preprocessing=op.fbp_layer(shape))
    if args.cnn_max_width is not None and regressor.get_layer("conv_0").filters > args.cnn_max_width:
        regressor = ip.cnn_regressor(op.observation_shape(shape), shape, args.cnn_max_width,
                                     preprocessing=op.fbp_layer(shape))
    regressor.compile(optimizer=keras.optimizers.Adam(args.lr), loss="mse")
    start = time.perf_counter()
    regressor.fit(y_train, u_train, batch_size=args.batch_size, epochs=args.epochs, shuffle=True, verbose=0)
    regressor_seconds = time.perf_counter() - start
    log(f"ct: CNN post-processing {args.epochs} epochs in {regressor_seconds:.0f} s")

    bits = float(np.mean(model.bits_per_dim(x_test, y_test)))
    result = {"benchmark": "cinn_ct", "config": vars(args), "observation_shape": list(op.observation_shape(shape)),
              "matrix_seconds": matrix_seconds, "train_seconds": train_seconds,
              "cnn_train_seconds": regressor_seconds, "final_train_loss": float(history.history["loss"][-1]),
              "cinn_parameters": int(trainable_parameters(model)), "cnn_parameters": int(trainable_parameters(regressor)),
              "cnn_width": int(regressor.get_layer("conv_0").filters),
              "test_bits_per_dim_conditional": bits}
    pictures = {}
    for name, u, y in (("test", u_test, y_test), ("shepp_logan", u_sl, y_sl)):
        samples, finite = finite_posterior_samples(model, y, args.samples, args.seed + 6)
        unit = to_unit(samples)
        mean, std = ip.posterior_mean(unit), ip.posterior_std(unit)
        fbp = np.clip(op.fbp(y, shape), 0.0, 1.0)
        cnn = np.clip(regressor.predict(y, verbose=0), 0.0, 1.0)
        result[name] = {"posterior_mean": scores(mean, u), "fbp": scores(fbp, u), "cnn_post_processing": scores(cnn, u),
                        "single_sample": scores(unit[0], u), "mean_posterior_std": float(std.mean()),
                        "sampling": finite}
        if name == "test":
            result["calibration"] = ip.calibration(samples, x_test)
        pictures[name] = (u, y, fbp, cnn, mean, std, unit)
    rows = []
    for name, index in (("test", 0), ("test", 1), ("shepp_logan", 0)):
        u, y, fbp, cnn, mean, std, unit = pictures[name]
        row = {"name": f"{name} {index}" if name == "test" else "Shepp-Logan", "phantom": u[index, ..., 0],
               "sinogram": y[index, ..., 0], "FBP": fbp[index, ..., 0], "CNN": cnn[index, ..., 0],
               "posterior mean": mean[index, ..., 0], "posterior std": std[index, ..., 0]}
        row.update({f"sample {j + 1}": unit[j, index, ..., 0] for j in range(3)})
        rows.append(row)
    titles = ["phantom", "sinogram", "FBP", "CNN", "posterior mean", "posterior std", "sample 1", "sample 2",
              "sample 3"]
    result["png"] = save_figure(args.png, rows, titles)
    result["calibration_png"] = save_calibration_plot(
        {f"cINN, {args.angles} angles / {args.arc:g} deg, sigma {args.noise_std:g}": result["calibration"]},
        args.calibration_png, title="CT: credible-interval calibration (held-out phantoms)")
    return result


if __name__ == "__main__":
    with stdout_to_stderr() as stdout:
        print(json.dumps(main(), indent=2), file=stdout)
