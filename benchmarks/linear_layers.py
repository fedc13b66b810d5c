"""Benchmark: the channel/spatial-mixing linear layers -- speed of the layers, and bits/dim of Glow
variants built on them.

Part 1, speed. For ``InvConv1x1``, ``Woodbury``, ``MEWoodbury`` and ``ButterflyLayer`` (default
arguments: Woodbury ranks ``min(n, 8)``, a full butterfly; ``ButterflyLayer`` is its default
``implementation="auto"``, which multiplies by the dense ``C x C`` butterfly matrix at these
``C``, and ``ButterflyLayer-factors`` the ``O(C log C)`` factor-by-factor evaluation), at
``H x W`` in ``--sizes`` (default 16x16, 16x32, 32x32: H*W doubles twice), ``C`` in
``--channels`` (default 4, 16) and batch ``--batch`` (default 32), weights perturbed by
``perturb_weights(layer, 0.1)``:

* ``tf``: ``tf.function(forward_and_log_det | inverse_and_log_det)`` with a fixed input
  signature (graph mode, no XLA), called with a NumPy array, outputs read with ``.numpy()``;
* ``onnx``: onnxruntime on the proto of ``tfinv.export.onnx.prepare(layer, direction,
  test_input=...)`` (which also checks parity), in a session of
  ``tfinv.export.onnx.inference_session``.

Both runners are warmed up, then timed alternately in ``--rounds`` blocks (so load bursts from
other processes hit both); the median over all timed calls is reported, in milliseconds.
``scaling`` gives, per layer, direction, runner and C, the ratio of medians each time H*W doubles
(``~2`` for a cost linear in the input size) and the exponent ``log(t_last / t_first) /
log(HW_last / HW_first)`` (1 = linear).

Part 2, quality. ``tfinv train`` (`tfinv.cli.main`) of the default digits Glow with each
``--linear`` in ``--linears`` (same budget: ``--epochs`` (10), batch 64, lr 1e-3, seeds
``--seeds`` (0 and 1));
reported: test and train bits/dim of the fixed-noise splits, fit seconds, parameter count.

Run: ``python benchmarks/linear_layers.py [--quick] [--out results.json]``. Stdout is one JSON
object; progress goes to stderr. Timings are for reading, never asserted in tests.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import log, stdout_to_stderr, timed, write_json  # noqa: E402

LAYERS = ("InvConv1x1", "Woodbury", "MEWoodbury", "ButterflyLayer", "ButterflyLayer-factors")
DIRECTIONS = ("forward", "inverse")
RUNNERS = ("tf", "onnx")


def make_layer(name: str, seed: int = 0):
    from tfinv import layers
    from tfinv.layers.butterfly_layer import ButterflyLayer
    from tfinv.layers.me_woodbury import MEWoodbury
    from tfinv.layers.woodbury import Woodbury

    return {
        "InvConv1x1": lambda: layers.InvConv1x1(seed=seed),
        "Woodbury": lambda: Woodbury(seed=seed),
        "MEWoodbury": lambda: MEWoodbury(seed=seed),
        "ButterflyLayer": lambda: ButterflyLayer(seed=seed),  # "auto": dense C x C matrix at C <= 512
        "ButterflyLayer-factors": lambda: ButterflyLayer(seed=seed, implementation="factors"),
    }[name]()


def bench_layer(name: str, height: int, width: int, channels: int, args) -> dict:
    from tfinv.export.onnx import inference_session, prepare
    from tfinv.testing.contract import perturb_weights

    shape = (args.batch, height, width, channels)
    layer = make_layer(name)
    layer.build((None, height, width, channels))
    perturb_weights(layer, 0.1)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    z = np.asarray(layer.forward_and_log_det(tf.constant(x))[0])
    result = {"layer": name, "hw": [height, width], "channels": channels,
              "num_parameters": int(sum(np.prod(v.shape) for v in layer.trainable_variables))}
    for direction, value in (("forward", x), ("inverse", z)):
        method = layer.forward_and_log_det if direction == "forward" else layer.inverse_and_log_det
        fn = tf.function(method, input_signature=[tf.TensorSpec(shape, tf.float32)])

        def tf_run(v, fn=fn):
            out, log_det = fn(v)
            return out.numpy(), log_det.numpy()

        proto, info = prepare(layer, direction, test_input=value)
        session, provider = inference_session(proto.SerializeToString())
        in_name = session.get_inputs()[0].name

        def onnx_run(v, session=session, in_name=in_name):
            return session.run(None, {in_name: v})

        runners = {"tf": tf_run, "onnx": onnx_run}
        samples = {key: [] for key in runners}
        for key, run in runners.items():
            timed(run, value, args.warmup)
        for n in (len(c) for c in np.array_split(np.arange(args.repeats), args.rounds)):
            for key, run in runners.items():
                samples[key] += timed(run, value, n)
        result[direction] = {
            **{f"{key}_median_ms": round(float(np.median(s)), 4) for key, s in samples.items()},
            "onnx_parity_error": info.max_relative_error,
            "onnx_nodes": len(proto.graph.node),
            "provider": provider,
        }
    return result


def scaling(rows: list[dict]) -> dict:
    """Ratios of medians each time H*W doubles, and the overall exponent, per series."""
    out = {}
    for name in LAYERS:
        for channels in sorted({r["channels"] for r in rows}):
            series = sorted((r for r in rows if r["layer"] == name and r["channels"] == channels),
                            key=lambda r: r["hw"][0] * r["hw"][1])
            if len(series) < 2:
                continue
            pixels = [r["hw"][0] * r["hw"][1] for r in series]
            for direction in DIRECTIONS:
                for key in RUNNERS:
                    t = [r[direction][f"{key}_median_ms"] for r in series]
                    out[f"{name}/C{channels}/{direction}/{key}"] = {
                        "hw": pixels,
                        "ratio_per_step": [round(b / a, 2) for a, b in zip(t, t[1:])],
                        "exponent": round(math.log(t[-1] / t[0]) / math.log(pixels[-1] / pixels[0]), 2),
                    }
    return out


def train_variants(args) -> list[dict]:
    from tfinv import cli

    results = []
    for linear in args.linears:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                # "mixerflow" is the MixerFlow model (issue 7); the other names are Glow's linear layer.
                model = ["--model", "mixerflow"] if linear == "mixerflow" else ["--linear", linear]
                argv = ["train", "--dataset", "digits", "--epochs", str(args.epochs), *model,
                        "--seed", str(seed), "--verbose", "0", "--num-samples", "16", "--out", tmp]
                started = time.perf_counter()
                code = cli.main(argv)
                with open(os.path.join(tmp, "metrics.json")) as f:
                    metrics = json.load(f) if code in (0, 1) else {}
            row = {
                "linear": linear,
                "seed": seed,
                "exit_code": code,
                "test_bits_per_dim": metrics.get("test_bits_per_dim"),
                "train_bits_per_dim": metrics.get("train_bits_per_dim"),
                "fit_seconds": metrics.get("fit_seconds"),
                "wall_seconds": round(time.perf_counter() - started, 1),
                "num_parameters": metrics.get("num_parameters"),
            }
            log(f"train {linear} seed {seed}: test bits/dim {row['test_bits_per_dim']}, "
                f"fit {row['fit_seconds']} s")
            results.append(row)
    return results


def summarize_training(rows: list[dict]) -> dict:
    summary = {}
    for linear in dict.fromkeys(r["linear"] for r in rows):
        mine = [r for r in rows if r["linear"] == linear]
        test = [r["test_bits_per_dim"] for r in mine if r["test_bits_per_dim"] is not None]
        fit = [r["fit_seconds"] for r in mine if r["fit_seconds"] is not None]
        summary[linear] = {
            "test_bits_per_dim_mean": round(float(np.mean(test)), 4) if test else None,
            "test_bits_per_dim_per_seed": [round(t, 4) for t in test],
            "fit_seconds_mean": round(float(np.mean(fit)), 1) if fit else None,
            "num_parameters": mine[0]["num_parameters"],
        }
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["16x16", "16x32", "32x32"], help="HxW sizes")
    parser.add_argument("--channels", nargs="+", type=int, default=[4, 16])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per runner")
    parser.add_argument("--rounds", type=int, default=3, help="alternating blocks the calls are split into")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10, help="training budget of every Glow variant")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--linears", nargs="+",
                        default=["inv_conv1x1", "woodbury", "me_woodbury", "butterfly", "mixerflow"],
                        help="Glow linear layers to train (and 'mixerflow' for the MixerFlow model)")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke run: few repeats, 1 epoch")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.rounds, args.warmup, args.epochs = 3, 1, 1, 1

    started = time.perf_counter()
    load_before = os.getloadavg()
    report: dict = {"benchmark": "linear_layers"}
    with stdout_to_stderr() as real_stdout:
        import keras

        import tfinv

        if not args.skip_timing:
            rows = []
            for size in args.sizes:
                height, width = (int(s) for s in size.lower().split("x"))
                for channels in args.channels:
                    for name in LAYERS:
                        t0 = time.perf_counter()
                        row = bench_layer(name, height, width, channels, args)
                        rows.append(row)
                        fwd, inv = row["forward"], row["inverse"]
                        log(f"{name} {height}x{width}x{channels}: fwd tf {fwd['tf_median_ms']:.3f} / onnx "
                            f"{fwd['onnx_median_ms']:.3f} ms, inv tf {inv['tf_median_ms']:.3f} / onnx "
                            f"{inv['onnx_median_ms']:.3f} ms ({time.perf_counter() - t0:.1f} s)")
            report["timing"] = rows
            report["scaling"] = scaling(rows)
        if not args.skip_training:
            training = train_variants(args)
            report["training"] = training
            report["training_summary"] = summarize_training(training)
        report["settings"] = {
            **{k: v for k, v in vars(args).items() if k not in ("out",)},
            "layer_arguments": "defaults: Woodbury/MEWoodbury ranks min(n, 8); ButterflyLayer full "
                               "(ceil(log2 C) levels); InvConv1x1 LU; weights perturbed by 0.1",
            "glow": "tfinv train defaults: levels 2, steps_per_level 4, hidden_channels 64, affine, "
                    "batch 64, lr 1e-3; digits 8x8, 17 levels",
        }
        report["environment"] = {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "tfinv": tfinv.__version__,
            "cpu_count": os.cpu_count(),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        }
        report["wall_seconds"] = round(time.perf_counter() - started, 1)
        write_json(report, args.out, real_stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
