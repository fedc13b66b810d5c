"""Benchmark: masked (triangular) convolutions and their inverses (row, wavefront, sequential).

For ``H = W`` in {16, 32, 64}, ``C`` in {4, 16}, batch 32 and 3x3 kernels:

* every triangular layer (``EmergingConv``, ``CInCConv``, ``FInCConv`` (FInC's four-group unit),
  ``InverseConv``; weights perturbed): time *per sample* of ``forward_and_log_det`` and
  ``inverse_and_log_det`` in TF graph mode (``tf.function``) and under XLA
  (``jit_compile=True``), against a plain ``keras.layers.Conv2D(C, 3, padding="same",
  use_bias=False)`` of the same size (``*_over_conv2d``), plus onnxruntime (graphs from
  `tfinv.export.onnx.prepare`, which also checks parity) unless ``--no-onnx``;
* the solve schedules: ``CInCConv`` inverse with ``order="sequential"`` (``H * W`` steps),
  ``"wavefront"`` (``H + W - 1`` loop steps) and ``"rows"`` (``H`` unrolled steps, the default),
  graph and XLA; the calls are interleaved round by round so load from other processes hits all
  schedules alike; medians and a min-based ratio. Goal: sequential / default >= 20 at 32 x 32;
* ``finc_vs_emerging`` (``--finc-sizes``, default 32 and 64; ``C = 16``, batch 16): sampling
  (inverse) time of FInC's unit (`FInCConv`: one block-diagonal solve) against the paper's
  `EmergingConv` (two solves), `RasterEmergingConv` and `EmergingConv` with
  ``order="sequential"`` (pixel by pixel, the reference's schedule), TF graph mode, medians and
  ``emerging / finc`` ratios.

Timing: numpy in, numpy out, ``time.perf_counter`` after warm-up; medians in ms.
Run: ``python benchmarks/conv_inverse.py [--quick] [--no-onnx] [--skip-training] [--out results.json]``;
stdout is one JSON object, progress goes to stderr. Timings are for reading, never asserted in tests.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import platform
import time

import numpy as np
import tensorflow as tf
from _common import log, stdout_to_stderr, write_json  # noqa: E402

SIZES = (16, 32, 64)
CHANNELS = (4, 16)
BATCH = 32


def timings_ms(fn, x, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """``(median, min)`` wall time of ``fn(x)`` in ms."""
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times)), 1e3 * float(np.min(times))


def median_ms(fn, x, repeats: int, warmup: int = 2) -> float:
    return timings_ms(fn, x, repeats, warmup)[0]


def interleaved_ms(runners: dict, x, rounds: int, warmup: int = 2) -> dict:
    """``{name: (median, min)}`` in ms, one call of every runner per round (same load for all)."""
    for run in runners.values():
        for _ in range(warmup):
            run(x)
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            run(x)
            times[name].append(time.perf_counter() - start)
    return {name: (1e3 * float(np.median(t)), 1e3 * float(np.min(t))) for name, t in times.items()}


def tf_runner(fn, shape, jit: bool = False):
    graph = tf.function(fn, input_signature=[tf.TensorSpec((None,) + shape[1:], tf.float32)],
                        jit_compile=jit)

    def run(x):
        return [np.asarray(t) for t in tf.nest.flatten(graph(tf.constant(x)))]

    return run


def onnx_runner(layer, direction, x):
    from tfinv.export.onnx import inference_session, prepare

    proto, info = prepare(layer, direction, test_input=x)
    session, _ = inference_session(proto.SerializeToString())
    name = session.get_inputs()[0].name
    return (lambda v: session.run(None, {name: v})), info.op_types


def finc_vs_emerging(sizes, repeats: int, channels: int = 16, batch: int = 16) -> list[dict]:
    """Sampling (inverse) medians of FInCConv, EmergingConv and RasterEmergingConv, TF graph mode."""
    from tfinv.layers.emerging_conv import EmergingConv
    from tfinv.layers.f_in_c_conv import FInCConv
    from tfinv.layers.raster_emerging_conv import RasterEmergingConv
    from tfinv.testing.contract import perturb_weights

    rows = []
    for size in sizes:
        shape = (batch, size, size, channels)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        row = {"H": size, "W": size, "C": channels, "batch": batch}
        # EmergingConv-sequential: pixel-by-pixel substitution, the schedule of the reference's
        # Cython inverse (what FInC's paper compares against)
        for name, make in (("FInCConv", FInCConv), ("EmergingConv", EmergingConv),
                           ("RasterEmergingConv", RasterEmergingConv),
                           ("EmergingConv-sequential", lambda seed: EmergingConv(seed=seed, order="sequential"))):
            layer = make(seed=1)
            layer.build(shape)
            perturb_weights(layer, 0.05, seed=1)
            z = np.asarray(layer.forward_and_log_det(x)[0])
            row[f"{name}_sampling_ms"] = median_ms(tf_runner(layer.inverse_and_log_det, shape), z, repeats)
        row["emerging_over_finc"] = row["EmergingConv_sampling_ms"] / row["FInCConv_sampling_ms"]
        row["raster_emerging_over_finc"] = row["RasterEmergingConv_sampling_ms"] / row["FInCConv_sampling_ms"]
        row["sequential_emerging_over_finc"] = (row["EmergingConv-sequential_sampling_ms"]
                                                / row["FInCConv_sampling_ms"])
        log(f"sampling {size}x{size}x{channels}: FInC {row['FInCConv_sampling_ms']:.1f} ms, Emerging "
            f"{row['EmergingConv_sampling_ms']:.1f} ms ({row['emerging_over_finc']:.2f}x)")
        rows.append(row)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16x16 and C=4 only, fewer repeats")
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    parser.add_argument("--channels", nargs="+", type=int, default=list(CHANNELS))
    parser.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime timings")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--epochs", type=int, default=10, help="digits training budget of each Glow variant")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--linears", nargs="+", default=["inv_conv1x1", "emerging", "cinc", "finc", "inverse_conv", "conv_exp"],
                        help="Glow variants (linear= names) trained on digits; the first is the reference")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--finc-sizes", nargs="*", type=int, default=[32, 64],
                        help="H = W of the FInC vs Emerging sampling comparison (none: skip)")
    parser.add_argument("--skip-layers", action="store_true", help="skip the per-layer/schedule timings")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = 1

    import keras

    from tfinv.layers.c_in_c_conv import CInCConv
    from tfinv.layers.emerging_conv import EmergingConv
    from tfinv.layers.f_in_c_conv import FInCConv
    from tfinv.layers.inverse_conv import InverseConv
    from tfinv.testing.contract import perturb_weights

    sizes = SIZES[:1] if args.quick else args.sizes
    channels = CHANNELS[:1] if args.quick else args.channels
    repeats = 3 if args.quick else args.repeats
    makers = {"EmergingConv": EmergingConv, "CInCConv": CInCConv, "FInCConv": FInCConv,
              "InverseConv": InverseConv}
    results = []
    with stdout_to_stderr() as real_stdout:
        for size in [] if args.skip_layers else sizes:
            for c in channels:
                shape = (BATCH, size, size, c)
                x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
                row = {"H": size, "W": size, "C": c, "batch": BATCH, "layers": {}}
                # a plain convolution of the same size: the yardstick of every layer
                conv = keras.layers.Conv2D(c, 3, padding="same", use_bias=False)
                conv.build(shape)
                conv_ms = {jit: median_ms(tf_runner(conv, shape, jit), x, repeats) for jit in (False, True)}
                row["conv2d_ms_per_sample"] = conv_ms[False] / BATCH
                row["conv2d_xla_ms_per_sample"] = conv_ms[True] / BATCH
                for name, make in makers.items():
                    layer = make(seed=1)
                    layer.build(shape)
                    perturb_weights(layer, 0.05, seed=1)
                    z = np.asarray(layer.forward_and_log_det(x)[0])
                    entry = {}
                    for direction, fn, value in (("forward", layer.forward_and_log_det, x),
                                                 ("inverse", layer.inverse_and_log_det, z)):
                        for suffix, jit in (("", False), ("_xla", True)):
                            ms = median_ms(tf_runner(fn, shape, jit), value, repeats) / BATCH
                            entry[f"tf{suffix}_{direction}_ms_per_sample"] = ms
                            entry[f"tf{suffix}_{direction}_over_conv2d"] = ms / (conv_ms[jit] / BATCH)
                        if not args.no_onnx and size <= 32:
                            run, ops = onnx_runner(layer, direction, value)
                            entry[f"onnx_{direction}_ms_per_sample"] = median_ms(run, value, repeats) / BATCH
                            entry[f"onnx_{direction}_ops"] = ops
                    row["layers"][name] = entry
                    log(f"{size}x{size} C={c} {name} (ms/sample; x conv2d): "
                        + ", ".join(f"{k.replace('_ms_per_sample', '')}={v:.4f}" for k, v in entry.items()
                                    if k.endswith("_ms_per_sample"))
                        + " | " + ", ".join(f"{k.replace('_over_conv2d', '')}={v:.1f}x" for k, v in entry.items()
                                            if k.endswith("_over_conv2d")))
                # schedules: the same CInC kernel, sequential vs wavefront vs rows substitution
                solvers = {}
                for order in ("sequential", "wavefront", "rows"):
                    solvers[order] = CInCConv(seed=1, order=order)
                    solvers[order].build(shape)
                perturb_weights(solvers["sequential"], 0.05, seed=1)
                for order in ("wavefront", "rows"):
                    solvers[order].set_weights(solvers["sequential"].get_weights())
                z = np.asarray(solvers["rows"].forward_and_log_det(x)[0])
                for suffix, jit in (("", False), ("_xla", True)):
                    runners = {order: tf_runner(layer.inverse_and_log_det, shape, jit)
                               for order, layer in solvers.items()}
                    t = interleaved_ms(runners, z, max(3, repeats // 2))
                    for order, (med, _) in t.items():
                        row[f"cinc_inverse_{order}{suffix}_ms"] = med
                    for order in ("wavefront", "rows"):
                        row[f"sequential_over_{order}{suffix}"] = t["sequential"][0] / t[order][0]
                        row[f"sequential_over_{order}{suffix}_min"] = t["sequential"][1] / t[order][1]
                    log(f"  sequential/wavefront/rows{suffix} = " + "/".join(f"{t[o][0]:.1f}" for o in t)
                        + f" ms: rows {t['sequential'][0] / t['rows'][0]:.1f}x "
                        f"(min-based {t['sequential'][1] / t['rows'][1]:.1f}x), wavefront "
                        f"{t['sequential'][0] / t['wavefront'][0]:.1f}x")
                row["inverse_conv_sampling_over_conv2d"] = row["layers"]["InverseConv"]["tf_inverse_over_conv2d"]
                results.append(row)
        training = None
        if not args.skip_training:
            # Same budget and loop as benchmarks/linear_layers.py (tfinv train on digits).
            from linear_layers import summarize_training, train_variants

            training = summarize_training(train_variants(args))
        finc_rows = finc_vs_emerging(args.finc_sizes, repeats) if args.finc_sizes else None
        report = {
            "benchmark": "conv_inverse",
            "finc_vs_emerging_sampling": finc_rows,
            "glow_variants_test_bits_per_dim": training,
            "platform": platform.platform(),
            "tensorflow": tf.__version__,
            "kernel_size": 3,
            "goals": {"sequential_over_rows_at_32 (graph and xla)": ">= 20",
                      "inverse_conv_sampling_over_conv2d": "<= 2"},
            "note": "2 shared cores (~8 concurrent jobs): absolute times are noisy; ratios are "
                    "taken side by side (schedules interleaved round by round)",
            "results": results,
        }
        write_json(report, args.out, real_stdout)


if __name__ == "__main__":
    main()
