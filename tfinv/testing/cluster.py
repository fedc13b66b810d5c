"""A multi-worker job on one machine: worker processes on 127.0.0.1, for tests and benchmarks.

`LocalCluster` starts ``workers`` copies of a command (by default ``tfinv train ... --strategy
multi_worker``), each with the ``TF_CONFIG`` that `tf.distribute.MultiWorkerMirroredStrategy`
reads: the same cluster of ``127.0.0.1:PORT`` addresses (free ports picked once, so a restarted
worker rejoins the same cluster) and its own task index. Every wait is bounded; every process is
stopped by its PID when the block ends, whatever happened.

A two-worker ``tfinv train`` job: ``LocalCluster(["train", ..., "--strategy", "multi_worker",
"--out", DIR], workers=2, log_dir=LOGS)`` (see ``tests/test_multi_worker.py``). Any program can be
the worker; here each prints the task ``TF_CONFIG`` gave it.

Example::

    import sys, tempfile
    from tfinv.testing.cluster import LocalCluster

    show_task = "import json, os; print(json.loads(os.environ['TF_CONFIG'])['task'])"
    with LocalCluster([], workers=2, log_dir=tempfile.mkdtemp(), program=[sys.executable, "-c", show_task]) as job:
        assert job.wait(timeout=60) == [0, 0]
        assert "'index': 1" in job.log(1)
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from typing import Mapping, Sequence

__all__ = ["LocalCluster", "free_ports", "tf_config"]


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 now (bound together, then released)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports: Sequence[int], index: int) -> str:
    """The ``TF_CONFIG`` of worker ``index`` of a cluster of workers on 127.0.0.1 ``ports``."""
    if not 0 <= index < len(ports):
        raise ValueError(f"expected a worker index in [0, {len(ports)}), got {index}")
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": int(index)}})


class LocalCluster:
    """``workers`` processes of one multi-worker job on this machine (worker 0 is the chief).

    Args:
        args: arguments after the program: for the default program, a ``tfinv`` command line
            (``["train", ..., "--strategy", "multi_worker"]``).
        workers: number of worker processes (>= 2).
        log_dir: folder of the workers' logs ``worker-I.log`` (stdout and stderr, appended).
        program: the command before ``args`` (default: the ``tfinv`` command of this interpreter's
            environment).
        env: extra environment variables for every worker.
    """

    def __init__(self, args: Sequence[str], *, workers: int = 2, log_dir: str | os.PathLike,
                 program: Sequence[str] | None = None, env: Mapping[str, str] | None = None):
        if int(workers) < 2:
            raise ValueError(f"expected workers >= 2 for a multi-worker job, got {workers}")
        self.args = [str(a) for a in args]
        if program is None:
            script = pathlib.Path(sys.executable).with_name("tfinv")
            program = [str(script)] if script.exists() else [sys.executable, "-m", "tfinv.cli"]
        self.program = list(program)
        self.ports = free_ports(int(workers))
        self.log_dir = pathlib.Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
        self.env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.env.update(env or {})
        self.processes: list[subprocess.Popen | None] = [None] * int(workers)

    @property
    def workers(self) -> int:
        return len(self.ports)

    def log(self, index: int) -> str:
        """Worker ``index``'s log so far."""
        path = self.log_dir / f"worker-{index}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, index: int | None = None, args: Sequence[str] | None = None) -> "LocalCluster":
        """Starts worker ``index`` (default: every worker), with ``args`` instead of the job's
        (e.g. the same command plus ``--resume`` after a failure)."""
        indices = range(self.workers) if index is None else [int(index)]
        for i in indices:
            if self.processes[i] is not None and self.processes[i].poll() is None:
                raise RuntimeError(f"worker {i} is already running (pid {self.processes[i].pid})")
            env = dict(self.env, TF_CONFIG=tf_config(self.ports, i))
            with open(self.log_dir / f"worker-{i}.log", "ab") as log:
                self.processes[i] = subprocess.Popen(
                    [*self.program, *(self.args if args is None else [str(a) for a in args])],
                    stdout=log, stderr=subprocess.STDOUT, env=env)
        return self

    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Sends ``sig`` (default SIGKILL) to worker ``index`` and reaps it."""
        process = self.processes[int(index)]
        if process is None or process.poll() is not None:
            raise RuntimeError(f"worker {index} is not running")
        process.send_signal(sig)
        process.wait(60)

    def wait(self, timeout: float, indices: Sequence[int] | None = None) -> list[int]:
        """Waits for the workers (default: all) to exit; returns their exit codes.

        Raises:
            TimeoutError: a worker still runs after ``timeout`` seconds (its log tail included).
        """
        deadline = time.monotonic() + float(timeout)
        codes = []
        for i in (range(self.workers) if indices is None else indices):
            process = self.processes[i]
            if process is None:
                raise RuntimeError(f"worker {i} was never started")
            try:
                codes.append(process.wait(max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                raise TimeoutError(f"worker {i} still runs after {timeout} s; log tail:\n"
                                   f"{self.log(i)[-3000:]}") from None
        return codes

    def stop(self) -> None:
        """Terminates every worker still running (SIGTERM, then SIGKILL after 10 s)."""
        for process in self.processes:
            if process is not None and process.poll() is None:
                process.terminate()
        for process in self.processes:
            if process is not None and process.poll() is None:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
