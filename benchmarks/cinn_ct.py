"""Benchmark: ConditionalGlow posteriors for sparse-view / low-dose CT of random-ellipse phantoms,
over a sweep of (number of angles) x (noise), against FBP and a learned U-Net post-processing.

Phantoms ``u`` in ``[0, 1]`` (`tfinv.inverse_problems.random_ellipses`, ``--size`` square, zero
outside the inscribed circle) are observed as sinograms (`tfinv.inverse_problems.Tomography`,
scikit-image's Radon transform, ``circle=True``) at every number of views in ``--angles`` (over
180 degrees) and every noise model in ``--noise``: ``gaussian:SIGMA`` (``y = R u + SIGMA eps``)
or ``poisson:I0`` (low dose: ``counts ~ Poisson(I0 exp(-mu R u))``, ``y = -log(counts / I0) /
mu``, ``mu = 2 / size``). For each setting, on the same pairs and epochs:

* the cINN: ``ConditionalGlow(num_levels=256)`` models the quantised phantom
  ``x = round(255 u) + U[0, 1)`` given ``y``; its conditioning network is the filtered
  back-projection (a fixed layer holding scikit-image's ``iradon``, ramp filter) then three
  convolutions, and every level's couplings see all of its full-resolution features through
  learned patch maps (``context_downsampling="patch"``; ``--context-downsampling bilinear`` is
  the earlier design) with soft-clamped affine couplings (``--coupling``);
* FBP (clipped to ``[0, 1]``);
* a U-Net post-processing network (FBP -> `tfinv.inverse_problems.unet_regressor`, learned
  residual), the widest within the cINN's trainable-parameter count, MSE.

Prints one JSON object: per setting, on held-out phantoms (``test``) and on Shepp-Logan, PSNR and
SSIM (range 1) of the posterior mean of ``--samples`` temperature-1 draws (``(x - 0.5) / 255``,
clipped), of one draw, of FBP and of the U-Net; the mean posterior std; the calibration (coverage
of the central q-intervals of the test ``x``, q = 0.1..0.9) and its mean error; non-finite
draws (counted, not redrawn: their NaN pixels count as 0 and infinities as 0 or 1 in the
statistics); conditional bits/dim; training times; with ``--extra-temperatures``, the test posterior
mean and calibration of draws at those temperatures too. ``budget`` states the
compute (phantoms, epochs, steps, wall time, load). Writes one picture per setting (rows: two
test phantoms and Shepp-Logan; columns: phantom, sinogram, FBP, U-Net, posterior mean, posterior
std, 3 samples) and a summary plot over the sweep (PSNR / SSIM / calibration error per setting).

Run: ``python benchmarks/cinn_ct.py [--size 64] [--angles 8,32] [--noise gaussian:0.3,poisson:1000]
[--train 800] [--epochs 6] [--out-prefix benchmarks/figures/cinn_ct_64px]``. Needs the
``inverse`` extra (scikit-image) and matplotlib (``benchmarks``).
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
    parser.add_argument("--angles", default="8,32", help="comma-separated numbers of views (over 180 degrees)")
    parser.add_argument("--noise", default="gaussian:0.3,poisson:1000",
                        help="comma-separated noise models: gaussian:SIGMA or poisson:I0")
    parser.add_argument("--train", type=int, default=800)
    parser.add_argument("--test", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--unet-epochs", type=int, default=None, help="default: --epochs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--steps-per-level", type=int, default=4)
    parser.add_argument("--hidden-channels", type=int, default=48)
    parser.add_argument("--condition-features", type=int, default=16)
    parser.add_argument("--condition-hidden", type=int, default=32)
    parser.add_argument("--coupling", default="soft_clamp", choices=("soft_clamp", "affine"))
    parser.add_argument("--context-downsampling", default="patch", choices=("patch", "bilinear"))
    parser.add_argument("--unet-depth", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--extra-temperatures", default="",
                        help="comma-separated temperatures < 1 at which the test posterior mean and calibration are "
                        "also reported (e.g. 0.5,0.7)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-prefix", default="cinn_ct", help="PNG paths: PREFIX_<setting>.png, PREFIX_sweep.png, "
                        "PREFIX_calibration.png")
    return parser.parse_args(argv)


def parse_noise(spec: str) -> tuple[str, float]:
    kind, _, value = spec.partition(":")
    if kind not in ("gaussian", "poisson") or not value:
        raise SystemExit(f"--noise entries are gaussian:SIGMA or poisson:I0, got {spec!r}")
    return kind, float(value)


def operator(kind: str, value: float, angles: int) -> ip.Tomography:
    if kind == "gaussian":
        return ip.Tomography(noise_std=value, angles=angles, circle=True)
    return ip.Tomography(photons=value, angles=angles, circle=True)


def ssim(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Mean SSIM (scikit-image, range 1) over the images ``(N, H, W, 1)``."""
    return float(np.mean([structural_similarity(e[..., 0], t[..., 0], data_range=1.0)
                          for e, t in zip(np.asarray(estimate, np.float64), np.asarray(truth, np.float64))]))


def scores(estimate: np.ndarray, truth: np.ndarray) -> dict:
    return {"psnr": ip.psnr(estimate, truth, 1.0), "ssim": ssim(estimate, truth)}


def to_unit(x: np.ndarray) -> np.ndarray:
    return np.clip((x - 0.5) / (LEVELS - 1), 0.0, 1.0)


def posterior_samples(model, y: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, dict]:
    """``k`` temperature-1 posterior samples per observation ``(k, N, H, W, 1)`` and the count of
    draws with a non-finite pixel (not redrawn: the soft-clamped couplings should give none)."""
    samples = np.concatenate([model.posterior_samples(y[i:i + 16], k=k, seed=seed + i) for i in range(0, len(y), 16)],
                             axis=1)
    bad = ~np.all(np.isfinite(samples.reshape(k, len(y), -1)), axis=2)
    return samples, {"nonfinite_draws": int(bad.sum()), "draws": int(k * len(y))}


def save_grid(path: str, rows: list[dict], titles: list[str], suptitle: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(rows), len(titles), figsize=(1.6 * len(titles), 1.75 * len(rows) + 0.4), dpi=100)
    for r, row in enumerate(rows):
        for c, title in enumerate(titles):
            axis = axes[r, c]
            axis.imshow(row[title], cmap="gray", vmin=0.0 if title != "sinogram" else None,
                        vmax=1.0 if title not in ("sinogram", "posterior std") else None,
                        aspect="auto" if title == "sinogram" else "equal")
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title(title, fontsize=8)
            if title in row.get("psnr", {}):
                axis.set_xlabel(f"{row['psnr'][title]:.1f} dB", fontsize=7)
        axes[r, 0].set_ylabel(row["name"], fontsize=8)
    figure.suptitle(suptitle, fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def _save(figure, path: str) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_bytes_atomic(path, buffer.getvalue())
    return os.path.abspath(path)


def save_sweep_plot(path: str, settings: list[dict]) -> str:
    """PSNR and SSIM (test phantoms and Shepp-Logan) of FBP, U-Net and the posterior mean, and the
    calibration error, per (angles, noise) setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{s['angles']} angles\n{s['noise']['kind']} {s['noise']['value']:g}" for s in settings]
    methods = [("fbp", "FBP"), ("unet_post_processing", "FBP + U-Net"), ("posterior_mean", "cINN posterior mean"),
               ("single_sample", "cINN one sample")]
    figure, axes = plt.subplots(1, 5, figsize=(19, 3.8), dpi=100)
    x = np.arange(len(settings))
    width = 0.8 / len(methods)
    for a, (split, metric) in enumerate((("test", "psnr"), ("test", "ssim"), ("shepp_logan", "psnr"),
                                         ("shepp_logan", "ssim"))):
        for m, (key, name) in enumerate(methods):
            axes[a].bar(x + (m - (len(methods) - 1) / 2) * width, [s[split][key][metric] for s in settings], width,
                        label=name)
        axes[a].set_title(f"{'held-out phantoms' if split == 'test' else 'Shepp-Logan'}: {metric.upper()}",
                          fontsize=9)
        axes[a].set_xticks(x, labels, fontsize=7)
        axes[a].grid(axis="y", alpha=0.3)
        low = min(s[split][k][metric] for s in settings for k, _ in methods)
        axes[a].set_ylim(max(0.0, low - (3.0 if metric == "psnr" else 0.1)), None)
    axes[0].legend(fontsize=7, loc="lower right")
    axes[4].bar(x, [s["calibration"]["error"] for s in settings], 0.5, color="C2")
    axes[4].set_title("cINN calibration error (mean |coverage - q|)", fontsize=9)
    axes[4].set_xticks(x, labels, fontsize=7)
    axes[4].grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def run_setting(args, kind: str, value: float, angles: int, phantoms: dict) -> tuple[dict, list[dict]]:
    shape = (args.size, args.size, 1)
    op = operator(kind, value, angles)
    start = time.perf_counter()
    op.matrices(shape)
    matrix_seconds = time.perf_counter() - start
    u_train, u_test, u_sl = phantoms["train"], phantoms["test"], phantoms["shepp_logan"]
    seed = args.seed + 10 * angles + (0 if kind == "gaussian" else 5)
    y_train, y_test, y_sl = op(u_train, seed=seed + 2), op(u_test, seed=seed + 3), op(u_sl, seed=seed + 4)
    counts_train = np.round(u_train * (LEVELS - 1)).astype(np.float32)
    rng = np.random.default_rng(seed + 5)
    x_test = (np.round(u_test * (LEVELS - 1)) + rng.uniform(size=u_test.shape)).astype(np.float32)

    def dequantize(c, y):
        return c + tf.random.uniform(tf.shape(c)), y

    keras.utils.set_random_seed(seed)
    data = (tf.data.Dataset.from_tensor_slices((counts_train, y_train)).shuffle(len(counts_train), seed=seed)
            .batch(args.batch_size).map(dequantize))
    model = ConditionalGlow(shape, observation_shape=op.observation_shape(shape),
                            conditioning_network=op.conditioning_network(shape, features=args.condition_features,
                                                                         hidden=args.condition_hidden),
                            levels=args.levels, steps_per_level=args.steps_per_level,
                            hidden_channels=args.hidden_channels, num_levels=LEVELS, seed=args.seed,
                            coupling=args.coupling, context_downsampling=args.context_downsampling)
    model.initialize(counts_train[:128] + 0.5, y_train[:128])
    model.compile(optimizer=keras.optimizers.Adam(args.lr))
    start = time.perf_counter()
    history = model.fit(data, epochs=args.epochs, verbose=0)
    train_seconds = time.perf_counter() - start
    label = f"{angles} angles, {kind} {value:g}"
    log(f"ct [{label}]: cINN {args.epochs} epochs in {train_seconds:.0f} s, loss {history.history['loss'][-1]:.3f}")

    unet = ip.matched_unet_regressor(op.observation_shape(shape), shape, trainable_parameters(model),
                                     depth=args.unet_depth, preprocessing=op.fbp_layer(shape))
    unet.compile(optimizer=keras.optimizers.Adam(args.lr), loss="mse")
    unet_epochs = args.unet_epochs or args.epochs
    start = time.perf_counter()
    unet.fit(y_train, u_train, batch_size=args.batch_size, epochs=unet_epochs, shuffle=True, verbose=0)
    unet_seconds = time.perf_counter() - start
    log(f"ct [{label}]: U-Net {unet_epochs} epochs in {unet_seconds:.0f} s")

    start = time.perf_counter()
    result = {"label": label, "angles": angles, "noise": {"kind": kind, "value": value},
              "observation_shape": list(op.observation_shape(shape)), "matrix_seconds": matrix_seconds,
              "train_seconds": train_seconds, "unet_train_seconds": unet_seconds, "unet_epochs": unet_epochs,
              "final_train_loss": float(history.history["loss"][-1]),
              "loss_per_epoch": [float(v) for v in history.history["loss"]],
              "cinn_parameters": int(trainable_parameters(model)), "unet_parameters": int(trainable_parameters(unet)),
              "unet_width": int(unet.get_layer("down_0_a").filters),
              "test_bits_per_dim_conditional": float(np.mean(model.bits_per_dim(x_test, y_test))),
              "sinogram_snr_db": float(10 * np.log10(np.mean(op.apply(u_test) ** 2)
                                                     / np.mean((y_test - op.apply(u_test)) ** 2)))}
    pictures = {}
    for name, u, y in (("test", u_test, y_test), ("shepp_logan", u_sl, y_sl)):
        samples, finite = posterior_samples(model, y, args.samples, seed + 6)
        unit = to_unit(np.nan_to_num(samples, nan=0.0, posinf=LEVELS, neginf=0.0))
        mean, std = ip.posterior_mean(unit), ip.posterior_std(unit)
        fbp = np.clip(op.fbp(y, shape), 0.0, 1.0)
        unet_estimate = np.clip(unet.predict(y, verbose=0), 0.0, 1.0)
        result[name] = {"posterior_mean": scores(mean, u), "fbp": scores(fbp, u),
                        "unet_post_processing": scores(unet_estimate, u), "single_sample": scores(unit[0], u),
                        "mean_posterior_std": float(std.mean()), "sampling": finite}
        if name == "test":
            result["calibration"] = ip.calibration(samples, x_test)
        pictures[name] = (u, y, fbp, unet_estimate, mean, std, unit)
    for temperature in [float(t) for t in args.extra_temperatures.split(",") if t]:
        draws = np.concatenate([model.posterior_samples(y_test[i:i + 16], k=args.samples, temperature=temperature,
                                                        seed=seed + 7 + i) for i in range(0, len(y_test), 16)], axis=1)
        unit = to_unit(np.nan_to_num(draws, nan=0.0, posinf=LEVELS, neginf=0.0))
        result.setdefault("test_at_temperature", {})[f"{temperature:g}"] = {
            "posterior_mean": scores(ip.posterior_mean(unit), u_test),
            "calibration_error": ip.calibration(draws, x_test)["error"],
            "mean_posterior_std": float(ip.posterior_std(unit).mean())}
    result["evaluation_seconds"] = time.perf_counter() - start
    rows = []
    for name, index in (("test", 0), ("test", 1), ("shepp_logan", 0)):
        u, y, fbp, unet_estimate, mean, std, unit = pictures[name]
        row = {"name": f"{name} {index}" if name == "test" else "Shepp-Logan", "phantom": u[index, ..., 0],
               "sinogram": y[index, ..., 0], "FBP": fbp[index, ..., 0], "U-Net": unet_estimate[index, ..., 0],
               "posterior mean": mean[index, ..., 0], "posterior std": std[index, ..., 0]}
        row.update({f"sample {j + 1}": unit[j, index, ..., 0] for j in range(3)})
        row["psnr"] = {title: ip.psnr(row[title], u[index, ..., 0], 1.0)
                       for title in ("FBP", "U-Net", "posterior mean", "sample 1", "sample 2", "sample 3")}
        rows.append(row)
    return result, rows


def main(argv=None) -> dict:
    args = parse_args(argv)
    started, load_start = time.perf_counter(), os.getloadavg()
    angle_list = [int(a) for a in args.angles.split(",")]
    noise_list = [parse_noise(s) for s in args.noise.split(",")]
    phantoms = {"train": ip.random_ellipses(args.train, args.size, seed=args.seed),
                "test": ip.random_ellipses(args.test, args.size, seed=args.seed + 1),
                "shepp_logan": ip.shepp_logan(args.size)}
    titles = ["phantom", "sinogram", "FBP", "U-Net", "posterior mean", "posterior std", "sample 1", "sample 2",
              "sample 3"]
    settings, curves = [], {}
    for angles in angle_list:
        for kind, value in noise_list:
            result, rows = run_setting(args, kind, value, angles, phantoms)
            tag = f"{angles}angles_{kind}{value:g}"
            result["png"] = save_grid(f"{args.out_prefix}_{tag}.png", rows, titles,
                                      f"CT {args.size}x{args.size}, {result['label']} (PSNR under each image)")
            curves[f"{result['label']}"] = result["calibration"]
            settings.append(result)
            log(f"ct [{result['label']}]: test PSNR FBP {result['test']['fbp']['psnr']:.2f}, "
                f"U-Net {result['test']['unet_post_processing']['psnr']:.2f}, "
                f"cINN mean {result['test']['posterior_mean']['psnr']:.2f}; "
                f"calibration error {result['calibration']['error']:.3f}")
    steps_per_epoch = -(-args.train // args.batch_size)
    result = {
        "benchmark": "cinn_ct", "config": vars(args),
        "budget": {"settings": len(settings), "train_phantoms": args.train, "test_phantoms": args.test,
                   "cinn_epochs": args.epochs, "cinn_steps_per_setting": args.epochs * steps_per_epoch,
                   "batch_size": args.batch_size, "wall_seconds": time.perf_counter() - started,
                   "cpu_cores": os.cpu_count(), "load_average_start": list(load_start),
                   "load_average_end": list(os.getloadavg()),
                   "note": "a deliberately small budget (2 shared cores): few epochs, a coarse sweep"},
        "settings": settings,
    }
    result["sweep_png"] = save_sweep_plot(f"{args.out_prefix}_sweep.png", settings)
    result["calibration_png"] = save_calibration_plot(curves, f"{args.out_prefix}_calibration.png",
                                                      title="CT: credible-interval calibration (held-out phantoms)")
    return result


if __name__ == "__main__":
    with stdout_to_stderr() as stdout:
        print(json.dumps(main(), indent=2), file=stdout)
