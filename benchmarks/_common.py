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
