"""Benchmark: one process against a two-worker `MultiWorkerMirroredStrategy` job on loopback, in
float32 and mixed_bfloat16.

Every run is the same ``tfinv train`` command line (a digits Glow, the same global batches, Adam,
seed), as a subprocess: ``single`` (no strategy) or ``2 workers`` (`tfinv.testing.cluster`:
two processes on 127.0.0.1, ``--strategy multi_worker``, the data sharded between them). Reported
per run: training throughput (images per second of ``fit``, first epoch's tracing included, so
use several epochs), test bits/dim, and the largest absolute weight difference of the two-worker
job from the single process of the same precision.

On this machine the two workers share two CPU cores with each other (and the all-reduce goes
through gRPC on loopback), so the two-worker job is expected to be slower than one process: the
point is that the same command runs unchanged on a cluster and trains the same model. bf16 vs
float32 measures Keras's ``mixed_bfloat16`` policy on this CPU (it reports AVX512_BF16).

Run: ``python benchmarks/multi_worker.py [--epochs 4] [--max-train 1024] [--out FILE]``; stdout:
one JSON object (also written to ``--out``, whole or not at all).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

from _common import log, write_json

REPO = pathlib.Path(__file__).resolve().parents[1]


def _command(args: argparse.Namespace) -> list[str]:
    return ["train", "--model", "glow", "--dataset", "digits", "--levels", str(args.levels),
            "--steps-per-level", str(args.steps_per_level), "--hidden-channels", str(args.hidden_channels),
            "--max-train", str(args.max_train), "--batch-size", str(args.batch_size), "--epochs", str(args.epochs),
            "--num-samples", "4", "--verbose", "0", "--seed", "0"]


def _tfinv() -> list[str]:
    script = pathlib.Path(sys.executable).with_name("tfinv")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tfinv.cli"]


def _run(name: str, command: list[str], workers: int, work: pathlib.Path, timeout: float) -> dict:
    from tfinv.testing.cluster import LocalCluster

    out = work / name
    log(f"{name}: {' '.join(command[:2])} ... ({workers} process(es))")
    started = time.perf_counter()
    if workers == 1:
        with open(work / f"{name}.log", "wb") as f:
            code = subprocess.run([*_tfinv(), *command, "--out", str(out)], stdout=f, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
        if code != 0:
            raise RuntimeError(f"{name}: exit {code}; see {work / f'{name}.log'}")
    else:
        with LocalCluster([*command, "--strategy", "multi_worker", "--out", str(out)], workers=workers,
                          log_dir=work / f"{name}-logs") as job:
            codes = job.wait(timeout)
            if codes != [0] * workers:
                raise RuntimeError(f"{name}: exit codes {codes}; see {work / f'{name}-logs'}")
    metrics = json.loads((out / "metrics.json").read_text())
    images = metrics["num_train"] * metrics["epochs"]
    return {"processes": workers, "fit_seconds": metrics["fit_seconds"],
            "wall_seconds": round(time.perf_counter() - started, 2),
            "images_per_second": round(images / metrics["fit_seconds"], 1),
            "test_bits_per_dim": metrics["test_bits_per_dim"], "num_parameters": metrics["num_parameters"],
            "model": str(out / "model.keras")}


def _max_difference(a: str, b: str) -> float:
    import numpy as np

    import tfinv

    wa, wb = tfinv.load_model(a).get_weights(), tfinv.load_model(b).get_weights()
    return max(float(np.max(np.abs(x - y))) for x, y in zip(wa, wb))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max-train", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--steps-per-level", type=int, default=4)
    parser.add_argument("--hidden-channels", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "figures" / "multi_worker.json"))
    args = parser.parse_args()

    load_before = round(os.getloadavg()[0], 2)
    work = pathlib.Path(tempfile.mkdtemp(prefix="multi-worker-"))
    base = _command(args)
    runs = {}
    for precision, extra in (("float32", []), ("bf16", ["--mixed-precision", "bf16"])):
        runs[f"single_{precision}"] = _run(f"single_{precision}", [*base, *extra], 1, work, args.timeout)
        runs[f"two_workers_{precision}"] = _run(f"two_workers_{precision}", [*base, *extra], 2, work, args.timeout)
    for precision in ("float32", "bf16"):
        runs[f"two_workers_{precision}"]["max_weight_difference_vs_single"] = _max_difference(
            runs[f"two_workers_{precision}"]["model"], runs[f"single_{precision}"]["model"])
    ratios = {
        "two_workers_over_single_float32": round(runs["two_workers_float32"]["images_per_second"]
                                                 / runs["single_float32"]["images_per_second"], 3),
        "two_workers_over_single_bf16": round(runs["two_workers_bf16"]["images_per_second"]
                                              / runs["single_bf16"]["images_per_second"], 3),
        "bf16_over_float32_single": round(runs["single_bf16"]["images_per_second"]
                                          / runs["single_float32"]["images_per_second"], 3),
    }
    for run in runs.values():
        run.pop("model")
    result = {
        "benchmark": "multi_worker",
        "command": "tfinv " + " ".join(base),
        "runs": runs,
        "throughput_ratios": ratios,
        "config": {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
                   # the machine is shared: its 1-minute load average before and after
                   "load_average": [load_before, round(os.getloadavg()[0], 2)]},
    }
    write_json(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
