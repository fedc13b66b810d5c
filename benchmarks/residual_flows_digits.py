"""Benchmark: ResidualFlow and IDenseNet against the default Glow on the embedded digits.

Same data, optimiser, batch size and number of epochs for every model, parameter counts near
the default Glow's (~76k). Prints one JSON object:

* per model: parameters, training throughput (median images/s after warm-up steps), test
  bits/dim (deterministic log-det: exact trace, ``inference_terms`` series terms), sampling time
  for 64 samples (eager and ``tf.function``), fixed-point iterations per block to reach 1e-5;
* ``log_det_forms``: the error of the deterministic (export) log-det forms — exact trace with
  ``n`` terms, and 4 stored probes — against the dense-Jacobian exact log-det of a trained model;
* ``estimator``: for one trained block, variance, bias and time of one log-det draw vs the
  number of series terms (truncated series) and of the Russian-roulette estimator;
* ``memory``: peak RSS growth (Linux ``VmHWM`` after resetting it, minus RSS before ``fit``;
  the train step's tracing included, the same in every mode) of training steps (batch ``--memory-batch``) with plain backprop through a truncated series, with
  the Neumann gradient, and with the Neumann gradient plus the memory-saving backward pass; each
  in its own process.

Run: ``python benchmarks/residual_flows_digits.py [--epochs 5]``. Timings are for reading only.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfinv  # noqa: E402
from tfinv import data  # noqa: E402
from tfinv.training import evaluate_bits_per_dim  # noqa: E402
from tfinv.ops import residual as residual_ops  # noqa: E402


class StepTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.step_seconds: list[float] = []
        self._last = None

    def on_epoch_begin(self, epoch, logs=None):
        self._last = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if logs and "loss" in logs:
            float(logs["loss"])
        now = time.perf_counter()
        self.step_seconds.append(now - self._last)
        self._last = now


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def make_model(name: str, args, **overrides):
    common = dict(num_levels=data.DIGITS_NUM_LEVELS, seed=args.seed)
    if name == "Glow":
        return tfinv.models.Glow(data.DIGITS_SHAPE, **common)
    options = dict(levels=2, blocks_per_level=args.blocks_per_level, coefficient=args.coefficient,
                   inference_terms=args.inference_terms, **common)
    options.update(overrides)
    if name == "ResidualFlow":
        return tfinv.models.ResidualFlow(data.DIGITS_SHAPE, hidden_features=args.hidden_features, **options)
    return tfinv.models.IDenseNet(data.DIGITS_SHAPE, growth=args.growth, depth=args.depth, **options)


def datasets(args):
    train_images, _ = data.digits_arrays("train", with_labels=False)
    test_images, _ = data.digits_arrays("test", with_labels=False)
    train = data.dequantized_dataset(train_images, batch_size=args.batch_size, seed=args.seed,
                                     drop_remainder=True)
    test = data.dequantized_dataset(test_images, batch_size=128, seed=args.seed, shuffle=False,
                                    fixed_noise=True)
    return train, test


def train_and_measure(name: str, args, train, test) -> tuple[dict, keras.Model]:
    keras.utils.set_random_seed(args.seed)
    model = make_model(name, args)
    model.initialize(next(iter(train)))
    model.compile(optimizer=keras.optimizers.Adam(args.lr))
    timer = StepTimer()
    started = time.perf_counter()
    model.fit(train, epochs=args.epochs, shuffle=False, verbose=0, callbacks=[timer])
    fit_seconds = time.perf_counter() - started
    result = {"num_parameters": int(model.count_params()), "fit_seconds": round(fit_seconds, 2)}
    steps = timer.step_seconds[args.warmup_steps:]
    result["train_images_per_second"] = round(float(statistics.median(args.batch_size / np.asarray(steps))), 1)
    if name != "Glow":
        model.refresh_spectral_norm()  # the stored power-iteration vectors lag the last updates
        result["lipschitz_bounds"] = [round(b, 4) for b in model.check_lipschitz()]
    started = time.perf_counter()
    result["test_bits_per_dim"] = round(evaluate_bits_per_dim(model, test), 4)
    result["test_eval_seconds"] = round(time.perf_counter() - started, 2)
    z = tf.random.stateless_normal((64,) + model.latent_shape, seed=[1, 2])
    started = time.perf_counter()
    model.inverse(z)
    result["sample64_eager_seconds"] = round(time.perf_counter() - started, 3)
    inverse = tf.function(model.inverse)
    inverse(z)
    started = time.perf_counter()
    inverse(z)
    result["sample64_function_seconds"] = round(time.perf_counter() - started, 3)
    if name != "Glow":
        result["fixed_point_iterations_to_1e-5"] = fixed_point_iterations(model, z)
    return result, model


def fixed_point_iterations(model, z) -> list[int]:
    """Iterations each block needs (tolerance 1e-5) along one sampling pass, last block first."""
    counts = []
    h = z
    for layer in reversed(model.flow.steps):
        if hasattr(layer, "inverse_with_info"):
            saved = layer.inverse_tolerance
            layer.inverse_tolerance = 1e-5
            h, iterations, _, converged = layer.inverse_with_info(h)
            layer.inverse_tolerance = saved
            counts.append(int(iterations) if bool(converged) else -1)
        else:
            h = layer.inverse_and_log_det(h)[0]
    return counts


def log_det_forms(model, test, args) -> dict:
    """Deterministic log-det forms vs the exact (dense Jacobian) one on 16 test images."""
    x = next(iter(test))[:16]
    h = x
    exact, by_terms, probes = 0.0, {n: 0.0 for n in (2, 5, 10, 20)}, 0.0
    for layer in model.flow.steps:
        if hasattr(layer, "dense_log_det"):
            exact += layer.dense_log_det(h).numpy().astype(np.float64)
            jvp = layer.net.linearize(h)[1]
            basis = residual_ops.basis_probes(tf.shape(h)[0], tuple(h.shape[1:]), h.dtype)
            for n in by_terms:
                by_terms[n] += residual_ops.power_series_log_det(jvp, basis, n)[0].numpy()
            stored = tf.random.stateless_normal((4, 1) + tuple(h.shape[1:]), seed=[3, 4])
            stored = tf.broadcast_to(stored, (4,) + tuple(h.shape))
            probes += residual_ops.power_series_log_det(jvp, stored, args.inference_terms)[0].numpy()
        h = layer.forward_and_log_det(h)[0]
    out = {f"exact_trace_{n}_terms_max_abs_error": float(np.max(np.abs(v - exact))) for n, v in by_terms.items()}
    out[f"4_stored_probes_{args.inference_terms}_terms_max_abs_error"] = float(np.max(np.abs(probes - exact)))
    out["exact_log_det_mean"] = float(np.mean(exact))
    return out


def estimator_study(model, test, args) -> dict:
    """Variance, bias and cost of one log-det draw of the first block vs series terms."""
    block = model.residual_blocks[0]
    x = next(iter(test))[:32]
    for layer in model.flow.steps:  # the block's actual input
        if layer is block:
            break
        x = layer.forward_and_log_det(x)[0]
    exact = block.dense_log_det(x).numpy().astype(np.float64)
    rows = []
    for estimator, terms in [("series", n) for n in (1, 2, 4, 8, 16)] + [("roulette", None)]:
        if terms is not None:
            block.series_terms = terms
        draw = tf.function(lambda s: block.estimate_log_det(x, estimator, 1, s))
        draw(tf.constant([0, 0]))
        values, started = [], time.perf_counter()
        for i in range(args.estimator_draws):
            values.append(draw(tf.constant([1, i])).numpy().astype(np.float64))
        seconds = (time.perf_counter() - started) / args.estimator_draws
        values = np.stack(values)
        rows.append({"estimator": estimator, "terms": terms if terms else f"{block.exact_terms}+Geom(1-{block.survival})",
                     "variance_per_example": float(np.mean(values.var(axis=0, ddof=1))),
                     "bias_mean": float(np.mean(values.mean(axis=0) - exact)),
                     "standard_error_mean": float(np.mean(values.std(axis=0, ddof=1)) / np.sqrt(len(values))),
                     "ms_per_draw_batch32": round(1e3 * seconds, 2)})
    block.series_terms = 5
    return {"exact_log_det_mean": float(exact.mean()), "rows": rows}


def memory_probe(mode: str, args) -> dict:
    """Runs in a child process: peak RSS growth over ``--memory-steps`` training steps."""
    overrides = {"plain_backprop_series": dict(estimator="series", series_terms=args.memory_terms,
                                               neumann_gradient=False),
                 "neumann": dict(estimator="series", series_terms=args.memory_terms),
                 "neumann_memory_efficient": dict(estimator="series", series_terms=args.memory_terms,
                                                  memory_efficient=True)}[mode]
    train_images, _ = data.digits_arrays("train", with_labels=False)
    ds = data.dequantized_dataset(train_images, batch_size=args.memory_batch, seed=0, drop_remainder=True)
    batch = next(iter(ds.repeat()))
    model = make_model("ResidualFlow", args, **overrides)
    model.initialize(batch)
    model.compile(optimizer=keras.optimizers.Adam(args.lr))
    # No warm-up step: memory a traced step allocated stays with the process's allocator, and a
    # later step's peak would not show above it. Tracing adds the same to every mode.
    steps = tf.data.Dataset.from_tensors(batch)
    # ru_maxrss keeps the start-up peak (TF and data loading reach ~2.5 GB here), which hid the
    # training peak: reset the kernel's high-water mark (VmHWM) instead and read it after fit.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_mb("VmRSS")
    model.fit(steps.repeat(args.memory_steps), epochs=1, verbose=0)
    return {"mode": mode, "peak_rss_growth_mb": round(_status_mb("VmHWM") - before, 1),
            "rss_before_fit_mb": round(before, 1)}


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (kB) in MiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup-steps", type=int, default=10)
    p.add_argument("--blocks-per-level", type=int, default=4)
    p.add_argument("--hidden-features", type=int, default=38, help="ResidualFlow width (~76k parameters)")
    p.add_argument("--growth", type=int, default=13, help="IDenseNet growth")
    p.add_argument("--depth", type=int, default=2, help="IDenseNet dense units per block")
    p.add_argument("--coefficient", type=float, default=0.97)
    p.add_argument("--inference-terms", type=int, default=20)
    p.add_argument("--estimator-draws", type=int, default=200)
    p.add_argument("--memory-batch", type=int, default=256)
    p.add_argument("--memory-steps", type=int, default=5)
    p.add_argument("--memory-terms", type=int, default=10)
    p.add_argument("--models", default="Glow,ResidualFlow,IDenseNet")
    p.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, args)))
        return 0
    started = time.perf_counter()
    train, test = datasets(args)
    results, trained = {}, {}
    for name in args.models.split(","):
        results[name], trained[name] = train_and_measure(name, args, train, test)
        print(json.dumps({name: results[name]}), file=sys.stderr)
    out = {"benchmark": "residual_flows_digits", "models": results}
    if "ResidualFlow" in trained:
        out["log_det_forms"] = log_det_forms(trained["ResidualFlow"], test, args)
        out["estimator"] = estimator_study(trained["ResidualFlow"], test, args)
    memory = []
    for mode in ("plain_backprop_series", "neumann", "neumann_memory_efficient"):
        child = subprocess.run([sys.executable, __file__, "--memory-probe", mode,
                                *(argv if argv is not None else sys.argv[1:])],
                               capture_output=True, text=True, check=True)
        memory.append(json.loads(child.stdout.strip().splitlines()[-1]))
    out["memory"] = {"batch": args.memory_batch, "series_terms": args.memory_terms, "rows": memory}
    out["config"] = {k: v for k, v in vars(args).items() if k != "memory_probe"}
    out["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
