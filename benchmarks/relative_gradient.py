"""Cost per training step of a fully connected flow: relative vs ordinary gradients, as D grows.

`FullyConnectedFlow` (``L`` dense ``D x D`` layers with smooth leaky ReLUs between them) is
trained by ``model.fit``'s own train step (``FlowModel.train_step`` under ``tf.function``, SGD,
batch ``B``). Four variants per ``D``:

* ``ordinary``: the true gradient; the log-det gradient ``W^-T`` costs one ``O(D^3)`` inverse per
  layer and step, and the log-det value one QR (``O(D^3)``);
* ``ordinary_no_log_det_value``: the same gradient, the value of ``log|det W|`` left out of the
  training loss (``training_log_det="omit"``);
* ``relative``: Gresele et al.'s relative gradient ``G W^T W`` (``O(B D^2)``, no inverse), the
  value by QR;
* ``relative_no_log_det_value``: relative gradient and no log-det value: no ``O(D^3)`` work.

Each cost is the minimum (and, reported beside it, the median) wall time of ``--repeats`` steps
after warm-up, the four variants' steps interleaved so that load swings on a shared machine hit
them alike; the scaling exponent is the least-squares slope of ``log(min time)`` on ``log(D)``,
over all ``D`` and over ``D >= 128`` (small ``D`` is dominated by per-step overhead).

Writes ``benchmarks/figures/relative_gradient.json`` whole (temporary file, then rename) and
prints it. Usage: ``python benchmarks/relative_gradient.py [--dims 16 32 64 128 256 512]``.

Reference: Gresele et al., "Relative gradient optimization of the Jacobian term in
unsupervised deep learning", arXiv:2006.15090.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import log, stdout_to_stderr  # noqa: E402

FIGURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures")

VARIANTS = {
    "ordinary": ("ordinary", "exact"),
    "ordinary_no_log_det_value": ("ordinary", "omit"),
    "relative": ("relative", "exact"),
    "relative_no_log_det_value": ("relative", "omit"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    parser.add_argument("--layers", type=int, default=2, help="dense layers L")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per variant and D")
    parser.add_argument("--out", default=os.path.join(FIGURES, "relative_gradient.json"))
    return parser.parse_args(argv)


def make_step(dim: int, gradient: str, training_log_det: str, args):
    """fit's own train step (loss, gradient, SGD update) of a fresh flow, compiled and warmed up."""
    import keras
    import tensorflow as tf

    from tfinv.models import FullyConnectedFlow

    keras.utils.set_random_seed(dim)
    model = FullyConnectedFlow(dim, num_layers=args.layers, gradient=gradient, training_log_det=training_log_det,
                               seed=dim)
    model.compile(keras.optimizers.SGD(1e-4))
    x = tf.constant(np.random.default_rng(dim).standard_normal((args.batch_size, dim)).astype(np.float32))
    step = tf.function(model.train_step)
    for _ in range(3):
        step(x)["loss"].numpy()
    return lambda: step(x)["loss"].numpy()


def step_times_ms(dim: int, args) -> dict[str, list[float]]:
    """Wall times of ``args.repeats`` steps of every variant, interleaved (one step of each in
    turn), so that the machine's load swings hit all variants alike."""
    steps = {name: make_step(dim, *options, args) for name, options in VARIANTS.items()}
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            samples[name].append((time.perf_counter() - start) * 1e3)
    return samples


def exponent(dims, times, min_dim: int = 0) -> float | None:
    points = [(d, t) for d, t in zip(dims, times) if d >= min_dim]
    if len(points) < 2:
        return None
    d, t = np.log(np.array(points, np.float64)).T
    return float(np.polyfit(d, t, 1)[0])


def main(argv=None) -> dict:
    args = parse_args(argv)
    with stdout_to_stderr() as stdout:
        from tfinv.files import atomic_write

        started = time.perf_counter()
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}  # minimum over the repeats
        medians: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for dim in args.dims:
            samples = step_times_ms(dim, args)
            for name in VARIANTS:
                times[name].append(float(np.min(samples[name])))
                medians[name].append(float(np.median(samples[name])))
            log(f"D={dim}: " + ", ".join(f"{name} {times[name][-1]:.2f} ms" for name in VARIANTS))
        report = {
            "benchmark": "relative_gradient",
            "config": vars(args),
            "dims": args.dims,
            "step_ms": times,
            "step_ms_median": medians,
            "ordinary_over_relative": {
                "with_log_det_value": [o / r for o, r in zip(times["ordinary"], times["relative"])],
                "without_log_det_value": [o / r for o, r in zip(times["ordinary_no_log_det_value"],
                                                                times["relative_no_log_det_value"])],
            },
            "scaling_exponent_all_dims": {name: exponent(args.dims, t) for name, t in times.items()},
            "scaling_exponent_dims_ge_128": {name: exponent(args.dims, t, 128) for name, t in times.items()},
            "units": {"step_ms": "minimum wall time of one fit train step over the repeats (ms; the "
                                 "least load-disturbed figure on a shared machine)",
                      "step_ms_median": "median of the same samples (ms)",
                      "scaling_exponent": "slope of log(step_ms) vs log(D)"},
            "total_seconds": time.perf_counter() - started,
            "load_average": os.getloadavg()[0],
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with atomic_write(args.out) as f:
            json.dump(report, f, indent=1)
        print(json.dumps(report, indent=1), file=stdout)
    return report


if __name__ == "__main__":
    main()
