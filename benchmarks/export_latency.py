"""Benchmark: inference latency of TensorFlow vs onnxruntime on the exported graphs.

Subjects:

* the Glow digits model, ``Glow((8, 8, 1), levels=2, steps_per_level=4, hidden_channels=64)``,
  weights perturbed by ``perturb_weights(model, 0.05)``;
* every layer case of `tfinv.testing.cases()`, rebuilt at a ``32x32xC`` input (``C`` the case's
  channel count): ``case.make()``, ``build((None, 32, 32, C))``, ``initialize(x)`` on a batch of
  64, then ``perturb_weights(layer, 0.1)``.

For each subject, direction (forward, inverse) and batch size (1, 64), three runners are timed,
after warm-up calls that are not timed; the repetitions are split into 5 rounds of alternating
blocks (TF, TF+XLA, ONNX, TF, ...) and pooled, so load bursts from other processes hit all three:

* ``tf``: ``tf.function(forward_and_log_det | inverse_and_log_det)`` with a dynamic-batch input
  signature (traced once, shared by both batch sizes);
* ``tf_xla``: the same with ``jit_compile=True`` (compiled once per batch size during warm-up;
  ``--no-xla`` skips it);
* ``onnx``: an onnxruntime session on the model proto of
  `tfinv.export.onnx.prepare(subject, direction, test_input=...)`, opened with explicit
  ``SessionOptions`` (``intra_op_num_threads``) and the provider choice of
  `tfinv.export.onnx.inference_session` (CUDA when it loads, CPU otherwise).

Every timed call is "numpy in, numpy out" for all runners (the TF outputs are read back with
``.numpy()``, which also waits for the result), timed with ``time.perf_counter``. Reported per
case: median and p90 in milliseconds, the ratio ``onnx / tf`` of the medians (and ``onnx /
tf_xla``), the provider, and the parity (max relative error of onnxruntime vs TF, both outputs,
``max|a-b| / max(max|b|, 1)``) at each batch size plus the one `prepare` measured.

Summary: geometric mean of ``onnx / tf`` at batch 1 and, per entry, whether the goal
"onnxruntime <= 0.7x TF at batch 1" holds (in both directions).

Run: ``python benchmarks/export_latency.py [--quick] [--out results.json] [--plot latency.png]``.
Stdout is a single JSON object; progress goes to stderr. Timings are for reading, never asserted
in tests.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from _common import log, stdout_to_stderr, timed  # noqa: E402

GOAL_RATIO = 0.7  # onnxruntime median <= 0.7 x TF median, at batch 1
BATCHES = (1, 64)
DIRECTIONS = ("forward", "inverse")
SPATIAL = 32


# --------------------------------------------------------------------------- subjects
def _counts(shape, seed, num_levels=17):
    """Dequantised pixel counts in ``[0.05 L, 0.95 L]`` (the digits data domain)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05 * num_levels, 0.95 * num_levels, shape).astype(np.float32)


def glow_subject():
    from tfinv.models import Glow
    from tfinv.testing.contract import perturb_weights

    model = Glow((8, 8, 1), levels=2, steps_per_level=4, hidden_channels=64)
    perturb_weights(model, 0.05)
    inputs = {"forward": {}, "inverse": {}}
    for b in BATCHES:
        inputs["forward"][b] = _counts((b, 8, 8, 1), seed=b)
        noise = np.random.default_rng(100 + b).standard_normal((b,) + model.latent_shape)
        inputs["inverse"][b] = (0.7 * noise).astype(np.float32)  # sampling at temperature 0.7
    return {
        "name": "Glow-digits",
        "kind": "model",
        "config": "Glow((8,8,1), levels=2, steps_per_level=4, hidden_channels=64), perturb 0.05",
        "input_shape": {"forward": [None, 8, 8, 1], "inverse": [None, *model.latent_shape]},
        "subject": model,
        "inputs": inputs,
    }


def case_subject(case):
    """The layer of ``case`` rebuilt at ``32x32xC``; inverse inputs are forward outputs (so they
    lie in the layer's image, e.g. for LogitPreprocess)."""
    from tfinv.testing.contract import perturb_weights

    channels = int(case.input_shape[-1])
    layer = case.make()
    layer.build((None, SPATIAL, SPATIAL, channels))
    x = {b: case.draw((b, SPATIAL, SPATIAL, channels), b) for b in BATCHES}
    if case.initialize:
        layer.initialize(tf.constant(x[max(BATCHES)]))
    perturb_weights(layer, 0.1)
    z = {b: np.asarray(layer.forward_and_log_det(tf.constant(x[b]))[0]) for b in BATCHES}
    out_shape = list(layer.compute_output_shape((None, SPATIAL, SPATIAL, channels)))
    return {
        "name": case.name,
        "kind": "layer",
        "config": f"{case.name} at (32, 32, {channels}), perturb 0.1",
        "input_shape": {"forward": [None, SPATIAL, SPATIAL, channels], "inverse": out_shape},
        "subject": layer,
        "inputs": {"forward": x, "inverse": z},
    }


# --------------------------------------------------------------------------- runners
def tf_runner(subject, direction: str, input_shape, jit: bool) -> tuple[Callable, Any]:
    method = subject.forward_and_log_det if direction == "forward" else subject.inverse_and_log_det
    spec = [tf.TensorSpec(tuple(input_shape), tf.float32)]
    fn = tf.function(method, input_signature=spec, jit_compile=jit, reduce_retracing=False)

    def run(value: np.ndarray):
        out, log_det = fn(value)
        return out.numpy(), log_det.numpy()

    return run, fn


def ort_providers() -> list[str]:
    """The provider preference of `tfinv.export.onnx.inference_session`."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def ort_session(model_bytes: bytes, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Same as inference_session: silence the CUDA provider's load failure on CPU-only machines.
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(model_bytes, sess_options=options, providers=ort_providers() or None)
    finally:
        ort.set_default_logger_severity(2)
    return session, session.get_providers()[0]


def ort_runner(session) -> Callable:
    in_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    order = [names.index(n) for n in names if n != "log_det"] + [names.index("log_det")]

    def run(value: np.ndarray):
        outs = session.run(None, {in_name: value})
        return outs[order[0]], outs[order[1]]

    return run


def relative_error(actual, expected) -> float:
    """``max|a-b| / max(max|b|, 1)`` as in the export parity check; inf on shape mismatch/NaN."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape or not np.all(np.isfinite(actual)):
        return float("inf")
    return float(np.max(np.abs(actual - expected), initial=0.0)) / max(
        float(np.max(np.abs(expected), initial=0.0)), 1.0)


def stats(samples: list[float]) -> dict[str, Any]:
    return {
        "median_ms": float(np.median(samples)),
        "p90_ms": float(np.percentile(samples, 90)),
        "min_ms": float(np.min(samples)),
        "reps": len(samples),
    }


# --------------------------------------------------------------------------- one entry
def bench_entry(entry, args, reps: dict[int, int], warmup: int, rounds: int) -> dict[str, Any]:
    from tfinv.export.errors import ExportError
    from tfinv.export.onnx import convert, prepare

    subject = entry["subject"]
    result: dict[str, Any] = {"name": entry["name"], "kind": entry["kind"], "config": entry["config"]}
    for direction in DIRECTIONS:
        inputs = entry["inputs"][direction]
        shape = entry["input_shape"][direction]
        d: dict[str, Any] = {"input_shape": shape}
        t0 = time.perf_counter()
        try:
            proto, info = prepare(subject, direction, input_shape=shape[1:], test_input=inputs[max(BATCHES)])
            d["prepare_parity_error"] = info.max_relative_error
        except ExportError as err:  # parity (or conversion) failed: time what converts, say why
            d["prepare_error"] = str(err)
            try:
                proto = convert(subject, direction, input_shape=shape[1:])
            except ExportError as err2:
                d["convert_error"] = str(err2)
                result[direction] = d
                continue
        d["export_seconds"] = round(time.perf_counter() - t0, 2)
        d["onnx_nodes"] = len(proto.graph.node)
        session, provider = ort_session(proto.SerializeToString(), args.ort_threads)
        d["provider"] = provider

        runners = {"onnx": ort_runner(session)}
        tf_run, tf_fn = tf_runner(subject, direction, shape, jit=False)
        runners["tf"] = tf_run
        if not args.no_xla:
            runners["tf_xla"], xla_fn = tf_runner(subject, direction, shape, jit=True)

        for b in BATCHES:
            value = inputs[b]
            row: dict[str, Any] = {}
            expected = runners["tf"](value)  # also traces the tf.function (once, batch None)
            got = runners["onnx"](value)
            row["parity_error"] = max(relative_error(g, e) for g, e in zip(got, expected))
            samples: dict[str, list[float]] = {}
            for key in ("tf", "tf_xla", "onnx"):  # warm-up (and XLA compile), not timed
                if key not in runners:
                    continue
                try:
                    if key == "tf_xla":
                        t1 = time.perf_counter()
                        xla_out = runners[key](value)  # compiles for this batch size
                        row["tf_xla_compile_seconds"] = round(time.perf_counter() - t1, 2)
                        row["tf_xla_parity_error"] = max(
                            relative_error(g, e) for g, e in zip(xla_out, expected))
                    for _ in range(warmup):
                        runners[key](value)
                    samples[key] = []
                except Exception as err:  # e.g. an op XLA cannot compile
                    row[key] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
            # Timed in `rounds` alternating blocks (TF, XLA, ONNX, TF, ...), pooled: a burst of
            # load from other processes then hits every runner rather than one.
            per_round = [len(chunk) for chunk in np.array_split(np.arange(reps[b]), rounds)]
            for n in per_round:
                for key in samples:
                    samples[key] += timed(runners[key], value, n)
            for key, values in samples.items():
                row[key] = stats(values)
            tf_med = row["tf"].get("median_ms")
            onnx_med = row["onnx"].get("median_ms")
            row["onnx_over_tf"] = onnx_med / tf_med if tf_med and onnx_med else None
            xla_med = row.get("tf_xla", {}).get("median_ms")
            row["onnx_over_tf_xla"] = onnx_med / xla_med if xla_med and onnx_med else None
            row["tf_xla_over_tf"] = xla_med / tf_med if xla_med and tf_med else None
            d[f"batch_{b}"] = row
        d["tf_traces"] = int(tf_fn.experimental_get_tracing_count())
        result[direction] = d
    ratios = [result.get(dn, {}).get("batch_1", {}).get("onnx_over_tf") for dn in DIRECTIONS]
    result["goal_met_batch1"] = all(r is not None and r <= GOAL_RATIO for r in ratios)
    return result


# --------------------------------------------------------------------------- summary, plot
def geomean(values) -> float | None:
    values = [v for v in values if v is not None and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def summarize(entries: list[dict[str, Any]]) -> dict[str, Any]:
    rows = []
    for e in entries:
        row = {"name": e["name"]}
        for dn in DIRECTIONS:
            for b in BATCHES:
                cell = e.get(dn, {}).get(f"batch_{b}", {})
                r = cell.get("onnx_over_tf")
                row[f"{dn}_b{b}_onnx_over_tf"] = None if r is None else round(r, 3)
                row[f"{dn}_b{b}_tf_ms"] = cell.get("tf", {}).get("median_ms")
                row[f"{dn}_b{b}_onnx_ms"] = cell.get("onnx", {}).get("median_ms")
        row["goal_met_batch1"] = e["goal_met_batch1"]
        rows.append(row)

    def ratios(key, b, dns=DIRECTIONS, subset=entries):
        return [e.get(dn, {}).get(f"batch_{b}", {}).get(key) for e in subset for dn in dns]

    layers = [e for e in entries if e["kind"] == "layer"]
    parity = [e.get(dn, {}).get(f"batch_{b}", {}).get("parity_error") for e in entries
              for dn in DIRECTIONS for b in BATCHES]
    parity = [p for p in parity if p is not None]
    met = [e["name"] for e in entries if e["goal_met_batch1"]]
    g1 = geomean(ratios("onnx_over_tf", 1))
    return {
        "goal": f"onnxruntime median <= {GOAL_RATIO}x TF median at batch 1 (forward and inverse)",
        "geomean_onnx_over_tf_batch1": g1,
        "geomean_onnx_over_tf_batch1_forward": geomean(ratios("onnx_over_tf", 1, ("forward",))),
        "geomean_onnx_over_tf_batch1_inverse": geomean(ratios("onnx_over_tf", 1, ("inverse",))),
        "geomean_onnx_over_tf_batch1_layers_only": geomean(ratios("onnx_over_tf", 1, subset=layers)),
        "geomean_onnx_over_tf_batch64": geomean(ratios("onnx_over_tf", 64)),
        "geomean_onnx_over_tf_xla_batch1": geomean(ratios("onnx_over_tf_xla", 1)),
        "geomean_onnx_over_tf_xla_batch64": geomean(ratios("onnx_over_tf_xla", 64)),
        "geomean_goal_met": g1 is not None and g1 <= GOAL_RATIO,
        "entries_meeting_goal": f"{len(met)}/{len(entries)}",
        "entries_missing_goal": [e["name"] for e in entries if not e["goal_met_batch1"]],
        "max_parity_error": max(parity) if parity else None,
        "per_entry": rows,
    }


def plot(entries, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return False  # matplotlib is not a dependency: skip silently
    names = [e["name"] for e in entries]
    fig, axes = plt.subplots(len(BATCHES), 1, figsize=(max(8, 0.7 * len(names)), 4 * len(BATCHES)))
    width = 0.2
    x = np.arange(len(names))
    for ax, b in zip(np.atleast_1d(axes), BATCHES):
        for i, (dn, key) in enumerate([(dn, k) for dn in DIRECTIONS for k in ("tf", "onnx")]):
            vals = [e.get(dn, {}).get(f"batch_{b}", {}).get(key, {}).get("median_ms", np.nan)
                    for e in entries]
            ax.bar(x + (i - 1.5) * width, vals, width, label=f"{dn} {key}")
        ax.set_yscale("log")
        ax.set_ylabel("median latency (ms)")
        ax.set_title(f"batch {b}")
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few repetitions only (smoke run)")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--plot", help="PNG bar plot of the medians (needs matplotlib; else skipped)")
    parser.add_argument("--threads", type=int, default=2,
                        help="intra-op threads of both TF and onnxruntime (default 2)")
    parser.add_argument("--no-xla", action="store_true", help="skip the jit_compile=True runner")
    parser.add_argument("--only", nargs="*", help="entry names to run (default: all)")
    args = parser.parse_args(argv)
    args.ort_threads = args.threads

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    reps = {1: 3, 64: 2} if args.quick else {1: 50, 64: 20}
    warmup = 1 if args.quick else 5
    rounds = 1 if args.quick else 5
    load_before = os.getloadavg()
    started = time.perf_counter()

    with stdout_to_stderr() as real_stdout:
        import onnx
        import onnxruntime as ort
        import tf2onnx

        import tfinv
        from tfinv.testing import cases

        builders = [("Glow-digits", glow_subject)] + [
            (c.name, (lambda c=c: case_subject(c))) for c in cases()]
        if args.only:
            builders = [(n, f) for n, f in builders if n in args.only]
        results = []
        for i, (name, build) in enumerate(builders, 1):
            t0 = time.perf_counter()
            entry = build()
            res = bench_entry(entry, args, reps, warmup, rounds)
            res["entry_seconds"] = round(time.perf_counter() - t0, 2)
            results.append(res)
            b1 = ", ".join(
                f"{dn} b1 tf {res[dn]['batch_1']['tf'].get('median_ms', float('nan')):.3f} ms / "
                f"onnx {res[dn]['batch_1']['onnx'].get('median_ms', float('nan')):.3f} ms"
                for dn in DIRECTIONS if "batch_1" in res.get(dn, {}))
            log(f"[{i}/{len(builders)}] {name}: {b1} ({res['entry_seconds']:.1f} s)")

        report = {
            "benchmark": "export_latency",
            "quick": args.quick,
            "summary": summarize(results),
            "settings": {
                "repetitions": {f"batch_{b}": n for b, n in reps.items()},
                "warmup_calls": warmup,
                "rounds": rounds,
                "timing": "time.perf_counter around one numpy-in/numpy-out call; TF outputs read "
                          "with .numpy(); repetitions split into `rounds` alternating blocks "
                          "(TF, TF+XLA, ONNX, TF, ...), samples pooled",
                "tf_function": "input_signature with dynamic batch (traced once); jit_compile "
                               "variant compiled per batch size during warm-up",
                "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() or "default",
                "onnxruntime_intra_op_num_threads": args.ort_threads,
                "onnxruntime_inter_op_num_threads": 1,
                "onnxruntime_providers_requested": ort_providers(),
                "onnxruntime_graph_optimization": "ORT_ENABLE_ALL",
                "opset": 17,
                "layer_input": f"(B, {SPATIAL}, {SPATIAL}, C), C = case channels",
            },
            "environment": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
                "tensorflow": tf.__version__,
                "onnxruntime": ort.__version__,
                "onnx": onnx.__version__,
                "tf2onnx": tf2onnx.__version__,
                "tfinv": tfinv.__version__,
                "loadavg_before": [round(v, 2) for v in load_before],
                "loadavg_after": [round(v, 2) for v in os.getloadavg()],
            },
            "wall_seconds": round(time.perf_counter() - started, 1),
            "entries": results,
        }
        if args.plot:
            report["plot"] = args.plot if plot(results, args.plot) else None
        text = json.dumps(report, indent=2, default=float)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text + "\n")
        real_stdout.write(text + "\n")
        real_stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
