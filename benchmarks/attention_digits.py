"""Benchmark: digits bits/dim of Glow plain, + iMap, + iTrans, and with EIW-Flow's entropy-weighted
linear, at the same step budget.

Every variant is `tfinv.models.Glow` on the embedded digits (8x8, 17 levels) with ``--levels``
(2), ``--steps-per-level`` (3), ``--hidden`` (32) and the same seed, trained by
`tfinv.training.fit_flow` for ``--epochs`` (6) at batch 64, Adam lr 1e-3 (same data order and
dequantisation noise for every variant); the step count is ``epochs * ceil(N_train / 64)``.
Variants: ``plain`` (Glow's step), ``imap`` / ``itrans`` (``Glow(attention=...)``: the attention
layer after every step's coupling), ``entropy_weighted`` (``Glow(linear="entropy_weighted")``).
Reported per variant: test and train bits/dim with fixed dequantisation noise, parameters, steps,
fit seconds, and the largest |x - inverse(forward(x))| over 64 test images after training.

Run: ``python benchmarks/attention_digits.py [--epochs 6] [--variants plain imap ...]``.
Stdout is one JSON object (also written, whole, to ``benchmarks/figures/attention_digits.json``
or ``--out``); progress goes to stderr.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

from _common import log, stdout_to_stderr, write_json  # noqa: E402

VARIANTS = {
    "plain": {},
    "imap": {"attention": "imap"},
    "itrans": {"attention": "itrans"},
    "entropy_weighted": {"linear": "entropy_weighted"},
}
BATCH_SIZE = 64
LEARNING_RATE = 1e-3
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures", "attention_digits.json")


def run_variant(name: str, args: argparse.Namespace) -> dict:
    import numpy as np
    import tensorflow as tf

    from tfinv import data, training
    from tfinv.models import Glow

    tf.keras.utils.set_random_seed(args.seed)
    train_images, _ = data.digits_arrays("train")
    test_images, _ = data.digits_arrays("test")
    model = Glow(data.DIGITS_SHAPE, levels=args.levels, steps_per_level=args.steps_per_level,
                 hidden_channels=args.hidden, num_levels=data.DIGITS_NUM_LEVELS, seed=args.seed,
                 **VARIANTS[name])
    model.build()
    started = time.perf_counter()
    result = training.fit_flow(model, train_images, epochs=args.epochs, batch_size=BATCH_SIZE,
                               learning_rate=LEARNING_RATE, seed=args.seed)
    fit_seconds = time.perf_counter() - started
    test_bpd = training.dataset_bits_per_dim(model, test_images, seed=args.seed)
    train_bpd = training.dataset_bits_per_dim(model, train_images, seed=args.seed)
    x = tf.constant(test_images[:64].astype(np.float32) + 0.5)
    z, _ = model.flow.forward_and_log_det(x)
    round_trip = float(tf.reduce_max(tf.abs(model.flow.inverse_and_log_det(z)[0] - x)))
    return {
        "variant": name, "glow_options": VARIANTS[name],
        "test_bits_per_dim": round(float(test_bpd), 4), "train_bits_per_dim": round(float(train_bpd), 4),
        "num_parameters": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights)),
        "steps": int(args.epochs * math.ceil(len(train_images) / BATCH_SIZE)),
        "fit_seconds": round(fit_seconds, 1),
        "final_train_loss": round(float(result.history["loss"][-1]), 4),
        "round_trip_max_abs_error": round_trip,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--steps-per-level", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=DEFAULT_OUT, help="where the JSON is written (whole)")
    args = parser.parse_args(argv)
    rows = []
    with stdout_to_stderr() as real_stdout:
        for name in args.variants:
            row = run_variant(name, args)
            log(f"{name}: test bits/dim {row['test_bits_per_dim']} ({row['num_parameters']} params, "
                f"{row['steps']} steps, fit {row['fit_seconds']} s)")
            rows.append(row)
        report = {
            "benchmark": "attention_digits",
            "budget": {"epochs": args.epochs, "batch_size": BATCH_SIZE, "lr": LEARNING_RATE, "seed": args.seed,
                       "model": f"Glow levels={args.levels} steps_per_level={args.steps_per_level} "
                                f"hidden={args.hidden}", "optimizer": "Adam"},
            "bits_per_dim": "fixed dequantisation noise (tfinv.training.dataset_bits_per_dim)",
            "platform": platform.platform(),
            "results": rows,
        }
        write_json(report, args.out, real_stdout)


if __name__ == "__main__":
    main()
