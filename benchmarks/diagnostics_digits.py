"""Benchmark: invertibility diagnostics of every digits model ``tfinv train`` builds.

For each model (``tfinv train --model`` choices, built by the CLI's own builders with the CLI's
defaults; Glow also with additive coupling, the setting Behrmann et al. contrast with affine), a
small training budget on the embedded digits with `tfinv.diagnostics.InvertibilityMonitor`
recording the bounds every epoch, then `tfinv.diagnostics.diagnose` on test images: the
bi-Lipschitz estimates of the whole map, every layer's condition number and log-det
contribution, and the exploding-inverse stress test.

Writes ``benchmarks/figures/diagnostics_digits.json`` (whole or not at all) and one summary PNG
per model (``diagnostics_digits_<name>.png``: log10 of each layer's largest condition number);
the full reports with a PNG per layer go to ``--reports`` (default a temporary folder). The JSON
is also printed to stdout.

Run: ``python benchmarks/diagnostics_digits.py [--epochs 3] [--examples 32] [--only glow]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from _common import log, stdout_to_stderr  # noqa: E402
from tfinv import cli, data, diagnostics, files, training  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIGURES = os.path.join(HERE, "figures")

#: name -> extra ``tfinv train`` options (the CLI's defaults otherwise).
MODELS = {
    "glow": ["--model", "glow"],
    "glow_additive": ["--model", "glow", "--coupling", "additive"],
    "mixerflow": ["--model", "mixerflow"],
    "revvit": ["--model", "revvit"],
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--examples", type=int, default=32, help="test images diagnosed")
    parser.add_argument("--monitor-examples", type=int, default=16, help="test images the callback checks")
    parser.add_argument("--iterations", type=int, default=20, help="power iterations of the final diagnosis")
    parser.add_argument("--scales", type=float, nargs="+", default=[2.0, 4.0, 10.0],
                        help="scales S of the stress test's scaled inputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(MODELS))
    parser.add_argument("--reports", default=None, help="folder for the full reports (default: temporary)")
    parser.add_argument("--out", default=os.path.join(FIGURES, "diagnostics_digits.json"))
    return parser.parse_args(argv)


def dequantize(images: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return images.astype(np.float32) + rng.uniform(0, 1, images.shape).astype(np.float32)


def layer_rows(report: dict) -> list[dict]:
    return [{
        "path": e["path"], "class": e["class"],
        "forward_lipschitz_max": e["forward_lipschitz"]["max"],
        "inverse_lipschitz_max": e["inverse_lipschitz"]["max"],
        "condition_number_max": e["condition_number"]["max"],
        "log_det_mean": e["log_det"]["mean"], "log_det_std": e["log_det"]["std"],
        "reconstruction_relative_max": e["reconstruction_error"]["relative_max"],
        "flags": e["flags"],
    } for e in report["layers"]]


def run_model(name: str, args: argparse.Namespace, splits, reports: str) -> dict:
    (train_images, train_labels), (test_images, test_labels) = splits
    options = cli.build_parser().parse_args(["train", *MODELS[name], "--out", "unused", "--seed", str(args.seed)])
    builder = cli.MODEL_BUILDERS[options.model]
    input_shape = tuple(train_images.shape[1:])
    import keras

    keras.utils.set_random_seed(args.seed)
    classify = builder.task == "classification"
    model = (builder.build(options, input_shape, data.DIGITS_NUM_LEVELS, num_classes=10) if classify
             else builder.build(options, input_shape, data.DIGITS_NUM_LEVELS))
    checked = dequantize(test_images[: args.monitor_examples], args.seed + 1)
    monitor = diagnostics.InvertibilityMonitor(checked, iterations=5, seed=args.seed)
    started = time.perf_counter()
    log(f"{name}: training {args.epochs} epoch(s)")
    if classify:
        result = training.fit_classifier(model, train_images, train_labels, epochs=args.epochs,
                                         batch_size=options.batch_size, learning_rate=options.lr, seed=args.seed,
                                         callbacks=[monitor], verbose=0)
        quality = {"test_accuracy": float(model.evaluate(
            data.dequantized_dataset(test_images, test_labels, batch_size=256, seed=args.seed, shuffle=False,
                                     fixed_noise=True, with_labels=True), return_dict=True, verbose=0)["accuracy"])}
    else:
        result = training.fit_flow(model, train_images, epochs=args.epochs, batch_size=options.batch_size,
                                   learning_rate=options.lr, seed=args.seed, callbacks=[monitor], verbose=0)
        quality = {"test_bits_per_dim": training.dataset_bits_per_dim(model, test_images, seed=args.seed)}
    fit_seconds = time.perf_counter() - started
    log(f"{name}: {quality}; diagnosing {args.examples} test images")
    x = dequantize(test_images[: args.examples], args.seed + 2)
    report = diagnostics.diagnose(model, x, iterations=args.iterations, seed=args.seed, scales=args.scales)
    report_dir = os.path.join(reports, name)
    diagnostics.write_report(report, report_dir)
    summary_png = os.path.join(FIGURES, f"diagnostics_digits_{name}.png")
    files.write_bytes_atomic(summary_png, tf.io.encode_png(diagnostics.output.summary_image(report)).numpy())
    log(f"{name}: Lip(f) {report['bi_lipschitz']['forward']['max']:.4g}, "
        f"Lip(f^-1) {report['bi_lipschitz']['inverse']['max']:.4g}, {len(report['flags'])} flag(s), "
        f"{report['seconds']:.1f} s")
    return {
        "cli_options": MODELS[name],
        "class": report["model"]["class"],
        "diagnosed_map": report["model"]["map"],
        "num_parameters": int(model.count_params()),
        "epochs": args.epochs,
        "fit_seconds": round(fit_seconds, 1),
        **quality,
        "monitor_per_epoch": monitor.records,
        "bi_lipschitz": report["bi_lipschitz"],
        "stress_test": report["stress_test"],
        "stress_test_behind_preprocessing": report.get("stress_test_behind_preprocessing"),
        "flags": report["flags"],
        "layers": layer_rows(report),
        "diagnose_seconds": report["seconds"],
        "summary_png": os.path.relpath(summary_png, HERE),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    reports = args.reports or tempfile.mkdtemp(prefix="diagnostics_digits_")
    train_images, train_labels = data.load_arrays("digits", "train", with_labels=True)
    test_images, test_labels = data.load_arrays("digits", "test", with_labels=True)
    splits = ((train_images, train_labels), (test_images, test_labels))
    names = args.only or list(MODELS)
    with stdout_to_stderr() as stdout:
        results = {name: run_model(name, args, splits, reports) for name in names}
        output = {
            "benchmark": "diagnostics_digits",
            "config": {k: v for k, v in vars(args).items() if k not in ("out",)},
            "reports_folder": reports,
            "machine": {"python": platform.python_version(), "tensorflow": tf.__version__,
                        "cpus": os.cpu_count(), "load_average": os.getloadavg()},
            "models": results,
        }
        text = json.dumps(diagnostics.output.json_ready(output), indent=2, allow_nan=False)
        with files.atomic_write(args.out) as f:
            f.write(text + "\n")
        stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
