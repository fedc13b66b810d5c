"""Benchmark: Fourier-domain invertible convolutions against a plain ``keras.layers.Conv2D``.

For ``H = W`` in {16, 32}, ``C`` in {4, 16}, batch 32 and a 3x3 kernel, each subject is timed
in TF graph mode (``tf.function`` with a dynamic-batch input signature) and in onnxruntime:

* ``PeriodicConv`` and ``SymmetricConv``: ``forward_and_log_det`` (the output *and* the log-det,
  which is recomputed from the weights on every TF call; in ONNX it is a folded constant) and
  ``inverse_and_log_det``; weights perturbed by ``perturb_weights(layer, --perturb)``. Their ONNX
  graphs come from `tfinv.export.onnx.prepare(layer, direction, test_input=...)` (which also
  checks parity) and run in `tfinv.export.onnx.inference_session`.
* the baseline: ``keras.layers.Conv2D(C, 3, padding="same", use_bias=False)`` holding the
  layer's kernel; converted with tf2onnx ``from_function`` and run in the same kind of session.

Timing: every call is "numpy in, numpy out" (TF outputs read with ``.numpy()``), timed with
``time.perf_counter`` after warm-up calls; repetitions are split into rounds of alternating blocks
over all runners of one configuration, so load bursts from other processes hit all of them.
Reported: medians (and minima, less sensitive to other processes' load) in ms, and the ratios
``forward+log-det / Conv2D`` and ``inverse / Conv2D`` per runtime. ``--xla`` adds
``jit_compile=True`` graphs. Goal: forward+log-det <= 3x Conv2D (TF graph mode, medians).

Run: ``python benchmarks/fourier_conv.py [--quick] [--xla] [--out results.json]``. Stdout is one JSON
object; progress goes to stderr. Timings are for reading, never asserted in tests.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import log, stdout_to_stderr, timed, write_json  # noqa: E402

GOAL_RATIO = 3.0  # forward + log-det <= 3x a plain Conv2D
SIZES = (16, 32)
CHANNELS = (4, 16)
BATCH = 32
KERNEL = 3


# --------------------------------------------------------------------------- runners
def tf_runner(fn: Callable, shape, jit: bool = False) -> Callable:
    graph = tf.function(fn, input_signature=[tf.TensorSpec((None,) + tuple(shape), tf.float32)],
                        jit_compile=jit)

    def run(value: np.ndarray):
        return tf.nest.map_structure(lambda t: t.numpy(), graph(value))

    return run


def onnx_runner(model_proto) -> Callable:
    from tfinv.export.onnx import inference_session

    session, _ = inference_session(model_proto.SerializeToString())
    in_name = session.get_inputs()[0].name

    def run(value: np.ndarray):
        return session.run(None, {in_name: value})

    return run


def conv2d_baseline(kernel: np.ndarray, shape, xla: bool):
    """A Keras Conv2D holding ``kernel``, with its TF and ONNX runners."""
    import keras
    import tf2onnx

    channels = shape[-1]
    layer = keras.layers.Conv2D(channels, KERNEL, padding="same", use_bias=False)
    layer.build((None,) + tuple(shape))
    layer.kernel.assign(kernel)
    spec = [tf.TensorSpec((None,) + tuple(shape), tf.float32, name="x")]

    @tf.function(input_signature=spec)
    def graph(x):
        return {"y": tf.identity(layer(x))}

    proto, _ = tf2onnx.convert.from_function(graph, input_signature=spec, opset=17)
    runners = {"tf": tf_runner(layer, shape), "onnx": onnx_runner(proto)}
    if xla:
        runners["tf_xla"] = tf_runner(layer, shape, jit=True)
    return runners


# --------------------------------------------------------------------------- one configuration
def bench_config(size: int, channels: int, args) -> dict[str, Any]:
    from tfinv.export.onnx import prepare
    from tfinv.layers.periodic_conv import PeriodicConv
    from tfinv.layers.symmetric_conv import SymmetricConv
    from tfinv.ops import fourier
    from tfinv.testing.contract import perturb_weights, relative_error

    shape = (size, size, channels)
    rng = np.random.default_rng(size * 100 + channels)
    x = rng.standard_normal((BATCH,) + shape).astype(np.float32)
    runners: dict[str, tuple[Callable, np.ndarray]] = {}
    info: dict[str, Any] = {"input_shape": [BATCH, *shape]}

    for cls in (PeriodicConv, SymmetricConv):
        layer = cls(kernel_size=KERNEL, seed=1)
        layer.build((None,) + shape)
        perturb_weights(layer, args.perturb, seed=2)
        z = np.asarray(layer.forward_and_log_det(tf.constant(x))[0])
        key = cls.__name__
        spectrum = layer._embedded_spectrum() if cls is PeriodicConv else layer.spectrum()
        entry: dict[str, Any] = {
            "condition_number": float(layer.condition_number()),
            # whether log_det_method="auto" leaves the fast Cholesky path for QR on these weights
            "log_det_takes_qr": bool(fourier.auto_takes_qr(spectrum)),
        }
        for direction, value in (("forward", x), ("inverse", z)):
            proto, export_info = prepare(layer, direction, test_input=value)
            entry[f"{direction}_onnx_parity"] = export_info.max_relative_error
            entry[f"{direction}_onnx_ops"] = export_info.op_types
            method = layer.forward_and_log_det if direction == "forward" else layer.inverse_and_log_det
            runners[f"{key}.{direction}.tf"] = (tf_runner(method, shape), value)
            if args.xla:
                runners[f"{key}.{direction}.tf_xla"] = (tf_runner(method, shape, jit=True), value)
            runners[f"{key}.{direction}.onnx"] = (onnx_runner(proto), value)
        info[key] = entry
        if cls is PeriodicConv:
            baseline_kernel = layer.kernel.numpy()
    baseline = conv2d_baseline(baseline_kernel, shape, args.xla)
    for runtime, run in baseline.items():
        runners[f"Conv2D.forward.{runtime}"] = (run, x)
    info["Conv2D_onnx_parity"] = relative_error(baseline["onnx"](x)[0], baseline["tf"](x))

    for run, value in runners.values():  # warm-up (and tracing), not timed
        for _ in range(args.warmup):
            run(value)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for n in (len(c) for c in np.array_split(np.arange(args.reps), args.rounds)):
        for name, (run, value) in runners.items():
            samples[name] += timed(run, value, n)
    medians = {name: float(np.median(v)) for name, v in samples.items()}
    minima = {name: float(np.min(v)) for name, v in samples.items()}
    info["median_ms"] = {k: round(v, 4) for k, v in medians.items()}
    info["min_ms"] = {k: round(v, 4) for k, v in minima.items()}
    info["ratio_to_conv2d"] = {}  # of the medians
    info["ratio_to_conv2d_of_minima"] = {}  # less sensitive to load from other processes
    runtimes = ("tf", "onnx") + (("tf_xla",) if args.xla else ())
    for key in ("PeriodicConv", "SymmetricConv"):
        for runtime in runtimes:
            for direction in ("forward", "inverse"):
                name = f"{key}.{direction}.{runtime}"
                base = f"Conv2D.forward.{runtime}"
                info["ratio_to_conv2d"][name] = round(medians[name] / medians[base], 3)
                info["ratio_to_conv2d_of_minima"][name] = round(minima[name] / minima[base], 3)
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few repetitions only (smoke run)")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--xla", action="store_true", help="also time jit_compile=True graphs")
    parser.add_argument("--perturb", type=float, default=0.05,
                        help="scale of the Gaussian noise added to the weights (default 0.05)")
    args = parser.parse_args(argv)
    args.reps, args.warmup, args.rounds = (6, 1, 2) if args.quick else (60, 5, 5)
    load_before = os.getloadavg()
    started = time.perf_counter()
    with stdout_to_stderr() as real_stdout:
        import onnxruntime
        import tf2onnx

        configs = {}
        for size in SIZES:
            for channels in CHANNELS:
                log(f"[fourier_conv] {size}x{size}, C={channels}, batch {BATCH} ...")
                configs[f"{size}x{size}xC{channels}"] = bench_config(size, channels, args)
        ratios = {
            name: {k: v for k, v in c["ratio_to_conv2d"].items() if k.endswith(".forward.tf")}
            for name, c in configs.items()
        }
        worst = max(v for r in ratios.values() for v in r.values())
        result = {
            "benchmark": "fourier_conv",
            "goal": f"forward+log-det <= {GOAL_RATIO}x keras Conv2D (TF graph mode), batch {BATCH}",
            "goal_met": worst <= GOAL_RATIO,
            "worst_forward_tf_ratio": worst,
            "summary_forward_tf_ratio": ratios,
            "configs": configs,
            "environment": {
                "python": platform.python_version(),
                "tensorflow": tf.__version__,
                "onnxruntime": onnxruntime.__version__,
                "tf2onnx": tf2onnx.__version__,
                "cpus": os.cpu_count(),
                "load_average_before": load_before,
                "load_average_after": os.getloadavg(),
                "reps": args.reps,
                "rounds": args.rounds,
                "perturb": args.perturb,
                "seconds": round(time.perf_counter() - started, 1),
            },
        }
        write_json(result, args.out, real_stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
