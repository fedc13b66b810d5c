"""Benchmark: a ConditionalVectorFlow against the exact posterior of the linear Gaussian problem.

``x ~ N(0, I_d)``, ``y = A x + sigma * eps`` (``A`` of shape ``(m, d)``, entries ``N(0, 1/d)``).
Trains ``ConditionalVectorFlow`` on ``(x, y)`` pairs, then for ``--observations`` held-out ``y``
draws ``--samples`` posterior samples and prints one JSON object to stdout:

* ``mean_relative_error``: ``||mean_flow - mu(y)|| / ||mu(y)||``, averaged over observations;
* ``mean_error_in_posterior_std``: the largest ``|mean_flow - mu| / sqrt(diag Sigma)``;
* ``cov_relative_error``: ``||cov_flow - Sigma||_F / ||Sigma||_F``, averaged;
* ``kl_gaussian_fit``: ``KL(N(mean_flow, cov_flow) || N(mu, Sigma))`` in nats, averaged (and max);
* ``calibration``: coverage of the central q-intervals (q = 0.1..0.9) of the true x of 256
  held-out pairs (exact posterior draws) and its mean error against q;
* ``test_nll`` and ``true_conditional_entropy``: their difference estimates
  ``E_y KL(p(x|y) || q(x|y))`` (nats);
* ``sampling_floor``: the same errors for ``--samples`` exact posterior samples (what sampling
  error alone gives).

Run: ``python benchmarks/cinn_toy.py [--dim 8] [--epochs 40]``.
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

from tfinv import inverse_problems as ip  # noqa: E402
from tfinv.models import ConditionalVectorFlow  # noqa: E402

from _common import log, stdout_to_stderr  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=8)
    parser.add_argument("--observation-dim", type=int, default=6)
    parser.add_argument("--noise-std", type=float, default=0.3)
    parser.add_argument("--train-pairs", type=int, default=16384)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--hidden-units", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--observations", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def errors(samples: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> dict:
    """Mean/covariance errors and Gaussian-fit KL of ``samples (K, d)`` against ``N(mean, cov)``."""
    fit_mean, fit_cov = samples.mean(0), np.cov(samples.T)
    return {
        "mean_relative_error": float(np.linalg.norm(fit_mean - mean) / np.linalg.norm(mean)),
        "mean_error_in_posterior_std": float(np.max(np.abs(fit_mean - mean) / np.sqrt(np.diag(cov)))),
        "cov_relative_error": float(np.linalg.norm(fit_cov - cov) / np.linalg.norm(cov)),
        "kl_gaussian_fit": ip.gaussian_kl(fit_mean, fit_cov, mean, cov),
    }


def summarise(rows: list[dict]) -> dict:
    out = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
    out["mean_error_in_posterior_std"] = float(np.max([r["mean_error_in_posterior_std"] for r in rows]))
    out["kl_gaussian_fit_max"] = float(np.max([r["kl_gaussian_fit"] for r in rows]))
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    problem = ip.LinearGaussian.random(args.dim, args.observation_dim, args.noise_std, seed=args.seed)
    x, y = problem.sample(args.train_pairs, seed=args.seed)
    model = ConditionalVectorFlow(args.dim, observation_shape=(args.observation_dim,), num_blocks=args.blocks,
                                  hidden_units=args.hidden_units, seed=args.seed)
    model.initialize(x[:1024], y[:1024])
    model.compile(optimizer=keras.optimizers.Adam(args.lr))
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=args.seed).batch(args.batch_size)
    start = time.perf_counter()
    history = model.fit(data, epochs=args.epochs, verbose=0)
    train_seconds = time.perf_counter() - start
    log(f"trained {args.epochs} epochs in {train_seconds:.1f} s, final loss {history.history['loss'][-1]:.4f}")

    cov = problem.posterior_covariance()
    x_test, y_test = problem.sample(256, seed=args.seed + 1)
    means = problem.posterior_mean(y_test[: args.observations])
    flow = model.posterior_samples(y_test[: args.observations], k=args.samples, seed=args.seed + 2)
    rng = np.random.default_rng(args.seed + 3)
    exact = means + rng.multivariate_normal(np.zeros(args.dim), cov, (args.samples, args.observations))
    flow_rows = [errors(flow[:, i].astype(np.float64), means[i], cov) for i in range(args.observations)]
    exact_rows = [errors(exact[:, i], means[i], cov) for i in range(args.observations)]
    calibration = ip.calibration(model.posterior_samples(y_test, k=400, seed=args.seed + 4), x_test)
    test_nll = float(-np.mean(model.log_prob(x_test, y_test)))
    entropy = float(0.5 * np.linalg.slogdet(2 * np.pi * np.e * cov)[1])
    return {
        "benchmark": "cinn_toy",
        "config": vars(args),
        "train_seconds": train_seconds,
        "final_train_loss": float(history.history["loss"][-1]),
        **summarise(flow_rows),
        "calibration": calibration,
        "test_nll": test_nll,
        "true_conditional_entropy": entropy,
        "nll_gap_estimates_expected_kl": test_nll - entropy,
        "sampling_floor": summarise(exact_rows),
    }


if __name__ == "__main__":
    with stdout_to_stderr() as stdout:
        print(json.dumps(main(), indent=2), file=stdout)
