"""Benchmark: the default digits Glow under Keras dtype policies (float64, mixed_float16,
mixed_bfloat16) against float32 with the same weights.

Prints one JSON object to stdout with, per policy:

* ``round_trip_x``: ``max|inverse(forward(x)) - x| / max(max|x|, 1)`` on 64 test images;
* ``round_trip_z``: the same for ``forward(inverse(z))`` on 64 standard-normal latents;
* ``log_prob_rel_diff``: ``max|log p(x) - log p_float32(x)| / max|log p_float32(x)|`` (same
  weights: the float32 model's, after ``--steps`` float32 training steps);
* ``log_det_dtype``, ``log_prob_dtype``, ``sample_dtype``; ``samples_finite``;
* ``fit_loss_first``/``fit_loss_last``: ``--steps`` ``fit`` steps from the same weights under the
  policy (loss in nats per example), and ``fit_seconds``.

Run: ``python benchmarks/dtype_policies.py [--steps 50]``. CPU only here: half precision is
emulated (no speed figure is meaningful), the figures are about accuracy and dtypes.
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
from tfinv.data.digits import DIGITS_NUM_LEVELS, DIGITS_SHAPE, digits, digits_arrays  # noqa: E402
from tfinv.models import Glow  # noqa: E402
from tfinv.testing.contract import dtype_policy, relative_error  # noqa: E402


def _glow() -> Glow:
    return Glow(DIGITS_SHAPE, levels=2, steps_per_level=4, hidden_channels=64, num_levels=DIGITS_NUM_LEVELS)


def _measure(policy: str, weights, x: np.ndarray, reference_log_prob: np.ndarray, steps: int) -> dict:
    with dtype_policy(policy):
        model = _glow()
        model.set_weights(weights)
        z, log_det = model.forward(x)
        x_back = model.inverse(z)
        latents = tf.random.stateless_normal((64, model.num_dims), seed=[3, 0])
        z_back = model.forward(model.inverse(latents))[0]
        log_prob = model.log_prob(x)
        samples = model.sample(16, temperature=0.7, seed=1)
        result = {
            "round_trip_x": relative_error(tf.cast(x_back, tf.float64), x),
            "round_trip_z": relative_error(tf.cast(z_back, tf.float64), latents),
            "log_prob_rel_diff": float(np.max(np.abs(np.asarray(log_prob, np.float64) - reference_log_prob))
                                       / np.max(np.abs(reference_log_prob))),
            "log_det_dtype": log_det.dtype.name,
            "log_prob_dtype": log_prob.dtype.name,
            "sample_dtype": samples.dtype.name,
            "samples_finite": bool(np.all(np.isfinite(np.asarray(tf.cast(samples, tf.float32))))),
            "as_distribution_log_prob_dtype": model.as_distribution().log_prob(x).dtype.name,
        }
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        start = time.perf_counter()
        history = model.fit(digits(batch_size=64, split="train").take(steps), epochs=1, verbose=0,
                            callbacks=[_LossLog()])
        result["fit_seconds"] = time.perf_counter() - start
        losses = _LossLog.last
        result["fit_loss_first"], result["fit_loss_last"] = float(losses[0]), float(history.history["loss"][-1])
        result["fit_losses_finite"] = bool(np.all(np.isfinite(losses)))
    return result


class _LossLog(keras.callbacks.Callback):
    last: list = []

    def on_train_begin(self, logs=None):
        _LossLog.last = []

    def on_train_batch_end(self, batch, logs=None):
        _LossLog.last.append(float(logs["loss"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    with stdout_to_stderr() as out:
        test, _ = digits_arrays("test", with_labels=False)
        x = (test[:64].astype(np.float32) + np.random.default_rng(0).uniform(size=(64,) + DIGITS_SHAPE)).astype(np.float32)
        reference = _glow()
        reference.initialize(x)
        reference.compile(optimizer=keras.optimizers.Adam(1e-3))
        reference.fit(digits(batch_size=64, split="train").take(args.steps), epochs=1, verbose=0)
        weights = reference.get_weights()
        reference_log_prob = np.asarray(reference.log_prob(x), np.float64)
        results = {"config": {"steps": args.steps, "images": 64, "model": "Glow(levels=2, K=4, hidden=64)"}}
        for policy in ("float32", "float64", "mixed_float16", "mixed_bfloat16"):
            log(f"measuring {policy}")
            results[policy] = _measure(policy, weights, x, reference_log_prob, args.steps)
        out.write(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
