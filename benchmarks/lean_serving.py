"""Benchmark: the lean ONNX server (no TensorFlow) against today's server and the full install.

Subject: the digits Glow of ``serve_load.py`` (``Glow((8, 8, 1), levels=2, steps_per_level=4,
hidden_channels=64)``, ActNorm initialised, weights perturbed), exported once by the full package.

Servers (each a subprocess on loopback, same export, same flags):

* ``lean``: ``tfinv-serve`` in a new venv holding only ``requirements-onnx.txt`` and tfinv
  installed with ``--no-deps`` (built as ``tests/test_serving_lean.py`` does, from local wheels);
* ``lean_tfinv_command``: ``tfinv serve`` (the ``tfinv`` console command) in the same lean venv;
* ``full``: this tree's server in the full environment (``python -m tfinv.serving``);
* ``baseline``: today's server, ``python -m tfinv.serving.onnx_server`` of ``--baseline-root``
  (default ``/work/main``) with that tree's venv, if present (it imports TensorFlow at start-up).

Measured per server: start-up (process start to the first 200 on ``/healthz``, polled every
10 ms; median of ``--starts`` starts) in wall seconds and in the CPU seconds (user + system, from
``/proc/PID/stat``) the server used to get there — the figure a loaded machine does not inflate, resident memory (``VmRSS`` after start-up and ``VmHWM``
after the latency runs, from ``/proc``), and request latency (wall time of one HTTP request from
a keep-alive ``httpx`` client, ``--requests`` timed after 5 untimed) of ``sample`` (``n`` = 1 and
64) and ``forward`` (batch 1 and 64); p50/p90 in ms. Install sizes: the lean venv and the full
environment (every site-packages folder on the full interpreter's path, plus its prefix), in MB.
Client and server share the machine's 2 cores. Stdout: one JSON object.

Run: ``python benchmarks/lean_serving.py [--starts 3] [--requests 30]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib.resources  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from _common import log, stdout_to_stderr, stop_process  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
WHEELS = pathlib.Path(os.environ.get("TFINV_TEST_WHEELS", pathlib.Path.home() / ".cache" / "tfinv-test-wheels"))


def export_model(out_dir: pathlib.Path) -> None:
    import tensorflow as tf

    from tfinv.export import export_flow
    from tfinv.models import Glow
    from tfinv.testing.contract import perturb_weights

    model = Glow((8, 8, 1), levels=2, steps_per_level=4, hidden_channels=64)
    model.initialize(tf.random.stateless_uniform((64, 8, 8, 1), [1, 2], 0.5, 16.5))
    perturb_weights(model, 0.05)
    export_flow(model, out_dir, name="digits", overwrite=True)


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, capture_output=True, timeout=600)


def build_lean_venv(venv: pathlib.Path, work: pathlib.Path) -> pathlib.Path:
    """A venv with requirements-onnx.txt and tfinv --no-deps (from local wheels)."""
    if (venv / "bin" / "tfinv-serve").exists():
        return venv
    requirements = work / "requirements-onnx.txt"
    requirements.write_text(importlib.resources.files("tfinv.serving").joinpath("requirements-onnx.txt").read_text())
    _pip("download", "-q", "-d", str(WHEELS), "-r", str(requirements))
    _pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work / "dist"), str(REPO))
    (wheel,) = (work / "dist").glob("tfinv-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    _pip("--python", python, "install", "-q", "--no-index", "--find-links", str(WHEELS), "-r", str(requirements))
    _pip("--python", python, "install", "-q", "--no-deps", str(wheel))
    return venv


def du_mb(*paths: pathlib.Path) -> float:
    total, seen = 0, set()
    for root in paths:
        for dirpath, _, files in os.walk(root):
            for name in files:
                with contextlib.suppress(OSError):
                    st = os.lstat(os.path.join(dirpath, name))
                    if (st.st_dev, st.st_ino) not in seen:
                        seen.add((st.st_dev, st.st_ino))
                        total += st.st_size
    return round(total / 2**20, 1)


def full_install_paths() -> list[pathlib.Path]:
    """The full environment: this interpreter's prefix and every site-packages folder on its path."""
    paths = [pathlib.Path(sys.prefix)]
    for entry in sys.path:
        p = pathlib.Path(entry)
        if p.name == "site-packages" and p.is_dir() and not any(p.is_relative_to(q) for q in paths):
            paths.append(p)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_kb(pid: int, key: str) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@contextlib.contextmanager
def started(command: list[str], env: dict[str, str], log_path: pathlib.Path):
    """Starts ``command`` (its ``{port}`` filled with a free port) and yields ``(process, url,
    seconds to the first 200 on /healthz)``."""
    import httpx

    port = free_port()
    args = [a.format(port=port) for a in command]
    with open(log_path, "ab") as out:
        start = time.perf_counter()
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=1) as http:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{args[:3]} exited with {process.returncode}; see {log_path}")
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(f"{url}/healthz").status_code == 200:
                        break
                if time.perf_counter() - start > 120:
                    raise RuntimeError(f"not healthy after 120 s; see {log_path}")
                time.sleep(0.01)
        yield process, url, time.perf_counter() - start
    finally:
        stop_process(process)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (``/proc/PID/stat``)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latencies(url: str, requests: int) -> dict[str, dict[str, float]]:
    import httpx

    rng = np.random.default_rng(0)
    x64 = rng.uniform(0.5, 16.5, (64, 8, 8, 1)).round(3).tolist()
    bodies = {
        "sample_n1": {"signature_name": "sample", "inputs": {"n": 1, "seed": 1, "temperature": 0.7}},
        "sample_n64": {"signature_name": "sample", "inputs": {"n": 64, "seed": 1, "temperature": 0.7}},
        "forward_b1": {"signature_name": "forward", "inputs": {"x": x64[:1]}},
        "forward_b64": {"signature_name": "forward", "inputs": {"x": x64}},
    }
    result = {}
    with httpx.Client(base_url=url, timeout=60) as http:
        for key, body in bodies.items():
            content = json.dumps(body).encode()
            times = []
            for i in range(5 + requests):
                start = time.perf_counter()
                response = http.post("/v1/models/digits:predict", content=content,
                                     headers={"Content-Type": "application/json"})
                elapsed = (time.perf_counter() - start) * 1e3
                if response.status_code != 200:
                    raise RuntimeError(f"{key}: HTTP {response.status_code}: {response.text[:200]}")
                if i >= 5:
                    times.append(elapsed)
            result[key] = {"p50_ms": round(float(np.percentile(times, 50)), 2),
                           "p90_ms": round(float(np.percentile(times, 90)), 2)}
    return result


def measure(name: str, command: list[str], env: dict[str, str], starts: int, requests: int,
            log_path: pathlib.Path) -> dict:
    log(f"{name}: {' '.join(command[:4])} ...")
    times, cpu, rss_start, result = [], [], [], {}
    for k in range(starts):
        with started(command, env, log_path) as (process, url, seconds):
            times.append(seconds)
            cpu.append(cpu_seconds(process.pid))
            rss_start.append(proc_kb(process.pid, "VmRSS"))
            maps = pathlib.Path(f"/proc/{process.pid}/maps").read_text()
            result["libtensorflow_mapped"] = "libtensorflow" in maps
            if k == starts - 1:
                result["latency"] = latencies(url, requests)
                result["rss_after_requests_mb"] = round(proc_kb(process.pid, "VmRSS") / 1024, 1)
                result["peak_rss_mb"] = round(proc_kb(process.pid, "VmHWM") / 1024, 1)
    result.update(startup_s=round(statistics.median(times), 3), startup_s_all=[round(t, 3) for t in times],
                  startup_cpu_s=round(statistics.median(cpu), 3),
                  rss_after_startup_mb=round(statistics.median(rss_start) / 1024, 1))
    log(f"{name}: start-up {result['startup_s']} s ({result['startup_cpu_s']} CPU s), RSS {result['rss_after_startup_mb']} MB")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export-dir", default=None, help="an existing export (default: export the subject)")
    parser.add_argument("--lean-venv", default=None, help="reuse or create the lean venv here")
    parser.add_argument("--baseline-root", default="/work/main", help="tree whose server is today's")
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()

    load_before = round(os.getloadavg()[0], 2)
    work = pathlib.Path(tempfile.mkdtemp(prefix="lean-serving-"))
    export_dir = pathlib.Path(args.export_dir) if args.export_dir else work / "export"
    if not args.export_dir:
        log("exporting the subject with the full package ...")
        with stdout_to_stderr():
            export_model(export_dir)
    venv = build_lean_venv(pathlib.Path(args.lean_venv) if args.lean_venv else work / "lean-venv", work)
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    clean_env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    flags = ["--export-dir", str(export_dir), "--port", "{port}", "--log-level", "warning"]
    servers = {
        "lean": [str(venv / "bin" / "tfinv-serve"), *flags],
        "lean_tfinv_command": [str(venv / "bin" / "tfinv"), "serve", *flags],
        "full": [sys.executable, "-m", "tfinv.serving", *flags],
    }
    baseline_python = pathlib.Path(args.baseline_root) / ".venv" / "bin" / "python"
    baseline_module = pathlib.Path(args.baseline_root) / "serving" / "onnx_server.py"
    if baseline_python.exists() and baseline_module.exists():
        servers["baseline"] = [str(baseline_python), "-m", "tfinv.serving.onnx_server", *flags]
    results = {name: measure(name, command, clean_env, args.starts, args.requests, work / f"{name}.log")
               for name, command in servers.items()}
    sizes = {"lean_venv_mb": du_mb(venv), "full_environment_mb": du_mb(*full_install_paths())}
    print(json.dumps({
        "benchmark": "lean_serving",
        "subject": "Glow((8, 8, 1), levels=2, steps_per_level=4, hidden_channels=64), ONNX export",
        "servers": {"lean": "tfinv-serve in a venv with requirements-onnx.txt + tfinv --no-deps",
                    "lean_tfinv_command": "tfinv serve (the tfinv console command) in the same lean venv",
                    "full": "python -m tfinv.serving (this tree) in the full environment",
                    "baseline": f"python -m tfinv.serving.onnx_server of {args.baseline_root} (today's server)"},
        "results": results,
        "install_size": sizes,
        "goals": {"rss_mb": 150, "startup_s": 1.0},
        "config": {"starts": args.starts, "requests": args.requests, "python": platform.python_version(),
                   "cpus": os.cpu_count(), "machine": platform.machine(),
                   # The machine is shared: its load (1-minute average) before and after the run.
                   "load_average": [load_before, round(os.getloadavg()[0], 2)]},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
