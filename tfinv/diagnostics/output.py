"""Writing a diagnostics report: ``diagnostics.json``, ``summary.png`` and one PNG per layer,
staged beside the destination folder and swapped in whole (`tfinv.files.staged_directory`)."""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

import numpy as np

from tfinv.diagnostics import plot

__all__ = ["json_ready", "layer_image", "summary_image", "write_report"]

#: Entries `write_report` writes into its folder (others already there are carried over).
REPORT_FILES = ("diagnostics.json", "summary.png", "layers")


def json_ready(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and non-finite floats as ``None`` (strict JSON;
    the reports keep ``nonfinite`` counts beside every statistic)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _log10(values) -> np.ndarray:
    values = np.asarray(values, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(values)


def layer_image(path: str, samples: dict[str, np.ndarray], condition_threshold: float) -> np.ndarray:
    """A layer's panels: histograms over the examples of log10 of the local forward and inverse
    Lipschitz constants and of the condition number (threshold in red), and of log-det per dim."""
    forward, inverse = samples["forward"], samples["inverse"]
    panels = [
        plot.histogram_panel(_log10(forward), "log10 Lip forward"),
        plot.histogram_panel(_log10(inverse), "log10 Lip inverse"),
        plot.histogram_panel(_log10(np.asarray(forward) * np.asarray(inverse)), "log10 condition",
                             marker=math.log10(condition_threshold)),
    ]
    if "log_det_per_dim" in samples:
        panels.append(plot.histogram_panel(samples["log_det_per_dim"], "log-det per dim", color=(30, 150, 60)))
    return plot.stack_panels(panels, title=path)


def summary_image(report: dict) -> np.ndarray:
    """Bars of log10 of every layer's largest local condition number, with the threshold."""
    labels = [entry["path"].split("/", 1)[-1] for entry in report["layers"]] or ["(no layers)"]
    values = [entry["condition_number"]["max"] for entry in report["layers"]] or [float("nan")]
    logs = [math.log10(v) if v is not None and v > 0 else float("nan") for v in values]
    threshold = math.log10(report["thresholds"]["condition_number"])
    return plot.bar_chart(labels, logs, f"{report['model']['name']}: log10 max condition number per layer",
                          threshold=threshold)


def _file_name(index: int, path: str) -> str:
    return f"{index:03d}_{re.sub(r'[^A-Za-z0-9_.-]+', '-', path)}.png"


def write_report(report: dict, folder: str | os.PathLike) -> list[str]:
    """Writes ``folder/diagnostics.json``, ``folder/summary.png`` and ``folder/layers/NNN_PATH.png``.

    The folder is staged beside ``folder`` and replaces it in one step: a reader sees the previous
    report or the new one, whole. Entries of an existing ``folder`` that are not the report's are
    kept. Returns the paths written.

    Raises:
        ValueError: ``folder`` is a file or cannot be created (checked before anything is written).
    """
    import tensorflow as tf

    from tfinv import files

    folder = files.check_output_directory(folder, "diagnostics folder")
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    keep = tuple(e for e in sorted(os.listdir(folder)) if e not in REPORT_FILES) if os.path.isdir(folder) else ()
    samples = report.get("_samples", {})
    threshold = report["thresholds"]["condition_number"]
    written = ["diagnostics.json", "summary.png"]
    with files.staged_directory(folder, keep=keep) as staging:
        layers = os.path.join(staging, "layers")
        os.makedirs(layers)
        for index, entry in enumerate(report["layers"]):
            if entry["path"] in samples:
                name = _file_name(index, entry["path"])
                image = layer_image(entry["path"], samples[entry["path"]], threshold)
                files.write_bytes_atomic(os.path.join(layers, name), tf.io.encode_png(image).numpy())
                entry["plot"] = f"layers/{name}"
                written.append(f"layers/{name}")
        files.write_bytes_atomic(os.path.join(staging, "summary.png"),
                                 tf.io.encode_png(summary_image(report)).numpy())
        with files.atomic_write(os.path.join(staging, "diagnostics.json")) as f:
            json.dump(json_ready(report), f, indent=2, allow_nan=False)
            f.write("\n")
    return [os.path.join(folder, name) for name in written]
