"""Helpers shared by the benchmark scripts (run as ``python benchmarks/NAME.py``, which puts this
folder on ``sys.path``): stderr logging, a stdout that carries only the final JSON, and timing."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, Callable


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
