"""Benchmark: hybrid continual learning (HCL) on split digits — forgetting and task-change detection.

A `tfinv.models.FlowGMM` (small Glow, one Gaussian per digit) learns five tasks in sequence,
(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), from a stream of labelled batches of ``--batch-size``
(``--steps`` batches per task, drawn at random from that task's training digits, fresh
dequantisation noise); the learner is never told where the tasks change. Modes
(`tfinv.continual.HybridContinualLearner`): ``naive`` fine-tuning; ``generative_replay``
(HCL-GR); ``functional_regularisation`` (HCL-FR); ``joint`` (reference: the same number of
steps on batches of all classes, i.i.d.). Each mode detects task changes with its own
`TaskChangeDetector` on the batch NLL; replay starts at the first detected change.

Reported (JSON on stdout): ``accuracy[t][i]``: accuracy on task ``i``'s test digits (argmax over
all ten classes, class-incremental) after task ``t``; ``average_accuracy`` after the last task;
``forgetting``: mean over tasks ``i < 4`` of ``max_{t<4} accuracy[t][i] - accuracy[4][i]``;
``detection``: detected change steps, delay (batches) after each true boundary, misses and
false alarms. Writes ``--figure`` (PNG): class-conditional samples of the final GR model, one
row per class.

Run: ``python benchmarks/hcl_digits.py [--steps 200]`` (~10 min on 2 shared cores).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from _common import log, stdout_to_stderr  # noqa: E402
from tfinv import data  # noqa: E402
from tfinv.continual import HybridContinualLearner, TaskChangeDetector  # noqa: E402
from tfinv.models import FlowGMM  # noqa: E402

TASKS = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]


def detection_figures(changes: list[int], steps: int) -> dict:
    boundaries = [t * steps for t in range(1, len(TASKS))]
    delays, matched = [], set()
    for b in boundaries:
        hits = [c for c in changes if b <= c < b + steps]
        if hits:
            delays.append(hits[0] - b)
            matched.add(hits[0])
        else:
            delays.append(None)
    return {"changes_at_step": changes, "true_boundaries": boundaries, "delay_batches": delays,
            "missed": sum(d is None for d in delays), "false_alarms": len([c for c in changes if c not in matched])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="batches per task")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--steps-per-level", type=int, default=2)
    parser.add_argument("--hidden-channels", type=int, default=32)
    parser.add_argument("--clip-norm", type=float, default=50.0, help="global gradient-norm clipping (all modes)")
    parser.add_argument("--replay-size", type=int, default=32)
    parser.add_argument("--fr-weight", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--num-sigmas", type=float, default=6.0)
    parser.add_argument("--modes", nargs="+", default=["naive", "generative_replay", "functional_regularisation",
                                                       "joint"])
    parser.add_argument("--figure", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures",
                                                         "hcl_digits_samples.png"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    train_x, train_y = data.digits_arrays("train")
    test_x, test_y = data.digits_arrays("test")
    test_float = test_x.astype(np.float32) + np.random.default_rng(1234).uniform(0, 1, test_x.shape).astype(np.float32)

    def batch_of(rng, classes) -> tuple[np.ndarray, np.ndarray]:
        pool = np.flatnonzero(np.isin(train_y, classes))
        pick = rng.choice(pool, args.batch_size)
        return (train_x[pick].astype(np.float32) + rng.uniform(0, 1, train_x[pick].shape).astype(np.float32),
                train_y[pick])

    def task_accuracies(model) -> list[float]:
        predicted = model.predict_classes(test_float)
        return [float(np.mean(predicted[np.isin(test_y, t)] == test_y[np.isin(test_y, t)])) for t in TASKS]

    results = {}
    with stdout_to_stderr() as out:
        for mode in args.modes:
            keras.utils.set_random_seed(args.seed)
            rng = np.random.default_rng(args.seed)
            model = FlowGMM.glow((8, 8, 1), 10, levels=2, steps_per_level=args.steps_per_level,
                                 hidden_channels=args.hidden_channels, num_levels=data.DIGITS_NUM_LEVELS,
                                 seed=args.seed, name=f"hcl_{mode}")
            model.initialize(batch_of(np.random.default_rng(args.seed + 1), TASKS[0])[0])
            learner = HybridContinualLearner(
                model, "naive" if mode == "joint" else mode,
                keras.optimizers.Adam(args.learning_rate, global_clipnorm=args.clip_norm),
                TaskChangeDetector(window=20, num_sigmas=args.num_sigmas, warmup=10),
                replay_size=args.replay_size, weight=1.0 if mode == "generative_replay" else args.fr_weight,
                temperature=args.temperature, seed=args.seed)
            accuracy, statistics = [], []
            mode_started = time.perf_counter()
            for t, task in enumerate(TASKS):
                for _ in range(args.steps):
                    classes = list(range(10)) if mode == "joint" else list(task)
                    report = learner.step(*batch_of(rng, classes))
                    statistics.append(report["statistic"])
                accuracy.append(task_accuracies(model))
                log(f"{mode} after task {t}: " + " ".join(f"{a:.2f}" for a in accuracy[-1]))
            final = accuracy[-1]
            forgetting = float(np.mean([max(accuracy[s][i] for s in range(i, len(TASKS) - 1)) - final[i]
                                        for i in range(len(TASKS) - 1)]))
            results[mode] = {
                "accuracy": accuracy,
                "average_accuracy": float(np.mean(final)),
                "forgetting": forgetting,
                "detection": detection_figures(learner.detector.changes, args.steps),
                "batch_nll_every_10_steps": [round(s, 2) for s in statistics[::10]],
                "skipped_non_finite_steps": learner.skipped_steps,
                "seconds": time.perf_counter() - mode_started,
            }
            log(f"{mode}: average accuracy {np.mean(final):.3f}, forgetting {forgetting:.3f}, "
                f"changes at {learner.detector.changes}")
            if mode == "generative_replay" and args.figure:
                samples = model.sample_classes(np.repeat(np.arange(10), 8), temperature=0.8, seed=args.seed)
                data.save_image_grid(samples.numpy(), args.figure, data.DIGITS_NUM_LEVELS, columns=8)
        report = {
            "benchmark": "hcl_digits",
            "config": vars(args),
            "tasks": TASKS,
            "results": results,
            "figure": args.figure if "generative_replay" in args.modes else None,
            "wall_seconds": time.perf_counter() - started,
            "tensorflow": tf.__version__,
        }
        print(json.dumps(report, indent=2), file=out)


if __name__ == "__main__":
    main()
