"""The last step of ``make demo``: serve an export and fetch a sample through the client.

``python -m tfinv.serving.demo --export-dir DIR --out served.png`` starts ``tfinv serve`` on a
loopback port the OS picks (``--port 0``; the server writes the port it obtained to a file),
waits for the model, draws samples through `tfinv.serving.Client` (the same client
that talks to TF Serving), checks that ``forward`` inverts them, writes a PNG grid, and shuts the
server down gracefully (SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
from typing import Sequence

import numpy as np


def start_server(export_dir: str, *args: str, timeout: float = 60.0, log=None) -> tuple[subprocess.Popen, str]:
    """Starts ``python -m tfinv.serving --export-dir DIR --port 0`` (plus ``args``); returns the
    process and its URL once it listens (the port is read from ``--port-file``). Raises
    RuntimeError if the server exits or does not listen within ``timeout`` seconds."""
    port_file = pathlib.Path(tempfile.mkdtemp(prefix="tfinv-serve-")) / "port"
    process = subprocess.Popen([sys.executable, "-m", "tfinv.serving", "--export-dir", str(export_dir),
                                "--port", "0", "--port-file", str(port_file), *args],
                               stdout=log, stderr=subprocess.STDOUT if log is not None else None)
    deadline = time.monotonic() + timeout
    while not port_file.is_file():
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode} before listening")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the server did not listen within {timeout} s")
        time.sleep(0.05)
    port = int(port_file.read_text())
    port_file.unlink()
    port_file.parent.rmdir()
    return process, f"http://127.0.0.1:{port}"


def serve_and_sample(export_dir: str, out: str, n: int = 64, seed: int = 0, temperature: float = 0.7,
                     timeout: float = 120.0) -> dict:
    """Runs the server subprocess, samples through the client; returns a summary dict."""
    from tfinv.data import save_image_grid
    from tfinv.serving.client import Client

    manifest = json.loads((pathlib.Path(export_dir) / "manifest.json").read_text())
    name = manifest["name"]
    num_levels = manifest.get("num_levels") or manifest.get("model_config", {}).get("num_levels") or 17
    server, url = start_server(export_dir, "--log-level", "warning", timeout=timeout)
    try:
        with Client(url, model=name) as client:
            client.wait_until_available(timeout=timeout)
            x, z = client.sample(n, seed=seed, temperature=temperature, return_z=True)
            z_back, _ = client.forward(x)
            round_trip = float(np.max(np.abs(z_back - z)) / max(float(np.max(np.abs(z))), 1.0))
        save_image_grid(x, out, num_levels)
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    return {"model": name, "samples": int(len(x)), "png": str(out), "round_trip_relative_error": round_trip,
            "server_exit_code": code}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfinv.serving.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--export-dir", required=True)
    parser.add_argument("--out", default="served_samples.png")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=0.7)
    args = parser.parse_args(argv)
    summary = serve_and_sample(args.export_dir, args.out, args.n, args.seed, args.temperature)
    print(json.dumps(summary))
    return 0 if summary["server_exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
