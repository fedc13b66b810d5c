"""Benchmark: training memory and throughput of RevViT, reversible backprop vs ordinary autodiff.

For every depth (default 4, 8, 16, 32) and every mode (``reversible``: ``memory_efficient=True``,
activations rebuilt in the backward pass; ``ordinary``: ``False``, stored by autodiff; ``fused``:
reversible with ``fused_update=True``, each block's optimizer update applied inside the backward
pass so its gradients die with it, after LOMO, arXiv:2306.09782) a *fresh subprocess* builds the same
RevViT (same width, batch and image size), runs Keras training steps (``train_on_batch``, the
graph ``fit`` uses) on every execution path asked for with ``--paths`` (``eager``:
``run_eagerly=True``; ``graph``: ``tf.function``; ``xla``: ``jit_compile=True``; ``--jit`` is
``--paths xla``) and reports:

* ``train_step_peak_mb``: the training steps' memory, ``VmHWM - VmRSS`` of the process. The
  train function is first traced and run on batches of 1 and 2 (Keras then keeps one graph for
  any batch size), ``VmRSS`` is read and the high-water mark ``VmHWM`` reset
  (``/proc/self/clear_refs``); the full-batch steps follow. Model, optimizer state, the traced
  graph and TensorFlow itself are resident before the reset and cancel out; what remains is the
  peak of the activations, gradients and temporaries of a step. TensorFlow's
  ``get_memory_info`` does not work for CPU devices, so this process-level figure stands in for
  the allocator's peak.
  Under XLA this window also holds the one-time XLA compilation of the full-batch program (XLA
  compiles per concrete shape, so the batch-64 program is compiled in the first full-batch
  step); its memory grows with the size of the program (with depth: the forward pass is
  unrolled). Measured: with one full-batch step run before the reset, the window's growth is
  0.1-1.3 MB at depth 4 and 32 alike (the step's buffers come back from the allocator's pool),
  so under XLA the figure is mostly compilation, not a training step's memory. Hence, for XLA:
* ``xla_step_buffers_peak_mb``: the peak of the compiled train step's live buffers from XLA's
  own buffer assignment (``--xla_dump_to``, the heap simulator's peak, exact and noise-free),
  less the step's inputs (weights, optimizer state, batch: resident between steps anyway):
  activations, gradients and temporaries. ``xla_peak_mb`` includes the inputs;
  ``xla_temp_mb`` is the one preallocated temporary block; ``gradient_mb`` the size of the
  gradients (float32, one per trained weight), which every training step holds at once before
  the optimizer applies them and which therefore grows with depth on every path;
* ``peak_rss_mb``: the process's peak resident memory over its whole life (``VmHWM`` before the
  reset, including imports, tracing and warm-up), the coarse figure;
* ``images_per_second``: batch size / median wall time of the timed steps;
  ``images_per_second_best``: over the fastest step (the least disturbed by other processes
  sharing the cores; the throughput goal is judged on it); ``images_per_cpu_second``: over the
  median CPU time of the process (all threads).

Prints one JSON object (configuration, one row per run, a summary against the goals per path)
and writes a PNG of both figures against depth, one line per path and mode (matplotlib, from the
``benchmarks`` extra).

Run: ``python benchmarks/revvit_memory.py [--paths eager graph xla] [--depths 4 8 16 32] [--batch 64]
[--modes reversible ordinary fused] [--optimizer sgd] [--json figures/revvit_memory_fused.json]
[--plot revvit_memory.png]`` (minutes per path on 2 CPU cores; XLA's compile of depth 32 dominates). Timings are for reading, never asserted in tests.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from _common import write_file_whole, write_json  # noqa: E402

#: RevViT options of each mode (``--modes`` picks some).
MODES = {
    "reversible": {"memory_efficient": True},
    "ordinary": {"memory_efficient": False},
    "fused": {"memory_efficient": True, "fused_update": True},
}
PATHS = ("eager", "graph", "xla")
GOALS = {"memory_ratio_at_max_depth": 0.2, "reversible_growth": 1.3, "throughput_ratio": 0.6}


# ----------------------------------------------------------------------------- worker
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # "5": reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


_PEAK = re.compile(r"Stack trace breakdown for peak usage: ([\d ]+) bytes")
_BREAKDOWN_LINE = re.compile(r"(?:├──|└──)\s+(\S+) \([\d.]+%, total: [\d ]+ bytes, current: ([\d ]+) bytes")
_ALLOCATION = re.compile(r"^allocation \d+: size \d+, (parameter \d+|[^,:]+)", re.M)
_VALUE = re.compile(r"^ value: <\d+ (\S+)(?: \(phi\))? @", re.M)


def _parameter_values(text: str) -> set[str]:
    """Names of the HLO values that live in the step's parameter buffers (weights, optimizer
    state, batch): the parameters themselves and every value aliased to them, such as a while
    loop's state that carries a weight the loop updates in place (the fused path's)."""
    names, starts = set(), [(m.start(), m.group(1)) for m in _ALLOCATION.finditer(text)]
    for (start, kind), (end, _) in zip(starts, starts[1:] + [(len(text), "")]):
        if kind.startswith("parameter"):
            names.update(_VALUE.findall(text, start, end))
    return names


def xla_buffer_figures(directory: str) -> dict | None:
    """The memory of the compiled train step, from XLA's buffer assignment (``--xla_dump_to``) of
    the last compiled ``one_step_on_data`` module (the full batch's): ``xla_peak_mb``, the heap
    simulator's peak of live buffers during one step (parameters included);
    ``xla_arguments_at_peak_mb``, the part of it that is the step's inputs (weights, optimizer
    state, batch: resident between steps anyway), whether listed as XLA's arguments or as values
    aliased to their buffers (a ``tf.while_loop`` that updates weights in place carries them as
    loop state: the fused path's); ``xla_step_buffers_peak_mb``, the difference (activations,
    gradients, temporaries: what the step itself allocates); ``xla_temp_mb``, the one
    preallocated temporary block (the peak plus packing fragmentation)."""
    import glob

    files = glob.glob(os.path.join(directory, "*one_step_on_data*buffer-assignment.txt"))
    if not files:
        return None
    latest = max(files, key=lambda f: int(re.search(r"module_(\d+)", os.path.basename(f)).group(1)))
    with open(latest) as f:
        text = f.read()
    match = _PEAK.search(text)
    peak = int(match.group(1).replace(" ", "")) if match else None
    arguments = None
    if match:
        parameters = _parameter_values(text)
        arguments = sum(int(current.replace(" ", "")) for name, current in _BREAKDOWN_LINE.findall(text, match.end())
                        if name == "XLA_Args" or name in parameters)
    temp = re.search(r"allocation \d+: size (\d+), preallocated-temp", text)
    mb = lambda b: None if b is None else round(b / 2**20, 2)
    return {
        "xla_peak_mb": mb(peak),
        "xla_arguments_at_peak_mb": mb(arguments),
        "xla_step_buffers_peak_mb": mb(None if peak is None or arguments is None else peak - arguments),
        "xla_temp_mb": mb(temp and int(temp.group(1))),
    }


def worker(args: argparse.Namespace) -> dict:
    import gc

    import keras
    import tensorflow as tf

    from tfinv.models import RevViT

    keras.utils.set_random_seed(0)
    model = RevViT(
        patch_size=args.patch,
        dim=args.dim,
        depth=args.depth,
        heads=args.heads,
        num_classes=10,
        **MODES[args.mode],
        image_shape=(args.image, args.image, 1),
    )
    model.compile(
        optimizer=_optimizer(args.optimizer),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=args.path == "xla",
        run_eagerly=args.path == "eager",
    )
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((args.batch, args.image, args.image, 1)).astype(np.float32))
    y = tf.constant(rng.integers(0, 10, args.batch))
    # Trace on batches of 1 and 2: Keras's train function (reduce_retracing) then holds a graph
    # for any batch size, and the big batch's activations have not been allocated yet.
    for n in (1, 2):
        model.train_on_batch(x[:n], y[:n])
    gc.collect()
    lifetime_peak_kb = _status_kb("VmHWM")
    resident_kb = _status_kb("VmRSS")
    reset = _reset_peak()
    model.train_on_batch(x, y)  # first full step: counted for memory, not timed
    seconds, cpu_seconds = [], []
    for _ in range(args.steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = model.train_on_batch(x, y)  # returns numpy: the step has finished
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    step_peak_kb = _status_kb("VmHWM") - resident_kb if reset else None
    median = statistics.median(seconds)
    buffers = xla_buffer_figures(args.xla_dump) if args.xla_dump else None
    return {
        "path": args.path,
        "depth": args.depth,
        "mode": args.mode,
        "train_step_peak_mb": None if step_peak_kb is None else round(step_peak_kb / 1024, 1),
        "peak_rss_mb": round(max(lifetime_peak_kb, _status_kb("VmHWM")) / 1024, 1),
        "resident_before_steps_mb": round(resident_kb / 1024, 1),
        "images_per_second": round(args.batch / median, 1),
        "images_per_second_best": round(args.batch / min(seconds), 1),
        "images_per_cpu_second": round(args.batch / statistics.median(cpu_seconds), 1),
        "seconds_per_step": round(median, 4),
        "loss": float(np.asarray(loss).reshape(-1)[0]),
        "parameters": int(model.count_params()),
        "gradient_mb": round(sum(4 * int(np.prod(v.shape)) for v in model.trainable_variables) / 2**20, 2),
        **(buffers or {}),
    }


def _optimizer(name: str):
    import keras

    return {"sgd": lambda: keras.optimizers.SGD(1e-3), "adam": lambda: keras.optimizers.Adam(1e-3)}[name]()


# ----------------------------------------------------------------------------- plot
_COLORS = {"reversible": "tab:blue", "ordinary": "tab:orange", "fused": "tab:green"}
_STYLES = {"eager": ":", "graph": "--", "xla": "-"}


def write_plot(rows: list[dict], path: str) -> str:
    """Writes the memory and throughput curves against depth, one line per (path, mode), with
    matplotlib (the ``benchmarks`` extra); returns the path written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = sorted({r["depth"] for r in rows})
    panels = [("train_step_peak_mb", "training-step peak memory, process (MB)"),
              ("images_per_second_best", "training throughput, best step (images/s)")]
    if any(r.get("xla_step_buffers_peak_mb") for r in rows):  # XLA's exact figure, beside the process's
        panels.insert(1, ("xla_step_buffers_peak_mb", "compiled step's own buffers, XLA (MB)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2))
    for ax, (key, label) in zip(axes, panels):
        for run_path in PATHS:
            for mode in MODES:
                points = sorted((r["depth"], r[key]) for r in rows
                                if r["path"] == run_path and r["mode"] == mode and r.get(key) is not None)
                if points:
                    ax.plot(*zip(*points), marker="o", linestyle=_STYLES[run_path], color=_COLORS[mode],
                            label=f"{mode}, {run_path}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.set_xlabel("depth (RevViT blocks)")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("RevViT training: reversible backprop (standard or fused optimizer updates) vs ordinary autodiff (same run)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, format="png")
    plt.close(fig)
    write_file_whole(path, buffer.getvalue())
    return path


# ----------------------------------------------------------------------------- driver
def summarize(rows: list[dict], depths: list[int], run_path: str) -> dict:
    """The figures against the goals for one path: growth with depth of each memory-saving mode
    (``reversible``, ``fused``, as measured) and its memory and throughput against ``ordinary``."""
    def get(depth, mode, key):
        return next(r[key] for r in rows if r["depth"] == depth and r["mode"] == mode and r["path"] == run_path)

    low, high = min(depths), max(depths)
    measured = {r["mode"] for r in rows if r["path"] == run_path}
    summary = {}
    if "ordinary" in measured:
        summary[f"step_memory_growth_ordinary_depth_{low}_to_{high}"] = round(
            get(high, "ordinary", "train_step_peak_mb") / get(low, "ordinary", "train_step_peak_mb"), 3)
    for mode in (m for m in ("reversible", "fused") if m in measured):
        figures = summary[mode] = {}
        growth = get(high, mode, "train_step_peak_mb") / get(low, mode, "train_step_peak_mb")
        figures[f"step_memory_growth_depth_{low}_to_{high}"] = round(growth, 3)
        goals = {f"growth <= {GOALS['reversible_growth']}": growth <= GOALS["reversible_growth"]}
        if "ordinary" in measured:
            memory_ratio = get(high, mode, "train_step_peak_mb") / get(high, "ordinary", "train_step_peak_mb")
            ratio = lambda key: {str(d): round(get(d, mode, key) / get(d, "ordinary", key), 3) for d in depths}
            best_speed = ratio("images_per_second_best")
            figures.update({
                f"step_memory_over_ordinary_at_depth_{high}": round(memory_ratio, 3),
                "throughput_over_ordinary_best_step": best_speed,
                "throughput_over_ordinary_median_step": ratio("images_per_second"),
                "throughput_over_ordinary_cpu_time": ratio("images_per_cpu_second"),
            })
            goals[f"memory ratio <= {GOALS['memory_ratio_at_max_depth']}"] = memory_ratio <= GOALS["memory_ratio_at_max_depth"]
            goals[f"throughput ratio (best step) >= {GOALS['throughput_ratio']} at every depth"] = (
                min(best_speed.values()) >= GOALS["throughput_ratio"])
        if run_path == "xla" and get(high, mode, "xla_step_buffers_peak_mb"):
            buffers = lambda d, m: get(d, m, "xla_step_buffers_peak_mb")
            compiled = figures["compiled_step"] = {
                f"xla_step_buffers_mb_depth_{low}": buffers(low, mode),
                f"xla_step_buffers_mb_depth_{high}": buffers(high, mode),
                f"xla_step_buffers_growth_depth_{low}_to_{high}": round(buffers(high, mode) / buffers(low, mode), 3),
            }
            if mode == "reversible":  # every gradient is held at once: the part that is not one
                activations = lambda d: buffers(d, mode) - get(d, mode, "gradient_mb")
                compiled[f"xla_step_buffers_less_gradients_growth_depth_{low}_to_{high}"] = round(
                    activations(high) / activations(low), 3)
            if "ordinary" in measured:
                compiled[f"xla_step_buffers_growth_ordinary_depth_{low}_to_{high}"] = round(
                    buffers(high, "ordinary") / buffers(low, "ordinary"), 3)
                compiled[f"xla_step_buffers_over_ordinary_at_depth_{high}"] = round(
                    buffers(high, mode) / buffers(high, "ordinary"), 3)
            goals[f"compiled step buffers growth <= {GOALS['reversible_growth']}"] = (
                compiled[f"xla_step_buffers_growth_depth_{low}_to_{high}"] <= GOALS["reversible_growth"])
        figures["goals"] = goals
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--image", type=int, default=16, help="image side (one channel)")
    parser.add_argument("--patch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per run")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=["xla"],
                        help="execution paths of the train step, each measured in the same run "
                        "(eager: run_eagerly; graph: tf.function; xla: jit_compile=True)")
    parser.add_argument("--jit", action="store_true", help="same as --paths xla (kept for old commands)")
    parser.add_argument("--path", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES),
                        help="training modes, each a row per depth and path (default: all)")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                        help="optimizer of every run (sgd: SGD(1e-3); adam: Adam(1e-3), two slots per weight)")
    parser.add_argument("--plot", default="revvit_memory.png", help="PNG to write ('' to skip)")
    parser.add_argument("--json", help="also write the JSON report to this file (whole or not at all)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--xla-dump", help=argparse.SUPPRESS)
    parser.add_argument("--depth", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=sorted(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    paths = ["xla"] if args.jit else list(dict.fromkeys(args.paths))
    common = ["--batch", str(args.batch), "--dim", str(args.dim), "--heads", str(args.heads),
              "--image", str(args.image), "--patch", str(args.patch), "--steps", str(args.steps),
              "--optimizer", args.optimizer]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    rows, started = [], time.perf_counter()
    for run_path in paths:
        for depth in sorted(args.depths):
            for mode in args.modes:
                with tempfile.TemporaryDirectory() as dump:
                    worker_env, dump_args = env, []
                    if run_path == "xla":  # XLA's buffer assignment of the train step
                        worker_env = {**env, "XLA_FLAGS": f"{env.get('XLA_FLAGS', '')} --xla_dump_to={dump} "
                                      "--xla_dump_hlo_as_text --xla_dump_hlo_module_re=.*one_step_on_data.*"}
                        dump_args = ["--xla-dump", dump]
                    out = subprocess.run(
                        [sys.executable, os.path.abspath(__file__), "--worker", "--path", run_path,
                         "--depth", str(depth), "--mode", mode, *common, *dump_args],
                        capture_output=True, text=True, env=worker_env,
                    )
                if out.returncode != 0:
                    print(out.stderr[-3000:], file=sys.stderr)
                    return 1
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
                r = rows[-1]
                print(json.dumps(r), file=sys.stderr)
                print(f"{run_path:5s} depth {depth:3d} {mode:10s}: step peak {r['train_step_peak_mb']} MB, "
                      f"process peak {r['peak_rss_mb']} MB, {r['images_per_second']} images/s", file=sys.stderr)
    result = {
        "benchmark": "revvit_memory",
        "config": {k: getattr(args, k) for k in ("depths", "batch", "dim", "heads", "image", "patch", "steps",
                                                 "modes", "optimizer")}
        | {"tokens": (args.image // args.patch) ** 2, "paths": paths, "device": "CPU"},
        "memory_measure": "train_step_peak_mb = VmHWM - VmRSS around the full-batch steps (peak reset "
        "via /proc/self/clear_refs after tracing on batches of 1 and 2); peak_rss_mb = process VmHWM",
        "results": rows,
        "summary": {p: summarize(rows, sorted(args.depths), p) for p in paths},
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    write_json(result, args.json)  # before the plot: a plotting error loses no figures
    if args.plot:
        print(f"plot: {write_plot(rows, args.plot)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
