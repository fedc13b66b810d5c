"""Benchmark: training memory and throughput of RevViT, reversible backprop vs ordinary autodiff.

For every depth (default 4, 8, 16, 32) and both modes (``memory_efficient=True``: activations
rebuilt in the backward pass; ``False``: stored by autodiff) a *fresh subprocess* builds the same
RevViT (same width, batch and image size), runs Keras training steps (``train_on_batch``, the
graph ``fit`` uses; XLA-compiled with ``--jit``) and reports:

* ``train_step_peak_mb``: the training steps' memory, ``VmHWM - VmRSS`` of the process. The
  train function is first traced and run on batches of 1 and 2 (Keras then keeps one graph for
  any batch size), ``VmRSS`` is read and the high-water mark ``VmHWM`` reset
  (``/proc/self/clear_refs``); the full-batch steps follow. Model, optimizer state, the traced
  graph and TensorFlow itself are resident before the reset and cancel out; what remains is the
  peak of the activations, gradients and temporaries of a step. TensorFlow's
  ``get_memory_info`` does not work for CPU devices, so this process-level figure stands in for
  the allocator's peak.
* ``peak_rss_mb``: the process's peak resident memory over its whole life (``VmHWM`` before the
  reset, including imports, tracing and warm-up), the coarse figure;
* ``images_per_second``: batch size / median wall time of the timed steps;
  ``images_per_second_best``: over the fastest step (the least disturbed by other processes
  sharing the cores; the throughput goal is judged on it); ``images_per_cpu_second``: over the
  median CPU time of the process (all threads).

Prints one JSON object (configuration, one row per run, a summary against the goals) and writes
a PNG plot of both figures against depth (matplotlib when installed, otherwise a small line plot
drawn with numpy and ``tf.io.encode_png``).

Run: ``python benchmarks/revvit_memory.py [--depths 4 8 16 32] [--batch 64] [--plot revvit_memory.png]``
(~3-4 minutes on 2 CPU cores). Timings are for reading, never asserted in tests.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

MODES = {"reversible": True, "ordinary": False}
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
        memory_efficient=MODES[args.mode],
        image_shape=(args.image, args.image, 1),
    )
    model.compile(
        optimizer=keras.optimizers.SGD(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=args.jit,
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
    return {
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
    }


# ----------------------------------------------------------------------------- plot
_GLYPHS = {  # 3x5 pixel font, rows top to bottom
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001001001001",
    "8": "111101111101111", "9": "111101111001111", " ": "000000000000000", "/": "001001010100100",
    "A": "010101111101101", "B": "110101110101110", "D": "110101101101110", "E": "111100110100111",
    "G": "111100101101111", "H": "101101111101101", "I": "111010010010111", "K": "101101110101101",
    "L": "100100100100111", "M": "101111111101101", "N": "111101101101101", "O": "111101101101111",
    "P": "111101111100100", "R": "110101110101101", "S": "111100111001111", "T": "111010010010010",
    "V": "101101101101010", "Y": "101101010010010", ".": "000000000000010",
}
_COLORS = {"reversible": (31, 119, 180), "ordinary": (255, 127, 14)}


def _text(canvas, x, y, text, scale=2, color=(0, 0, 0)):
    for i, char in enumerate(text.upper()):
        glyph = np.array([int(b) for b in _GLYPHS.get(char, _GLYPHS[" "])], bool).reshape(5, 3)
        block = np.kron(glyph, np.ones((scale, scale), bool))
        x0 = x + i * 4 * scale
        region = canvas[y : y + 5 * scale, x0 : x0 + 3 * scale]
        region[block[: region.shape[0], : region.shape[1]]] = color


def _line(canvas, p, q, color, width=2):
    n = int(max(abs(q[0] - p[0]), abs(q[1] - p[1]))) + 1
    for t in np.linspace(0.0, 1.0, n):
        x, y = int(round(p[0] + t * (q[0] - p[0]))), int(round(p[1] + t * (q[1] - p[1])))
        canvas[max(y - width // 2, 0) : y + width // 2 + 1, max(x - width // 2, 0) : x + width // 2 + 1] = color


def _panel(canvas, left, top, size, title, depths, series):
    """A line plot of ``series[mode] = [value per depth]`` on a log2 depth axis, y from 0."""
    x0, y0, w, h = left + 60, top + 30, size - 80, size - 70
    canvas[y0 : y0 + h + 1, x0] = 0
    canvas[y0 + h, x0 : x0 + w + 1] = 0
    _text(canvas, left + 60, top + 6, title)
    top_value = max(v for values in series.values() for v in values) * 1.1
    for k in range(5):  # y ticks
        value = top_value * k / 4
        y = int(y0 + h - h * k / 4)
        canvas[y, x0 - 5 : x0] = 0
        _text(canvas, left + 2, y - 5, f"{value:.0f}"[:6])
    logs = np.log2(depths)
    xs = [int(x0 + 10 + (w - 20) * (l - logs[0]) / max(logs[-1] - logs[0], 1e-9)) for l in logs]
    for x, d in zip(xs, depths):
        canvas[y0 + h : y0 + h + 5, x] = 0
        _text(canvas, x - 4 * len(str(d)), y0 + h + 8, str(d))
    _text(canvas, x0 + w // 2 - 20, y0 + h + 24, "DEPTH")
    for mode, values in series.items():
        points = [(x, y0 + h - h * v / top_value) for x, v in zip(xs, values)]
        for p, q in zip(points, points[1:]):
            _line(canvas, p, q, _COLORS[mode])
        for x, y in points:
            canvas[int(y) - 3 : int(y) + 4, x - 3 : x + 4] = _COLORS[mode]


def write_plot(rows: list[dict], path: str) -> str:
    """Writes the memory and throughput curves; returns the backend used."""
    depths = sorted({r["depth"] for r in rows})

    def series(key):
        return {m: [next(r[key] for r in rows if r["depth"] == d and r["mode"] == m) for d in depths]
                for m in MODES}

    memory, speed = series("train_step_peak_mb"), series("images_per_second_best")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, data, label in ((axes[0], memory, "training-step peak memory (MB)"),
                                (axes[1], speed, "training throughput, best step (images/s)")):
            for mode, values in data.items():
                ax.plot(depths, values, "o-", label=mode, color=np.array(_COLORS[mode]) / 255)
            ax.set_xscale("log", base=2)
            ax.set_xticks(depths, [str(d) for d in depths])
            ax.set_xlabel("depth (RevViT blocks)")
            ax.set_ylabel(label)
            ax.set_ylim(bottom=0)
            ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        return "matplotlib"
    except ImportError:
        import tensorflow as tf

        size = 360
        canvas = np.full((size + 30, 2 * size, 3), 255, np.uint8)
        _panel(canvas, 0, 0, size, "STEP PEAK MB", depths, memory)
        _panel(canvas, size, 0, size, "IMAGES/S BEST STEP", depths, speed)
        for i, mode in enumerate(MODES):  # legend
            canvas[size + 12 : size + 20, 70 + 200 * i : 90 + 200 * i] = _COLORS[mode]
            _text(canvas, 96 + 200 * i, size + 11, mode)
        with open(path, "wb") as f:
            f.write(tf.io.encode_png(canvas).numpy())
        return "numpy + tf.io.encode_png"


# ----------------------------------------------------------------------------- driver
def summarize(rows: list[dict], depths: list[int]) -> dict:
    def get(depth, mode, key):
        return next(r[key] for r in rows if r["depth"] == depth and r["mode"] == mode)

    low, high = min(depths), max(depths)
    memory_ratio = get(high, "reversible", "train_step_peak_mb") / get(high, "ordinary", "train_step_peak_mb")
    growth = get(high, "reversible", "train_step_peak_mb") / get(low, "reversible", "train_step_peak_mb")
    ordinary_growth = get(high, "ordinary", "train_step_peak_mb") / get(low, "ordinary", "train_step_peak_mb")
    def ratio(key):
        return {str(d): round(get(d, "reversible", key) / get(d, "ordinary", key), 3) for d in depths}

    speed, best_speed, cpu_speed = (ratio("images_per_second"), ratio("images_per_second_best"),
                                    ratio("images_per_cpu_second"))
    return {
        f"step_memory_reversible_over_ordinary_at_depth_{high}": round(memory_ratio, 3),
        f"step_memory_growth_reversible_depth_{low}_to_{high}": round(growth, 3),
        f"step_memory_growth_ordinary_depth_{low}_to_{high}": round(ordinary_growth, 3),
        "throughput_reversible_over_ordinary_best_step": best_speed,
        "throughput_reversible_over_ordinary_median_step": speed,
        "throughput_reversible_over_ordinary_cpu_time": cpu_speed,
        "goals": {
            f"memory ratio <= {GOALS['memory_ratio_at_max_depth']}": memory_ratio <= GOALS["memory_ratio_at_max_depth"],
            f"reversible growth <= {GOALS['reversible_growth']}": growth <= GOALS["reversible_growth"],
            f"throughput ratio (best step) >= {GOALS['throughput_ratio']} at every depth":
                min(best_speed.values()) >= GOALS["throughput_ratio"],
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--image", type=int, default=16, help="image side (one channel)")
    parser.add_argument("--patch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per run")
    parser.add_argument("--jit", action="store_true", help="XLA-compile the train step")
    parser.add_argument("--plot", default="revvit_memory.png", help="PNG to write ('' to skip)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--depth", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=sorted(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    common = ["--batch", str(args.batch), "--dim", str(args.dim), "--heads", str(args.heads),
              "--image", str(args.image), "--patch", str(args.patch), "--steps", str(args.steps)] + (["--jit"] if args.jit else [])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    rows, started = [], time.perf_counter()
    for depth in sorted(args.depths):
        for mode in MODES:
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--worker", "--depth", str(depth), "--mode", mode, *common],
                capture_output=True, text=True, env=env,
            )
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                return 1
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"depth {depth:3d} {mode:10s}: step peak {r['train_step_peak_mb']} MB, "
                  f"process peak {r['peak_rss_mb']} MB, {r['images_per_second']} images/s", file=sys.stderr)
    result = {
        "benchmark": "revvit_memory",
        "config": {k: getattr(args, k) for k in ("depths", "batch", "dim", "heads", "image", "patch", "steps")}
        | {"tokens": (args.image // args.patch) ** 2, "jit_compile": args.jit, "device": "CPU"},
        "memory_measure": "train_step_peak_mb = VmHWM - VmRSS around the full-batch steps (peak reset "
        "via /proc/self/clear_refs after tracing on batches of 1 and 2); peak_rss_mb = process VmHWM",
        "results": rows,
        "summary": summarize(rows, sorted(args.depths)),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    if args.plot:
        result["plot"] = {"path": args.plot, "backend": write_plot(rows, args.plot)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
