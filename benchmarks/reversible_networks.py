"""Benchmark: i-RevNet and RevNet classifiers (issue 18, item 7) on the digits, and their
training memory against depth.

Two parts (``--parts accuracy memory``):

* ``accuracy``: `tfinv.models.IRevNet` and `tfinv.models.RevNet` (defaults: two stages of
  ``--blocks`` blocks, 16 channels; pixels scaled by 1/16) trained with ``model.fit`` on the
  digits' train split (Adam 1e-3, batch 64, ``--epochs``); test accuracy, parameters, fit
  seconds, and for i-RevNet how exactly the input is rebuilt from the final features:
  ``max|reconstruct(features(x)) - x| / max|x|`` over the test split.
* ``memory``: for each network, depth ``d`` (``--depths``: blocks per stage, two stages) and
  both backprop modes (``memory_efficient=True``: activations rebuilt by the reversible backward
  pass; ``False``: stored by autodiff) a fresh subprocess builds the network on ``--image`` x
  ``--image`` images and runs ``train_on_batch`` steps; ``train_step_peak_mb`` is the step's
  memory measured as in ``benchmarks/revvit_memory.py`` (``VmHWM - VmRSS`` after tracing on
  batches of 1 and 2 and resetting the peak).

Run: ``python benchmarks/reversible_networks.py [--epochs 30] [--depths 2 8 32] [--out r.json]``.
Stdout is one JSON object; progress goes to stderr. Timings are for reading, never asserted.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from _common import log, write_json  # noqa: E402
from revvit_memory import _reset_peak, _status_kb  # noqa: E402

NETWORKS = ("irevnet", "revnet")
MEMORY_NETWORKS = NETWORKS + ("iunet",)
MODES = {"reversible": True, "ordinary": False}


def build(network: str, blocks: int, image_shape, memory_efficient: bool = True, channels: int = 16):
    import keras

    from tfinv.models import IRevNet, IUNet, RevNet

    if network == "iunet":
        # an iUNet with three levels of `blocks` couplings per side, then a linear classifier
        # head (memory only: the loss needs a scalar, the iUNet's output has the input's shape)
        unet = IUNet((blocks,) * 3, hidden_channels=channels, memory_efficient=memory_efficient)
        inputs = keras.Input(tuple(image_shape[:-1]) + (4,))
        return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(unet(inputs))))

    if network == "irevnet":
        return IRevNet(image_shape, blocks_per_stage=(blocks, blocks), channels=channels,
                       memory_efficient=memory_efficient, input_scale=1 / 16)
    return RevNet(image_shape, blocks_per_stage=(blocks, blocks), channels=channels,
                  memory_efficient=memory_efficient, input_scale=1 / 16)


def accuracy(args) -> list[dict]:
    import keras
    import tensorflow as tf

    from tfinv.data import digits_arrays

    x_train, y_train = digits_arrays("train")
    x_test, y_test = digits_arrays("test")
    x_train, x_test = x_train.astype("float32"), x_test.astype("float32")
    rows = []
    for network in NETWORKS:
        keras.utils.set_random_seed(args.seed)
        model = build(network, args.blocks, x_train.shape[1:])
        model.compile(keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        started = time.perf_counter()
        model.fit(x_train, y_train, batch_size=64, epochs=args.epochs, verbose=0)
        fit_seconds = time.perf_counter() - started
        _, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
        row = {"network": network, "blocks_per_stage": [args.blocks, args.blocks], "epochs": args.epochs,
               "test_accuracy": round(float(test_accuracy), 4), "parameters": int(model.count_params()),
               "fit_seconds": round(fit_seconds, 1)}
        if network == "irevnet":
            z = model.features(tf.constant(x_test))
            rebuilt = model.reconstruct(z).numpy()
            row["feature_shape"] = list(model.feature_shape)
            row["reconstruction_relative_max_error"] = float(np.abs(rebuilt - x_test).max() / np.abs(x_test).max())
        log(f"{network}: test accuracy {row['test_accuracy']} ({row['fit_seconds']} s)")
        rows.append(row)
    return rows


def worker(args) -> dict:
    import gc

    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = build(args.network, args.depth, (args.image, args.image, 1), MODES[args.mode])
    model.compile(keras.optimizers.SGD(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    channels = 4 if args.network == "iunet" else 1
    x = tf.constant(rng.standard_normal((args.batch, args.image, args.image, channels)).astype(np.float32))
    y = tf.constant(rng.integers(0, 10, args.batch))
    for n in (1, 2):
        model.train_on_batch(x[:n], y[:n])
    gc.collect()
    resident_kb = _status_kb("VmRSS")
    reset = _reset_peak()
    seconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        seconds.append(time.perf_counter() - start)
    peak = _status_kb("VmHWM") - resident_kb if reset else None
    return {"network": args.network, "depth": args.depth, "mode": args.mode,
            "train_step_peak_mb": None if peak is None else round(peak / 1024, 1),
            "seconds_per_step": round(float(np.median(seconds)), 3), "parameters": int(model.count_params())}


def memory(args) -> tuple[list[dict], dict]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    rows = []
    for network in args.networks:
        for depth in sorted(args.depths):
            for mode in MODES:
                out = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "--worker", "--network", network, "--depth",
                     str(depth), "--mode", mode, "--image", str(args.image), "--batch", str(args.batch),
                     "--steps", str(args.steps)], capture_output=True, text=True, env=env)
                if out.returncode != 0:
                    log(out.stderr[-3000:])
                    raise SystemExit(1)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                log(f"{network} depth {depth} {mode}: step peak {rows[-1]['train_step_peak_mb']} MB")
    low, high = min(args.depths), max(args.depths)

    def get(network, depth, mode):
        return next(r["train_step_peak_mb"] for r in rows
                    if r["network"] == network and r["depth"] == depth and r["mode"] == mode)

    summary = {
        network: {f"{mode}_growth_depth_{low}_to_{high}": round(get(network, high, mode) / get(network, low, mode), 2)
                  for mode in MODES}
        | {f"reversible_over_ordinary_at_depth_{high}": round(get(network, high, "reversible")
                                                              / get(network, high, "ordinary"), 3)}
        for network in args.networks
    }
    return rows, summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["accuracy", "memory"], choices=["accuracy", "memory"])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--blocks", type=int, default=2, help="blocks per stage of the accuracy runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 8, 32], help="blocks per stage")
    parser.add_argument("--image", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--networks", nargs="+", default=list(MEMORY_NETWORKS), choices=MEMORY_NETWORKS,
                        help="networks of the memory part (iunet: IUNet((d, d, d)) on 4-channel images)")
    parser.add_argument("--network", choices=MEMORY_NETWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--depth", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=sorted(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    report = {"benchmark": "reversible_networks", "platform": platform.platform()}
    if "accuracy" in args.parts:
        report["accuracy"] = {"budget": {"epochs": args.epochs, "batch_size": 64, "lr": 1e-3, "seed": args.seed},
                              "results": accuracy(args)}
    if "memory" in args.parts:
        rows, summary = memory(args)
        report["memory"] = {"config": {"image": [args.image, args.image, 1], "iunet_image_channels": 4,
                                       "batch": args.batch,
                                       "channels": 16, "depths_blocks_per_stage": sorted(args.depths),
                                       "steps": args.steps},
                            "measure": "train_step_peak_mb = VmHWM - VmRSS around the full-batch steps",
                            "results": rows, "summary": summary}
    write_json(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
