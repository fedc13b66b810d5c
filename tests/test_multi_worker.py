"""Multi-worker training: two `tfinv train --strategy multi_worker` processes on 127.0.0.1.

* Two workers on the same global batches end with the weights of one process (float32 and
  mixed_bfloat16), report the same loss once, and only the chief writes the run folder.
* SIGKILL one worker mid-run: the other stops with a one-line message and exit code 75; both
  restarted with ``--resume`` finish with the weights of the uninterrupted job.

Tolerances: float32 weights within 2e-4 absolute of one process after 12 Adam steps (the
all-reduce sums the two half-batch gradients in another order than one process's batch sum; Adam
normalises steps, so a difference in the last bits of a near-zero gradient moves a weight by up to
~lr); mixed_bfloat16 within 2e-2 (bf16's 8-bit mantissa in the forward pass, same argument).
The resumed job against the uninterrupted one: 1e-6 (the same collective order both times).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

import tfinv
from tfinv import cli
from tfinv.testing.cluster import LocalCluster

# 128 images in global batches of 32: 4 steps per epoch, 3 epochs.
ARGS = ["train", "--model", "glow", "--dataset", "digits", "--levels", "1", "--steps-per-level", "1",
        "--hidden-channels", "8", "--max-train", "128", "--max-test", "32", "--batch-size", "32",
        "--epochs", "3", "--num-samples", "4", "--verbose", "0", "--seed", "3"]
TIMEOUT = 600  # seconds for a whole job (two workers sharing two cores)


def _weights(path):
    return tfinv.load_model(str(path)).get_weights()


def _max_difference(a, b):
    assert len(a) == len(b)
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


PRECISIONS = {"float32": (), "bf16": ("--mixed-precision", "bf16")}


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """``{precision: (job folder, job's TMPDIR, single-process folder)}``: the two-worker jobs of
    both precisions run at once (their all-reduces wait on each other's loopback round trips, so
    they overlap well), and the single-process runs in this process meanwhile."""
    tmp = tmp_path_factory.mktemp("multi_worker")
    clusters, result = {}, {}
    try:
        for precision, extra in PRECISIONS.items():
            out, scratch = tmp / f"job-{precision}", tmp / f"tmp-{precision}"
            scratch.mkdir()
            clusters[precision] = LocalCluster([*ARGS, *extra, "--strategy", "multi_worker", "--out", str(out)],
                                               workers=2, log_dir=tmp / f"logs-{precision}",
                                               env={"TMPDIR": str(scratch)}).start()
            result[precision] = (out, scratch, tmp / f"single-{precision}")
        for precision, extra in PRECISIONS.items():
            assert cli.main([*ARGS, *extra, "--out", str(result[precision][2])]) == 0
        for precision, job in clusters.items():
            codes = job.wait(TIMEOUT)
            assert codes == [0, 0], f"{precision}: exit codes {codes}\n{job.log(0)[-3000:]}\n{job.log(1)[-3000:]}"
    finally:
        for job in clusters.values():
            job.stop()
    return result


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_two_workers_end_with_the_weights_of_one_process(jobs, precision):
    job, scratch, single = jobs[precision]
    tolerance = 2e-4 if precision == "float32" else 2e-2
    difference = _max_difference(_weights(job / "model.keras"), _weights(single / "model.keras"))
    assert difference <= tolerance, f"{precision}: multi-worker vs one process differ by {difference}"
    # The loss is reported once per epoch and at the scale of one process's (not x workers).
    history_job = json.loads((job / "metrics.json").read_text())["history"]
    history_single = json.loads((single / "metrics.json").read_text())["history"]
    assert len(history_job["loss"]) == len(history_single["loss"]) == 3
    np.testing.assert_allclose(history_job["loss"], history_single["loss"], rtol=1e-3 if precision == "bf16" else 1e-5)
    assert history_single["loss"][-1] < history_single["loss"][0]  # it trained: the weights moved
    # Only the chief wrote the run folder, and nothing was left behind by the other worker.
    assert sorted(os.listdir(job)) == sorted(cli.RUN_FILES), os.listdir(job)
    assert os.listdir(scratch) == [], os.listdir(scratch)


def test_a_killed_worker_is_restarted_and_the_job_ends_as_if_uninterrupted(jobs, tmp_path):
    reference = jobs["float32"][0]
    out, logs = tmp_path / "job", tmp_path / "logs"
    metadata = out / cli.BACKUP_DIR / "state" / "training_metadata.json"
    command = [*ARGS, "--strategy", "multi_worker", "--out", str(out)]
    with LocalCluster(command, workers=2, log_dir=logs) as job:
        deadline = time.monotonic() + TIMEOUT
        while not metadata.exists():  # the chief's backup of epoch 1
            assert time.monotonic() < deadline, f"no backup after {TIMEOUT} s\n{job.log(0)[-3000:]}"
            assert job.processes[0].poll() is None, job.log(0)[-3000:]
            time.sleep(0.05)
        job.kill(1)
        # The chief's collective ops abort (the coordination service misses the peer's heartbeats).
        (code,) = job.wait(TIMEOUT, indices=[0])
        err = job.log(0).strip().splitlines()[-1]
        assert code == cli.EXIT_CLUSTER_FAILURE, job.log(0)[-3000:]
        assert err.startswith("tfinv train: a worker of the cluster failed") and "--resume" in err, err
        done = json.loads(metadata.read_text())["epoch"]
        assert 1 <= done < 3 and not (out / "model.keras").exists()
        job.start(args=[*command, "--resume"])
        codes = job.wait(TIMEOUT)
        assert codes == [0, 0], f"{codes}\n{job.log(0)[-3000:]}\n{job.log(1)[-3000:]}"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_at_epoch"] == done and metrics["epochs"] == 3
    difference = _max_difference(_weights(out / "model.keras"), _weights(reference / "model.keras"))
    assert difference <= 1e-6, f"resumed job vs uninterrupted job differ by {difference}"
    assert sorted(os.listdir(out)) == sorted(cli.RUN_FILES)
