"""The last step of ``make demo``: serve an export and fetch a sample through the client.

``python -m tfinv.serving.demo --export-dir DIR --out served.png`` starts ``tfinv serve`` on a free
loopback port (port 0, reported by the server), waits for the model, draws samples through `tfinv.serving.Client` (the same client
that talks to TF Serving), checks that ``forward`` inverts them, writes a PNG grid, and shuts the
server down gracefully (SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import signal
import queue
import re
import subprocess
import sys
import threading
from typing import Sequence

import numpy as np


def _start_server(export_dir: str, timeout: float) -> tuple[subprocess.Popen, str]:
    """Starts ``tfinv serve`` on port 0 (the OS picks a free port: no bind-release-reuse race) and
    returns ``(process, url)`` from the line it prints once listening, waiting at most ``timeout`` s.
    The rest of its output is passed through on a thread, so a full pipe never blocks it."""
    from tfinv.serving.onnx_server import LISTENING_MESSAGE

    pattern = re.compile(re.escape(LISTENING_MESSAGE).replace(r"\{host\}", r"(\S+)").replace(r"\{port\}", r"(\d+)"))
    server = subprocess.Popen([sys.executable, "-m", "tfinv.serving.onnx_server", "--export-dir", str(export_dir),
                               "--port", "0", "--log-level", "warning"], stdout=subprocess.PIPE, text=True)
    found: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in server.stdout:
            match = pattern.search(line)
            if match:
                found.put(f"http://{match.group(1)}:{match.group(2)}")
            else:
                sys.stdout.write(line)
        found.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        url = found.get(timeout=timeout)
    except queue.Empty:
        url = None
    if url is None:
        server.kill()
        server.wait(30)
        raise RuntimeError(f"the server did not report a listening port within {timeout} s")
    return server, url


def serve_and_sample(export_dir: str, out: str, n: int = 64, seed: int = 0, temperature: float = 0.7,
                     timeout: float = 120.0) -> dict:
    """Runs the server subprocess, samples through the client; returns a summary dict."""
    from tfinv.data import save_image_grid
    from tfinv.serving.client import Client

    manifest = json.loads((pathlib.Path(export_dir) / "manifest.json").read_text())
    name = manifest["name"]
    num_levels = manifest.get("model_config", {}).get("num_levels") or 17
    server, url = _start_server(export_dir, timeout)
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
