"""Helpers shared by the benchmark scripts (run as ``python benchmarks/NAME.py``, which puts this
folder on ``sys.path``): stderr logging, a stdout that carries only the final JSON, timing, the
JSON report and files written whole, the Glow training options, and stopping a server process."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import IO, Any, Callable


def log(message: str) -> None:
    """Progress on stderr (stdout is reserved for the JSON result)."""
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def stdout_to_stderr():
    """Routes fd 1 (Python and C-level writes, e.g. from tf2onnx, TF or Keras) to stderr, so the
    real stdout carries only the final JSON. Yields a writer to the original stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    real = os.fdopen(os.dup(saved), "w")
    try:
        yield real
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        real.close()


def timed(run: Callable[[Any], Any], value: Any, n: int) -> list[float]:
    """Wall times of ``n`` calls ``run(value)``, in milliseconds (no warm-up: the caller's)."""
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        run(value)
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def save_calibration_plot(curves: dict, path: str, title: str = "Calibration of the credible intervals") -> str:
    """Writes a PNG of nominal vs empirical coverage, one line per entry of ``curves``
    (``label -> tfinv.inverse_problems.calibration(...)`` result), with the diagonal of a
    calibrated posterior; whole or not at all (`tfinv.files.write_bytes_atomic`). Needs matplotlib
    (the ``benchmarks`` extra). Returns the absolute path."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfinv.files import write_bytes_atomic

    figure, axes = plt.subplots(figsize=(4.2, 4.2), dpi=100)
    axes.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="calibrated")
    for label, result in curves.items():
        axes.plot(result["levels"], result["coverage"], marker="o", markersize=3,
                  label=f"{label} (error {result['error']:.3f})")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("nominal level q of the central credible interval")
    axes.set_ylabel("empirical coverage (fraction of true pixels inside)")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, loc="upper left")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    write_bytes_atomic(path, buffer.getvalue())
    return os.path.abspath(path)


def trainable_parameters(model) -> int:
    """Number of trainable parameters (fixed operator matrices such as an FBP layer's excluded)."""
    return int(sum(int(np_prod(w.shape)) for w in model.trainable_weights))


def np_prod(shape) -> int:
    result = 1
    for s in shape:
        result *= int(s)
    return result


def write_json(report: Any, path: str | None = None, stream: IO[str] | None = None, indent: int = 2,
               **dumps_kwargs: Any) -> str:
    """``report`` as JSON text: printed to ``stream`` (default stdout) and, when ``path`` is given,
    written there whole or not at all (`tfinv.files.atomic_write`; the folder is created).
    Returns the text."""
    text = json.dumps(report, indent=indent, **dumps_kwargs)
    if path:
        from tfinv.files import atomic_write

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_write(path) as f:
            f.write(text + "\n")
    print(text, file=sys.stdout if stream is None else stream, flush=True)
    return text


def write_file_whole(path: str, data: bytes) -> str:
    """Writes ``data`` to ``path`` whole or not at all (folder created); returns the absolute path."""
    from tfinv.files import write_bytes_atomic

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_bytes_atomic(path, data)
    return os.path.abspath(path)


def add_glow_training_arguments(parser: argparse.ArgumentParser, epochs: int = 5) -> argparse.ArgumentParser:
    """The options of the Glow-on-digits benchmarks: ``--epochs --batch-size --levels
    --steps-per-level --hidden-channels --lr --seed`` (defaults: the CLI's Glow)."""
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--steps-per-level", type=int, default=4)
    parser.add_argument("--hidden-channels", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def stop_process(process: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM (a server's graceful shutdown), then SIGKILL if it is still running after ``grace`` s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
