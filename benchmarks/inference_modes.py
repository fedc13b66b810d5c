"""Report: graph mode vs XLA for compiled inference on CPU, per model and batch size.

What `tfinv.core.compiled_inference`'s ``inference_mode="auto"`` picks on a CPU-only machine is
decided from these figures: the data direction (``log_prob``) under XLA only for models that opt
in (`FlowModel.cpu_xla_inference_max_dims`, or every layer's ``prefers_xla_on_cpu``), sampling
under XLA for every model. For each model the same weights run ``log_prob`` at several batch
sizes and ``sample`` in both modes, alternating (graph, XLA, graph, XLA) so that drifting load
hits both alike; each figure is a median over ``--repeats`` calls after warm-up, and the first
call's seconds (tracing + XLA compilation) are reported too.

Models: the speed benchmark's Glow on 8x8x1 digits (L=2, K=4, width 64) and on generated
32x32x3 images (L=3), the speed benchmark's vector flow (64 values), and two models that do not
opt in: `ResidualFlow` and `IDenseNet` (8x8x1, one level of two blocks: their log-det series make
``log_prob`` costly, so they run at batch 16 only).

Run: ``python benchmarks/inference_modes.py [--repeats 15] [--out FILE] [--plot FILE]``; prints
JSON (speed-ups > 1: XLA faster).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import tensorflow as tf  # noqa: E402

from _common import log, stdout_to_stderr, write_file_whole, write_json  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def _median_ms(fn, repeats: int) -> float:
    """speed.py's median latency after one warm-up call."""
    from speed import median_ms

    return median_ms(fn, repeats, warmup=1)


def _models():
    """``name -> (build, data, batches)``; ``build()`` returns an initialised model."""
    import keras

    import speed
    import tfinv
    from tfinv.core import FlowModel
    from tfinv.layers import VectorActNorm, VectorAffineCoupling, VectorInvLinear
    from tfinv.models import IDenseNet, ResidualFlow

    digits, _ = speed.make_data(8)
    colour, _ = speed.make_data(32)

    def glow(data, levels):
        def build():
            keras.utils.set_random_seed(0)
            model = tfinv.models.Glow(data.shape[1:], levels=levels, steps_per_level=speed.STEPS_PER_LEVEL,
                                      hidden_channels=speed.WIDTH, num_levels=speed.NUM_LEVELS, seed=0)
            return model.initialize(tf.constant(data[:64]))
        return build

    def vector():
        keras.utils.set_random_seed(0)
        layers = []
        for i in range(3):
            layers += [VectorActNorm(), VectorInvLinear(), VectorAffineCoupling(parity=0),
                       VectorAffineCoupling(parity=1)]
        return FlowModel(layers, input_shape=(64,)).initialize(tf.constant(speed._flat(digits[:64])))

    def residual(cls):
        def build():
            keras.utils.set_random_seed(0)
            return cls((8, 8, 1), levels=1, blocks_per_level=2).initialize(tf.constant(digits[:64]))
        return build

    return {
        "glow_8x8x1": (glow(digits, 2), digits, (1, 16, 64, 360)),
        "glow_32x32x3": (glow(colour, 3), colour, (1, 16, 64, 360)),
        "vector_flow_64": (vector, speed._flat(digits), (1, 64, 360)),
        "residual_flow_8x8x1": (residual(ResidualFlow), digits, (16,)),
        "i_dense_net_8x8x1": (residual(IDenseNet), digits, (16,)),
    }


def measure(name, build, data, batches, repeats: int) -> dict:
    model = build()
    row = {"num_dims": int(model.num_dims), "auto_uses_xla_for_log_prob": bool(model._cpu_xla_inference()),
           "log_prob_ms": {}, "sample64_ms": {}, "first_call_seconds": {}}
    for batch in batches:
        x = tf.constant(data[:batch])
        times = {"graph": [], "xla": []}
        for mode in ("graph", "xla", "graph", "xla"):
            model.inference_mode = mode
            if batch == batches[0] and not times[mode]:
                started = time.perf_counter()
                model.log_prob(x).numpy()
                row["first_call_seconds"][f"log_prob_{mode}"] = round(time.perf_counter() - started, 2)
            times[mode].append(_median_ms(lambda: model.log_prob(x).numpy(), repeats))
        row["log_prob_ms"][str(batch)] = {mode: round(min(t), 3) for mode, t in times.items()}
        row["log_prob_ms"][str(batch)]["xla_speedup"] = round(min(times["graph"]) / min(times["xla"]), 3)
        log(f"{name} log_prob({batch}): {row['log_prob_ms'][str(batch)]}")
    times = {"graph": [], "xla": []}
    for mode in ("graph", "xla", "graph", "xla"):
        model.inference_mode = mode
        times[mode].append(_median_ms(lambda: model.sample(64).numpy(), repeats))
    row["sample64_ms"] = {mode: round(min(t), 3) for mode, t in times.items()}
    row["sample64_ms"]["xla_speedup"] = round(min(times["graph"]) / min(times["xla"]), 3)
    log(f"{name} sample(64): {row['sample64_ms']}")
    return row


def write_plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["models"]
    labels, speedups = [], []
    for name, row in rows.items():
        for batch, figures in row["log_prob_ms"].items():
            labels.append(f"{name}\nlog_prob({batch})")
            speedups.append(figures["xla_speedup"])
        labels.append(f"{name}\nsample(64)")
        speedups.append(row["sample64_ms"]["xla_speedup"])
    fig, ax = plt.subplots(figsize=(max(8, 0.55 * len(labels)), 4.5))
    colours = ["tab:blue" if s >= 1 else "tab:red" for s in speedups]
    ax.bar(range(len(labels)), speedups, color=colours)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_ylabel("graph time / XLA time (> 1: XLA faster)")
    ax.set_title("Compiled inference on CPU: XLA vs graph mode")
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    write_file_whole(path, buffer.getvalue())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per figure (median)")
    parser.add_argument("--only", nargs="+", help="model names to keep")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "figures" / "inference_modes.json"))
    parser.add_argument("--plot", default=str(REPO / "benchmarks" / "figures" / "inference_modes.png"),
                        help="bar-chart PNG ('' to skip)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with stdout_to_stderr() as real_stdout:
        models = _models()
        if args.only:
            models = {k: v for k, v in models.items() if k in args.only}
        report = {
            "benchmark": "inference_modes",
            "protocol": "same weights, log_prob and sample(64) alternately in graph mode and XLA "
                        "(graph, XLA, graph, XLA), best of the two medians of --repeats calls each",
            "repeats": args.repeats,
            "models": {name: measure(name, *spec, args.repeats) for name, spec in models.items()},
            "environment": {"python": platform.python_version(), "tensorflow": tf.__version__,
                            "cpu_count": os.cpu_count(), "load_average": os.getloadavg()},
        }
        report["wall_seconds"] = round(time.perf_counter() - started, 1)
        if args.plot:
            write_plot(report, args.plot)
        write_json(report, args.out, stream=real_stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
