"""Benchmark: load on the ONNX server (``python -m tfinv.serving``) over loopback.

Subject: the Glow digits model, ``Glow((8, 8, 1), levels=2, steps_per_level=4,
hidden_channels=64)``, ActNorm initialised on a uniform batch in the data range and weights
perturbed by ``perturb_weights(model, 0.05)``, exported with `tfinv.export.export_flow` (or an
existing export given with ``--export-dir``).

The server runs as a subprocess on a free ``127.0.0.1`` port with its defaults. For each
signature, ``sample`` (``n`` images drawn from a per-request seed) and ``inverse`` (a batch of
``n`` latents), ``--clients`` threads each hold one `tfinv.serving.Client` (own connection) and
send ``--requests`` requests back to back after ``--warmup`` untimed ones. Latency is the
client-side wall time of one call (``time.perf_counter``: JSON encoding, HTTP, server, decoding).
Throughput is completed requests / wall time of the phase (first send to last answer); images/s
multiplies by ``n``. The run is bounded in count (``clients * requests`` per phase) and in time
(``--time-limit`` seconds per phase: threads stop sending at the deadline; ``not_sent`` counts
what was skipped). Client and server share the machine's cores.

Stdout is one JSON object: per signature ``requests``, ``errors`` (with up to 3 messages),
``not_sent``, ``wall_s``, ``requests_per_s``, ``images_per_s``, ``latency_ms``
(p50/p90/p99/max/mean), plus the configuration, provider and server exit status. Progress goes
to stderr. Timings are for reading, never asserted in tests.

Run: ``python benchmarks/serve_load.py [--clients 8] [--requests 50] [--n 16]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402
from _common import log, stop_process  # noqa: E402


def export_model(out_dir: str, hidden: int, steps: int, levels: int) -> dict[str, Any]:
    import tensorflow as tf

    from tfinv.export import export_flow
    from tfinv.models import Glow
    from tfinv.testing.contract import perturb_weights

    model = Glow((8, 8, 1), levels=levels, steps_per_level=steps, hidden_channels=hidden)
    model.initialize(tf.random.stateless_uniform((64, 8, 8, 1), [1, 2], 0.5, 16.5))
    perturb_weights(model, 0.05)
    return export_flow(model, out_dir, name="digits", overwrite=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server_process(export_dir: str, log_path: str, timeout: float = 120.0):
    """The server on a free loopback port: yields ``(process, url)``; SIGTERM on exit."""
    import httpx

    port = free_port()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tfinv.serving", "--export-dir", export_dir, "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}; see {log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not healthy after {timeout} s; see {log_path}")
            time.sleep(0.1)
        yield process, url
    finally:
        stop_process(process)


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def run_phase(url: str, name: str, call: Callable[[Any, int, int], Any], clients: int, requests: int,
              warmup: int, time_limit: float, images_per_request: int) -> dict[str, Any]:
    """``clients`` threads x ``requests`` calls of ``call(client, thread, i)``; latency stats."""
    from tfinv.serving import Client

    latencies: list[float] = []
    errors: list[str] = []
    not_sent = [0]
    lock = threading.Lock()
    deadline = [0.0]
    started = [0.0]

    def release() -> None:  # runs once, before any thread passes the barrier
        deadline[0] = time.monotonic() + time_limit
        started[0] = time.perf_counter()

    ready = threading.Barrier(clients + 1, action=release)

    def worker(index: int) -> None:
        with Client(url, model="digits", timeout=60) as client:
            for i in range(warmup):
                with contextlib.suppress(Exception):
                    call(client, index, -1 - i)
            ready.wait()
            mine, failed = [], []
            for i in range(requests):
                if time.monotonic() > deadline[0]:
                    with lock:
                        not_sent[0] += requests - i
                    break
                start = time.perf_counter()
                try:
                    call(client, index, i)
                    mine.append(time.perf_counter() - start)
                except Exception as err:  # counted and reported, the phase goes on
                    failed.append(f"{type(err).__name__}: {err}")
            with lock:
                latencies.extend(mine)
                errors.extend(failed)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    for t in threads:
        t.join(timeout=time_limit + 120)
    wall = time.perf_counter() - started[0]
    stuck = sum(t.is_alive() for t in threads)
    ms = [1000 * v for v in latencies]
    log(f"{name}: {len(latencies)} ok, {len(errors)} errors in {wall:.2f} s")
    return {
        "requests": clients * requests,
        "completed": len(latencies),
        "errors": len(errors),
        "error_examples": errors[:3],
        "not_sent": not_sent[0],
        "stuck_clients": stuck,
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 1),
        "images_per_s": round(len(latencies) * images_per_request / wall, 1),
        "latency_ms": {
            "p50": percentile(ms, 50), "p90": percentile(ms, 90), "p99": percentile(ms, 99),
            "max": max(ms) if ms else None, "mean": float(np.mean(ms)) if ms else None,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (threads)")
    parser.add_argument("--requests", type=int, default=50, help="requests per client and signature")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per client first")
    parser.add_argument("--n", type=int, default=16, help="images per request (sample n, inverse batch)")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per phase at most")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--export-dir", default=None, help="serve this existing export instead")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="serve_load-") as tmp:
        export_dir = args.export_dir
        if export_dir is None:
            export_dir = os.path.join(tmp, "export")
            log("exporting the Glow ...")
            export_model(export_dir, args.hidden, args.steps, args.levels)
        with open(os.path.join(export_dir, "manifest.json")) as f:
            manifest = json.load(f)
        latent_shape = tuple(manifest["latent_shape"])
        z = np.random.default_rng(0).standard_normal((args.n, *latent_shape)).astype(np.float32) * 0.7
        log_path = os.path.join(tmp, "server.log")
        with server_process(export_dir, log_path) as (process, url):
            import httpx

            health = httpx.get(f"{url}/healthz").json()
            phases = {
                "sample": run_phase(url, "sample", lambda c, k, i: c.sample(args.n, seed=k * 100_000 + i,
                                                                             temperature=0.7),
                                    args.clients, args.requests, args.warmup, args.time_limit, args.n),
                "inverse": run_phase(url, "inverse", lambda c, k, i: c.inverse(z),
                                     args.clients, args.requests, args.warmup, args.time_limit, args.n),
            }
        server_log = open(log_path).read()
    result = {
        "benchmark": "serve_load",
        "server": "tfinv.serving (Starlette + uvicorn, onnxruntime)",
        "provider": health.get("provider"),
        "model": {"class": manifest.get("model_class"), "data_shape": manifest["data_shape"],
                  "latent_shape": manifest["latent_shape"],
                  "hidden_channels": args.hidden, "steps_per_level": args.steps, "levels": args.levels},
        "config": {"clients": args.clients, "requests_per_client": args.requests, "warmup_per_client": args.warmup,
                   "images_per_request": args.n, "time_limit_s": args.time_limit, "transport": "REST over loopback"},
        "results": phases,
        "total_errors": sum(p["errors"] for p in phases.values()),
        "server_exit_code": process.returncode,
        "server_shutdown_clean": process.returncode == 0 and "Finished server process" in server_log,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    print(json.dumps(result, indent=2))
    return 0 if result["total_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
