"""Benchmark: out-of-distribution AUROC of a Glow trained on the embedded digits.

Trains a small `tfinv.models.Glow` on 1237 training digits for ``--steps`` steps (the other 200
training digits are the held-out set of the typicality bootstrap), then scores the 360 test digits
(in-distribution) against OOD sets of 360 images each, all integer levels ``0..16`` of shape
``(8, 8, 1)`` dequantised with the same fixed noise:

* ``inverted``: ``16 - digit`` (test digits);
* ``uniform_noise``: i.i.d. uniform levels;
* ``constant``: one uniform random level per image;
* ``shuffled``: test digits with their 64 pixels permuted (one permutation per image);
* ``natural_patches``: random 8x8 patches of scikit-learn's bundled ``china.jpg`` (grey, levels
  ``floor(v * 17 / 256)``) — needs the ``benchmarks`` extra (scikit-learn, pillow); skipped with a
  note in the JSON when it is missing.

Scores (higher = in-distribution, `tfinv.ood`): ``log_likelihood``; ``typicality`` (per example,
``M = 1``); ``typicality_batch_M10`` (batches of 10, 200 random batches per set);
``complexity_corrected`` (``log2 p + L_zlib``). Prints one JSON object: the AUROC table
(score x OOD set), mean bits/dim of each set, the typicality threshold and the fraction of
M=10 batches flagged at alpha = 0.01.

Remedy (Kirichenko et al., arXiv:2006.08545, §7): the same Glow with every coupling conditioner
squeezed through a dense bottleneck (`tfinv.ood.bottleneck_glow`, one flow per ``--bottlenecks``
size), trained and scored the same way; the JSON's ``remedy`` holds its tables beside the
baseline's.

Run: ``python benchmarks/ood_digits.py [--steps 300] [--bottlenecks 4 16]`` (~3-5 min on 2 shared cores).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from _common import log, stdout_to_stderr  # noqa: E402
from tfinv import data, ood  # noqa: E402
from tfinv.models import Glow  # noqa: E402

LEVELS = data.DIGITS_NUM_LEVELS


def natural_patches(n: int, rng: np.random.Generator) -> np.ndarray | None:
    try:
        from sklearn.datasets import load_sample_image
    except ImportError:
        return None
    image = load_sample_image("china.jpg").astype(np.float64).mean(-1)  # grey, 0..255
    rows = rng.integers(0, image.shape[0] - 8, n)
    cols = rng.integers(0, image.shape[1] - 8, n)
    patches = np.stack([image[r:r + 8, c:c + 8] for r, c in zip(rows, cols)])
    return np.clip(np.floor(patches * LEVELS / 256.0), 0, LEVELS - 1).astype(np.uint8)[..., None]


def ood_sets(test_x: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = len(test_x)
    flat = test_x.reshape(n, -1)
    shuffled = np.stack([row[rng.permutation(64)] for row in flat]).reshape(test_x.shape)
    sets = {
        "inverted": (LEVELS - 1 - test_x.astype(np.int64)).astype(np.uint8),
        "uniform_noise": rng.integers(0, LEVELS, test_x.shape).astype(np.uint8),
        "constant": np.broadcast_to(rng.integers(0, LEVELS, (n, 1, 1, 1)), test_x.shape).astype(np.uint8),
        "shuffled": shuffled.astype(np.uint8),
    }
    patches = natural_patches(n, rng)
    if patches is not None:
        sets["natural_patches"] = patches
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--steps-per-level", type=int, default=2)
    parser.add_argument("--hidden-channels", type=int, default=32)
    parser.add_argument("--bottlenecks", type=int, nargs="*", default=[4, 16],
                        help="code sizes of the remedy's bottlenecked conditioners (one flow each)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    train_all, _ = data.digits_arrays("train", with_labels=False)
    test_x, _ = data.digits_arrays("test", with_labels=False)
    train_x, held_x = train_all[:-200], train_all[-200:]
    rng = np.random.default_rng(args.seed + 99)
    sets = ood_sets(test_x, rng)

    def dequantise(counts: np.ndarray) -> np.ndarray:
        noise = np.random.default_rng(7).uniform(0, 1, counts.shape)
        return (counts.astype(np.float64) + noise).astype(np.float32)

    inside_counts = test_x

    def evaluate(model) -> dict:
        """Typicality fit, the AUROC table, bits/dim and flagged fractions of one trained flow."""
        test = ood.TypicalityTest(model).fit(dequantise(train_x), dequantise(held_x), test_batch_size=10,
                                             num_bootstrap=2000, alpha=0.01, seed=args.seed)
        inside = dequantise(inside_counts)
        in_scores = {
            "log_likelihood": ood.log_likelihood_scores(model, inside),
            "typicality": test.example_scores(inside),
            "typicality_batch_M10": test.batch_scores(inside, 200, seed=1),
            "complexity_corrected": ood.complexity_corrected_scores(model, inside, LEVELS),
        }
        bits = {"test_digits": float(-np.mean(in_scores["log_likelihood"]) / (64 * math.log(2)))}
        table: dict[str, dict[str, float]] = {score: {} for score in in_scores}
        flagged = {"test_digits": float(np.mean(-in_scores["typicality_batch_M10"] > test.threshold))}
        for name, counts in sets.items():
            x = dequantise(counts)
            out_scores = {
                "log_likelihood": ood.log_likelihood_scores(model, x, what=name),
                "typicality": test.example_scores(x),
                "typicality_batch_M10": test.batch_scores(x, 200, seed=2),
                "complexity_corrected": ood.complexity_corrected_scores(model, x, LEVELS, what=name),
            }
            bits[name] = float(-np.mean(out_scores["log_likelihood"]) / (64 * math.log(2)))
            flagged[name] = float(np.mean(-out_scores["typicality_batch_M10"] > test.threshold))
            for score in in_scores:
                table[score][name] = ood.auroc(in_scores[score], out_scores[score])
            log(f"{model.name} {name}: " + ", ".join(f"{s} {table[s][name]:.3f}" for s in table))
        return {"auroc": table, "bits_per_dim": bits,
                "typicality": {"entropy_nats": test.entropy, "threshold_alpha_0.01_M10": test.threshold,
                               "fraction_of_M10_batches_flagged": flagged}}

    def train(model) -> float:
        batches = data.dequantized_epochs(train_x, epochs=10**6, batch_size=args.batch_size, seed=args.seed)
        model.initialize(next(iter(batches)))
        model.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
        fit_started = time.perf_counter()
        model.fit(batches.take(args.steps), epochs=1, verbose=0)
        seconds = time.perf_counter() - fit_started
        log(f"{model.name}: trained {args.steps} steps in {seconds:.0f} s")
        return seconds

    with stdout_to_stderr() as out:
        keras.utils.set_random_seed(args.seed)
        model = Glow((8, 8, 1), levels=2, steps_per_level=args.steps_per_level,
                     hidden_channels=args.hidden_channels, num_levels=LEVELS, seed=args.seed, name="glow")
        fit_seconds = train(model)
        baseline = evaluate(model)
        remedies = {}
        for size in args.bottlenecks:
            keras.utils.set_random_seed(args.seed)
            remedy = ood.bottleneck_glow((8, 8, 1), levels=2, steps_per_level=args.steps_per_level,
                                         hidden_channels=args.hidden_channels, bottleneck=size, num_levels=LEVELS,
                                         seed=args.seed, name=f"bottleneck_glow_{size}")
            seconds = train(remedy)
            remedies[f"bottleneck_{size}"] = {"fit_seconds": seconds, "parameters": int(remedy.count_params()),
                                             **evaluate(remedy)}
        report = {
            "benchmark": "ood_digits",
            "config": vars(args),
            "fit_seconds": fit_seconds,
            "parameters": int(model.count_params()),
            **baseline,
            "remedy": {
                "what": "Kirichenko et al. (arXiv:2006.08545) st-networks with a bottleneck: every coupling "
                        "conditioner is tfinv.nets.BottleneckConvNet (dense code of the given size); same "
                        "Glow otherwise, same steps and data",
                **remedies,
            },
            "natural_patches": "china.jpg (scikit-learn)" if "natural_patches" in sets
                               else "skipped: scikit-learn not installed (pip install .[benchmarks])",
            "wall_seconds": time.perf_counter() - started,
            "tensorflow": tf.__version__,
        }
        print(json.dumps(report, indent=2), file=out)


if __name__ == "__main__":
    main()
