"""Benchmark: training throughput and sampling / density latency of tfinv against normflows and
TFP, on eager, compiled (``tf.function``) and XLA paths, in one run.

Protocol (issue 13): multi-scale Glow, L = 2 levels, K = 4 steps, coupling width 64, batch 64,
Adam 1e-3, on the embedded digits (8 x 8 x 1, 17 grey levels, dequantised), and on generated
32 x 32 x 3 images (``--size 32``: digits upscaled 4x, tinted with a random colour per image)
where the compute-bound regime shows. Every library trains the same architecture on the same
dequantised batches; the figures are:

* ``train_images_per_second``: median over ``--repeats`` timed runs of ``--steps`` train steps,
  ``batch * steps / wall time``. Every contender is built first and warmed up once (tracing, XLA
  compilation); then each round runs every contender once, the order reversed every other
  round, so that the shared machine's drifting load hits all alike (``..._runs``: every run);
* ``sample64_ms``: median latency of drawing 64 samples (result materialised in host memory);
* ``log_prob_test_ms``: median latency of ``log_prob`` of the 360 test images (digits) or of
  360 generated test images (``--size 32``).

Paths: tfinv ``eager`` (``run_eagerly=True``; inference ``inference_mode="eager"``),
``default`` (plain ``model.compile()`` and plain ``model.sample`` / ``log_prob``: on a CPU, XLA
training with 8 steps per call for the models that opt in — this Glow at 8 x 8 and the vector
flow, not the Glow at 32 x 32 x 3 — and XLA inference where the model compiles and opts in) and ``xla``
(``jit_compile=True``; inference ``"xla"``); TFP ``tfb.Glow`` (``GlowDefaultNetwork`` of width
64) under ``tf.function`` and under XLA; normflows (PyTorch eager, the library's own mode).
``--vector`` adds the vector flow of issue 13 on the 64 flattened pixels (3 x [VectorActNorm,
VectorInvLinear, 2 VectorAffineCoupling], 75,264 trained parameters) on the three tfinv paths
and the same flow in BayesFlow 2 (``CouplingFlow``, see `bayesflow_vector`).

Benchmark-only dependencies (not tfinv's): ``torch`` (CPU wheel), ``normflows`` and
``bayesflow`` (Keras 3; installs without changing TensorFlow or Keras) installed into the
benchmark's venv; without them their rows are ``{"error": ...}``. TFP is a tfinv dependency
already. Bits/dim are not reported (that needs a full 1500-step run per library; see
``benchmarks/train_digits.py``). The PNG needs matplotlib (the ``benchmarks`` extra).

Run: ``python benchmarks/speed.py [--size 8|32] [--steps 40] [--repeats 3] [--vector]
[--out speed.json] [--plot speed.png]``; ``--train-only`` times only the Glow training of
tfinv's default and XLA paths against TFP with XLA (no inference latencies, no plot). Machines are shared and noisy: compare ratios within
one run. Timings are for reading, never asserted in tests.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from _common import log, stdout_to_stderr  # noqa: E402

BATCH = 64
LEVELS, STEPS_PER_LEVEL, WIDTH = 2, 4, 64
NUM_LEVELS = 17
TORCH_THREADS = 1


# ----------------------------------------------------------------------------- data
def make_data(size: int, seed: int = 0):
    """``(train, test)`` float32 dequantised images in ``[0, 17)``: digits, or 32x32x3 made from
    them (nearest 4x upscaling, a random colour per image, counts kept in 0..16)."""
    from tfinv import data

    train, _ = data.digits_arrays("train", with_labels=False)
    test, _ = data.digits_arrays("test", with_labels=False)
    rng = np.random.default_rng(seed)
    if size == 32:
        def colour(images):
            up = np.kron(images.astype(np.float32), np.ones((1, 4, 4, 1), np.float32))
            tint = rng.uniform(0.3, 1.0, (len(images), 1, 1, 3)).astype(np.float32)
            return np.floor(up * tint).astype(np.uint8)
        train, test = colour(train), colour(test)
    elif size != 8:
        raise SystemExit(f"--size must be 8 or 32, got {size}")
    deq = lambda a: (a.astype(np.float32) + rng.uniform(size=a.shape)).astype(np.float32)
    return deq(train), deq(test)


def batches(train: np.ndarray, steps: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [train[rng.choice(len(train), BATCH, replace=False)] for _ in range(steps)]


def median_ms(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


@dataclasses.dataclass
class Contender:
    """One library's model on one path: ``train()`` runs ``steps`` training steps and returns once
    they are done; ``latencies()`` gives its inference figures; ``info`` is reported as is."""

    train: Callable[[], None]
    steps: int
    latencies: Callable[[], dict]
    info: dict = dataclasses.field(default_factory=dict)


def step_loop(step: Callable, data: list, finish: Callable = float) -> Callable[[], None]:
    """A training run of ``step`` over the batches ``data`` (a library's own loop); ``finish``
    applied to the last loss waits for asynchronous work to end."""
    def train():
        for batch in data:
            loss = step(batch)
        finish(loss)
    return train


def time_training(contenders: dict[str, Contender], repeats: int) -> dict[str, dict]:
    """Training throughput of every contender, measured side by side: one warm-up run each
    (tracing, XLA compilation), then ``repeats`` rounds running every contender once, the order
    reversed every other round so that drifting load from other processes hits all alike.
    Returns per contender ``train_images_per_second`` (median run), ``..._best`` (fastest run:
    the least disturbed by other processes), ``train_images_per_cpu_second`` (median over the
    process's CPU time, all threads), every run's figure and the warm-up's seconds."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    cpu_rates: dict[str, list[float]] = {name: [] for name in contenders}
    first: dict[str, float] = {}
    for name, contender in contenders.items():
        started = time.perf_counter()
        contender.train()
        first[name] = time.perf_counter() - started
        log(f"{name}: warm-up {first[name]:.1f} s")
    for round_ in range(repeats):
        order = list(contenders) if round_ % 2 == 0 else list(contenders)[::-1]
        for name in order:
            images = BATCH * contenders[name].steps
            started, cpu_started = time.perf_counter(), time.process_time()
            contenders[name].train()
            rates[name].append(images / (time.perf_counter() - started))
            cpu_rates[name].append(images / (time.process_time() - cpu_started))
    return {name: {"train_images_per_second": statistics.median(rates[name]),
                   "train_images_per_second_best": max(rates[name]),
                   "train_images_per_cpu_second": statistics.median(cpu_rates[name]),
                   "train_images_per_second_runs": [round(r, 1) for r in rates[name]],
                   "train_first_run_seconds": first[name]} for name in contenders}


# ----------------------------------------------------------------------------- tfinv
def tfinv_glow(shape, path: str, train, test, steps: int) -> Contender:
    import keras

    import tfinv

    keras.utils.set_random_seed(0)
    model = tfinv.models.Glow(shape, levels=LEVELS, steps_per_level=STEPS_PER_LEVEL,
                              hidden_channels=WIDTH, num_levels=NUM_LEVELS, seed=0)
    return _tfinv_contender(model, path, train, test, steps)


def _tfinv_contender(model, path, train, test, steps) -> Contender:
    import keras

    import tfinv

    model.initialize(tf.constant(train[:BATCH]))
    optimizer = keras.optimizers.Adam(1e-3)
    if path == "eager":
        model.compile(optimizer=optimizer, run_eagerly=True, jit_compile=False, steps_per_execution=1)
        model.inference_mode = "eager"
        steps = max(2, steps // 10)
    elif path == "compiled":
        model.compile(optimizer=optimizer, jit_compile=False, steps_per_execution=1)
        model.inference_mode = "graph"
    elif path == "xla":
        model.compile(optimizer=optimizer, jit_compile=True, steps_per_execution=1)
        model.inference_mode = "xla"
    else:
        model.compile(optimizer=optimizer)  # the defaults under test
    ds = tf.data.Dataset.from_tensor_slices(train).shuffle(len(train), seed=0).repeat()
    # tfinv's pipelines' options (tf.data's autotuner off: it stalled the end of half the fit
    # calls by ~0.5 s here; see tfinv.data.dataset_options)
    ds = ds.batch(BATCH, drop_remainder=True).prefetch(tf.data.AUTOTUNE).with_options(tfinv.data.dataset_options())
    per_execution = int(getattr(model, "steps_per_execution", 1) or 1)
    steps = max(per_execution, steps - steps % per_execution)
    test_t = tf.constant(test)
    inference_repeats = 3 if path == "eager" else 15

    def latencies():
        return {
            "sample64_ms": median_ms(lambda: model.sample(64).numpy(), inference_repeats),
            "log_prob_test_ms": median_ms(lambda: model.log_prob(test_t).numpy(), max(3, inference_repeats // 2)),
            "inference_uses_xla": model.inference_uses_xla,
        }

    return Contender(
        train=lambda: model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0), steps=steps,
        latencies=latencies,
        info={"jit_compile": bool(model.jit_compile), "steps_per_execution": per_execution, "timed_steps": steps},
    )


def tfinv_vector(path, train, test, steps) -> Contender:
    import keras

    from tfinv.core import FlowModel
    from tfinv.layers import VectorActNorm, VectorAffineCoupling, VectorInvLinear

    keras.utils.set_random_seed(0)
    layers = []
    for i in range(3):
        layers += [VectorActNorm(name=f"act_norm_{i}"), VectorInvLinear(name=f"linear_{i}"),
                   VectorAffineCoupling(parity=0, name=f"coupling_{i}a"),
                   VectorAffineCoupling(parity=1, name=f"coupling_{i}b")]
    model = FlowModel(layers, input_shape=(64,))
    contender = _tfinv_contender(model, path, _flat(train), _flat(test), steps)
    contender.info["num_parameters"] = int(sum(np.prod(v.shape) for v in model.trainable_variables))  # as the peers
    return contender


def _flat(images: np.ndarray) -> np.ndarray:
    return (images.reshape(len(images), -1) / NUM_LEVELS - 0.5).astype(np.float32)


def bayesflow_vector(train, test, steps) -> Contender:
    """BayesFlow 2's ``CouplingFlow`` with the same vector flow as `tfinv_vector`: 3 x [ActNorm,
    learned 64 x 64 linear map ("orthogonal" permutation: a free matrix, log-det by ``det``),
    dual affine coupling with 32 -> 64 -> 64 -> 64 ReLU MLPs (no residual, no dropout)]: 75,264
    trained parameters, as tfinv's. Trained by one ``tf.function`` step (Keras Adam 1e-3), the
    loss ``-mean log p(x)`` from ``flow(x, density=True)``; on CPU BayesFlow's own ``fit`` path
    is a ``tf.function`` too (Keras's "auto" picks no XLA there)."""
    import bayesflow as bf  # benchmark-only dependency (ImportError: reported as the row's error)
    import keras

    keras.utils.set_random_seed(0)
    flow = bf.networks.CouplingFlow(
        depth=3, transform="affine", permutation="orthogonal", use_actnorm=True,
        subnet_kwargs={"widths": (WIDTH, WIDTH), "activation": "relu", "residual": False, "dropout": 0.0})
    train, test = _flat(train), _flat(test)
    flow.build((None, train.shape[1]))
    variables = flow.trainable_variables
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(variables)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            _, log_density = flow(x, inverse=False, density=True, training=True)
            loss = -tf.reduce_mean(log_density)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    test_t = tf.constant(test)
    sample = tf.function(lambda: flow.sample((64,)))
    log_prob = tf.function(lambda x: flow.log_prob(x))
    return Contender(
        train=step_loop(step, [tf.constant(b) for b in batches(train, steps)]), steps=steps,
        latencies=lambda: {"sample64_ms": median_ms(lambda: sample().numpy(), 15),
                           "log_prob_test_ms": median_ms(lambda: log_prob(test_t).numpy(), 7)},
        info={"num_parameters": int(sum(np.prod(v.shape) for v in variables)),
              "bayesflow": getattr(bf, "__version__", "?")},
    )


# ----------------------------------------------------------------------------- TFP
def tfp_glow(shape, jit: bool, train, test, steps) -> Contender:
    import tensorflow_probability as tfp
    import tf_keras

    tfb, tfd = tfp.bijectors, tfp.distributions
    tf.random.set_seed(0)
    glow = tfb.Glow(
        output_shape=shape, num_glow_blocks=LEVELS, num_steps_per_block=STEPS_PER_LEVEL,
        coupling_bijector_fn=lambda s: tfb.GlowDefaultNetwork(s, num_hidden=WIDTH),
        exit_bijector_fn=tfb.GlowDefaultExitNetwork, grab_after_block=(0.5,) * LEVELS)
    dim = int(np.prod(shape))
    dist = tfd.TransformedDistribution(tfd.Sample(tfd.Normal(0.0, 1.0), [dim]), glow)
    scale = 1.0 / NUM_LEVELS
    dist.log_prob(tf.zeros((1,) + tuple(shape)))  # builds the Keras networks
    variables = dist.trainable_variables
    optimizer = tf_keras.optimizers.Adam(1e-3)

    @tf.function(jit_compile=jit)
    def step(x):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(dist.log_prob(x * scale))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    sample = tf.function(lambda: dist.sample(64), jit_compile=jit)
    test_t = tf.constant(test)
    log_prob = tf.function(lambda x: dist.log_prob(x * scale), jit_compile=jit)
    return Contender(
        train=step_loop(step, [tf.constant(b) for b in batches(train, steps)]), steps=steps,
        latencies=lambda: {"sample64_ms": median_ms(lambda: sample().numpy(), 15),
                           "log_prob_test_ms": median_ms(lambda: log_prob(test_t).numpy(), 7)},
        info={"num_parameters": int(sum(np.prod(v.shape) for v in variables))},
    )


# ----------------------------------------------------------------------------- normflows
def normflows_glow(shape, train, test, steps) -> Contender:
    import normflows as nf  # benchmark-only dependencies (ImportError: reported as the row's error)
    import torch

    torch.manual_seed(0)
    # One intra-op thread: on these shared cores PyTorch's OpenMP pool with 2 threads was measured
    # 10-50x slower (spinning threads fighting other processes); 1 thread is normflows' best here.
    torch.set_num_threads(TORCH_THREADS)
    h, w, c = shape
    q0, merges, flows = [], [], []
    for i in range(LEVELS):
        level = [nf.flows.GlowBlock(c * 2 ** (LEVELS + 1 - i), WIDTH, split_mode="channel", scale=True)
                 for _ in range(STEPS_PER_LEVEL)]
        flows.append(level + [nf.flows.Squeeze()])
        if i > 0:
            merges.append(nf.flows.Merge())
            latent = (c * 2 ** (LEVELS - i), h // 2 ** (LEVELS - i), w // 2 ** (LEVELS - i))
        else:
            latent = (c * 2 ** (LEVELS + 1), h // 2 ** LEVELS, w // 2 ** LEVELS)
        q0.append(nf.distributions.DiagGaussian(latent))
    model = nf.MultiscaleFlow(q0, flows, merges, class_cond=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    to_torch = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)) / NUM_LEVELS)
    data = [to_torch(b) for b in batches(train, steps)]

    def step(x):
        optimizer.zero_grad()
        loss = model.forward_kld(x)
        loss.backward()
        optimizer.step()
        return loss

    with torch.no_grad():
        model.log_prob(data[0], None)  # data-dependent ActNorm init happens on the first pass
    test_t = to_torch(test)

    def latencies():
        model.eval()

        def sample():
            with torch.no_grad():
                return model.sample(64)[0].numpy()

        def log_prob():
            with torch.no_grad():
                return model.log_prob(test_t, None).numpy()

        figures = {"sample64_ms": median_ms(sample, 15), "log_prob_test_ms": median_ms(log_prob, 7)}
        model.train()
        return figures

    return Contender(
        train=step_loop(step, data), steps=steps, latencies=latencies,
        info={"num_parameters": int(sum(p.numel() for p in model.parameters())),
              "torch": torch.__version__, "normflows": getattr(nf, "__version__", "?"),
              "torch_threads": torch.get_num_threads()},
    )


# ----------------------------------------------------------------------------- plot
_LIBRARY_COLOURS = {"tfinv": "tab:blue", "tfp": "tab:orange", "normflows": "tab:green", "bayesflow": "tab:red"}
_LIBRARY_NAMES = {"tfinv": "tfinv", "tfp": "TFP", "normflows": "normflows", "bayesflow": "BayesFlow"}
_LABELS = {
    "tfinv_eager": "tfinv Glow, eager", "tfinv_default": "tfinv Glow, default", "tfinv_xla": "tfinv Glow, XLA",
    "tfp_function": "TFP Glow, tf.function", "tfp_xla": "TFP Glow, XLA", "normflows": "normflows Glow (PyTorch)",
    "tfinv_vector_eager": "tfinv vector flow, eager", "tfinv_vector_default": "tfinv vector flow, default",
    "tfinv_vector_xla": "tfinv vector flow, XLA", "bayesflow_vector": "BayesFlow vector flow, tf.function",
}


def write_plot(report: dict, path: str) -> None:
    """Horizontal bar charts (matplotlib, from the ``benchmarks`` extra), one panel per figure:
    training images/s (higher is better), ``sample(64)`` and ``log_prob`` latency in ms (lower is
    better, log axis); bars coloured by library, each labelled with its value; the Glow runs and
    the vector-flow runs are separated by a line. Written to a temporary file, then renamed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {k: v for k, v in report["runs"].items() if "error" not in v}
    names = list(runs)
    metrics = [("train_images_per_second", "training throughput (images/s)\nhigher is better", "linear"),
               ("sample64_ms", "sample(64) latency (ms)\nlower is better", "log"),
               ("log_prob_test_ms", "log_prob of the 360 test images (ms)\nlower is better", "log")]
    fig, axes = plt.subplots(1, 3, figsize=(17, 0.45 * len(names) + 2.6), sharey=True)
    colours = [next(c for lib, c in _LIBRARY_COLOURS.items() if n.startswith(lib)) for n in names]
    positions = np.arange(len(names))
    first_vector = next((i for i, n in enumerate(names) if "vector" in n), None)
    for ax, (key, title, scale) in zip(axes, metrics):
        values = [runs[n].get(key, 0.0) for n in names]
        ax.barh(positions, values, color=colours, height=0.7)
        ax.set_xscale(scale)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3, which="both")
        right = max(values) * (1.35 if scale == "linear" else 4.0)
        ax.set_xlim(right=right, left=0 if scale == "linear" else min(values) / 2)
        for y, v in zip(positions, values):
            ax.text(v, y, f" {v:,.0f}" if v >= 100 else f" {v:.3g}", va="center", fontsize=8)
        if first_vector:
            ax.axhline(first_vector - 0.5, color="grey", linewidth=0.8, linestyle="--")
    axes[0].set_yticks(positions, [_LABELS.get(n, n) for n in names], fontsize=9)
    axes[0].invert_yaxis()
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for lib, c in _LIBRARY_COLOURS.items()
               if any(n.startswith(lib) for n in names)]
    fig.legend(handles, [_LIBRARY_NAMES[lib] for lib in _LIBRARY_COLOURS if any(n.startswith(lib) for n in names)],
               loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.suptitle(f"{report['data']}: Glow L={LEVELS}, K={STEPS_PER_LEVEL}, width {WIDTH}, batch {BATCH}, "
                 "Adam 1e-3; all runs in one process on 2 shared CPU cores (compare ratios, not absolute values)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp")
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- main
TRAIN_ONLY_RUNS = ("tfinv_default", "tfinv_xla", "tfp_xla")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8, choices=(8, 32))
    parser.add_argument("--steps", type=int, default=40, help="train steps per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="+", help="run names to keep (e.g. tfinv_default normflows)")
    parser.add_argument("--train-only", action="store_true",
                        help=f"training throughput only (no inference latencies), by default of "
                        f"{', '.join(TRAIN_ONLY_RUNS)}: the Glow training comparison alone")
    parser.add_argument("--vector", action="store_true", help="also the vector flow on 64 pixels")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--plot", default="", help="bar-chart PNG ('' to skip)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    train, test = make_data(args.size)
    shape = tuple(train.shape[1:])
    builders = {
        "tfinv_eager": lambda: tfinv_glow(shape, "eager", train, test, args.steps),
        "tfinv_default": lambda: tfinv_glow(shape, "default", train, test, args.steps),
        "tfinv_xla": lambda: tfinv_glow(shape, "xla", train, test, args.steps),
        "tfp_function": lambda: tfp_glow(shape, False, train, test, args.steps),
        "tfp_xla": lambda: tfp_glow(shape, True, train, test, args.steps),
        "normflows": lambda: normflows_glow(shape, train, test, args.steps),
    }
    if args.vector and args.size == 8:
        for path in ("eager", "default", "xla"):
            builders[f"tfinv_vector_{path}"] = lambda p=path: tfinv_vector(p, train, test, args.steps * 2)
        builders["bayesflow_vector"] = lambda: bayesflow_vector(train, test, args.steps * 2)
    keep = args.only or (TRAIN_ONLY_RUNS if args.train_only else None)
    if keep:
        builders = {k: v for k, v in builders.items() if k in keep}
    results: dict[str, dict] = {}

    def guarded(name, fn):
        """``fn()``, or ``None`` with the error recorded: one library failing must not lose the others."""
        try:
            return fn()
        except Exception as error:
            results[name] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
            log(f"{name}: {results[name]['error']}")
            return None

    with stdout_to_stderr() as real_stdout:
        contenders = {}
        for name, build in builders.items():
            log(f"{name}: building")
            contender = guarded(name, build)
            if contender is not None:
                contenders[name] = contender
        training = guarded("training", lambda: time_training(contenders, args.repeats)) or {}
        for name, contender in contenders.items():
            results[name] = {**training.get(name, {}), **contender.info}
            if not args.train_only:
                results[name].update(guarded(name, contender.latencies) or {})
            log(f"{name}: {json.dumps(results[name], default=float)}")
        results = {name: results[name] for name in builders if name in results}  # the table's order
        report = {
            "benchmark": "speed",
            "data": f"{'digits 8x8x1' if args.size == 8 else 'generated 32x32x3'} "
                    f"({len(train)} train / {len(test)} test)",
            "protocol": {"levels": LEVELS, "steps_per_level": STEPS_PER_LEVEL, "width": WIDTH,
                         "batch": BATCH, "optimizer": "Adam 1e-3", "steps": args.steps,
                         "repeats": args.repeats, "train_only": args.train_only,
                         "order": "warm-up of each, then rounds of one run each, order reversed every other round"},
            "runs": results,
            "note": "2 shared CPU cores under load from other jobs: absolute figures are noisy, "
                    "compare ratios within one run",
            "environment": {"python": platform.python_version(), "tensorflow": tf.__version__,
                            "cpu_count": os.cpu_count()},
        }
        report["tfinv_default_ratios"] = ratios(results)
        report["wall_seconds"] = round(time.perf_counter() - started, 1)
        text = json.dumps(report, indent=2, default=float)
        if args.out:
            tmp = args.out + ".tmp"
            with open(tmp, "w") as f:
                f.write(text + "\n")
            os.replace(tmp, args.out)
        if args.plot and not args.train_only:
            write_plot(report, args.plot)
        print(text, file=real_stdout, flush=True)
    return 0


def ratios(results: dict[str, dict]) -> dict[str, float]:
    """tfinv's default path (and its XLA path, for training) against each peer measured in the same
    run: training throughput ratios (> 1: tfinv faster) and latency speed-ups (> 1: tfinv faster)."""
    ok = lambda name: name in results and "error" not in results[name]
    out = {}
    pairs = [("", "tfinv_default", peer) for peer in ("normflows", "tfp_function", "tfp_xla")]
    pairs += [("xla_", "tfinv_xla", "tfp_xla"), ("vector_", "tfinv_vector_default", "bayesflow_vector"),
              ("vector_xla_", "tfinv_vector_xla", "bayesflow_vector")]
    for prefix, ours, peer in pairs:
        if not (ok(ours) and ok(peer)):
            continue
        a, b = results[ours], results[peer]
        suffix = "" if prefix.startswith("vector") else f"_vs_{peer}"
        name = (prefix + "train" + suffix) if not prefix.startswith("vector") else f"{prefix}train_vs_bayesflow"
        for key, label in (("train_images_per_second", ""), ("train_images_per_second_best", "_best_run"),
                           ("train_images_per_cpu_second", "_cpu_time")):
            if key in a and key in b:
                out[name + label] = a[key] / b[key]
        if prefix in ("", "vector_"):
            for key, label in (("sample64_ms", "sample64_speedup"), ("log_prob_test_ms", "log_prob_speedup")):
                if key in a and key in b:
                    out[f"{prefix}{label}_vs_{'bayesflow' if prefix else peer}"] = b[key] / a[key]
    return out


if __name__ == "__main__":
    sys.exit(main())
