"""Benchmark: training throughput and sampling / density latency of tfinv against normflows and
TFP, on eager, compiled (``tf.function``) and XLA paths, in one run.

Protocol (issue 13): multi-scale Glow, L = 2 levels, K = 4 steps, coupling width 64, batch 64,
Adam 1e-3, on the embedded digits (8 x 8 x 1, 17 grey levels, dequantised), and on generated
32 x 32 x 3 images (``--size 32``: digits upscaled 4x, tinted with a random colour per image)
where the compute-bound regime shows. Every library trains the same architecture on the same
dequantised batches; the figures are:

* ``train_images_per_second``: median over ``--repeats`` timed runs of ``--steps`` train steps
  (after a warm-up run that traces / compiles), ``batch * steps / wall time``;
* ``sample64_ms``: median latency of drawing 64 samples (result materialised in host memory);
* ``log_prob_test_ms``: median latency of ``log_prob`` of the 360 test images (digits) or of
  360 generated test images (``--size 32``).

Paths: tfinv ``eager`` (``run_eagerly=True``; inference ``inference_mode="eager"``),
``default`` (plain ``model.compile()`` and plain ``model.sample`` / ``log_prob``: on a CPU no XLA
training and one step per call, XLA inference where the model compiles) and ``xla``
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
[--out speed.json] [--plot speed.png]``. Machines are shared and noisy: compare ratios within
one run. Timings are for reading, never asserted in tests.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

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


# ----------------------------------------------------------------------------- tfinv
def tfinv_glow(shape, path: str, train, test, steps: int, repeats: int) -> dict:
    import keras

    import tfinv

    keras.utils.set_random_seed(0)
    model = tfinv.models.Glow(shape, levels=LEVELS, steps_per_level=STEPS_PER_LEVEL,
                              hidden_channels=WIDTH, num_levels=NUM_LEVELS, seed=0)
    return _tfinv_run(model, path, train, test, steps, repeats)


def _tfinv_run(model, path, train, test, steps, repeats) -> dict:
    import keras

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
    ds = ds.batch(BATCH, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    per_execution = int(getattr(model, "steps_per_execution", 1) or 1)
    steps = max(per_execution, steps - steps % per_execution)
    started = time.perf_counter()
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)  # warm-up: tracing and XLA
    warmup_s = time.perf_counter() - started
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
        rates.append(BATCH * steps / (time.perf_counter() - start))
    test_t = tf.constant(test)
    inference_repeats = 3 if path == "eager" else 15
    row = {
        "train_images_per_second": statistics.median(rates),
        "train_first_run_seconds": warmup_s,
        "sample64_ms": median_ms(lambda: model.sample(64).numpy(), inference_repeats),
        "log_prob_test_ms": median_ms(lambda: model.log_prob(test_t).numpy(), max(3, inference_repeats // 2)),
        "jit_compile": bool(model.jit_compile),
        "steps_per_execution": per_execution,
        "inference_uses_xla": model.inference_uses_xla,
        "timed_steps": steps,
    }
    return row


def tfinv_vector(path, train, test, steps, repeats) -> dict:
    import keras

    from tfinv.core import FlowModel
    from tfinv.layers import LogitPreprocess, VectorActNorm, VectorAffineCoupling, VectorInvLinear

    del LogitPreprocess
    keras.utils.set_random_seed(0)
    layers = []
    for i in range(3):
        layers += [VectorActNorm(name=f"act_norm_{i}"), VectorInvLinear(name=f"linear_{i}"),
                   VectorAffineCoupling(parity=0, name=f"coupling_{i}a"),
                   VectorAffineCoupling(parity=1, name=f"coupling_{i}b")]
    model = FlowModel(layers, input_shape=(64,))
    flat = lambda a: (a.reshape(len(a), -1) / NUM_LEVELS - 0.5).astype(np.float32)
    row = _tfinv_run(model, path, flat(train), flat(test), steps, repeats)
    row["num_parameters"] = int(sum(np.prod(v.shape) for v in model.trainable_variables))  # as the peers
    return row


def bayesflow_vector(train, test, steps, repeats) -> dict:
    """BayesFlow 2's ``CouplingFlow`` with the same vector flow as `tfinv_vector`: 3 x [ActNorm,
    learned 64 x 64 linear map ("orthogonal" permutation: a free matrix, log-det by ``det``),
    dual affine coupling with 32 -> 64 -> 64 -> 64 ReLU MLPs (no residual, no dropout)]: 75,264
    trained parameters, as tfinv's. Trained by one ``tf.function`` step (Keras Adam 1e-3), the
    loss ``-mean log p(x)`` from ``flow(x, density=True)``; on CPU BayesFlow's own ``fit`` path
    is a ``tf.function`` too (Keras's "auto" picks no XLA there)."""
    try:
        import bayesflow as bf
    except ImportError as error:  # benchmark-only dependency
        return {"error": f"bayesflow not installed: {error}"}
    import keras

    keras.utils.set_random_seed(0)
    flow = bf.networks.CouplingFlow(
        depth=3, transform="affine", permutation="orthogonal", use_actnorm=True,
        subnet_kwargs={"widths": (WIDTH, WIDTH), "activation": "relu", "residual": False, "dropout": 0.0})
    flat = lambda a: (a.reshape(len(a), -1) / NUM_LEVELS - 0.5).astype(np.float32)
    train, test = flat(train), flat(test)
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

    data = [tf.constant(b) for b in batches(train, steps)]
    started = time.perf_counter()
    for b in data:
        step(b)
    float(step(data[0]))
    warmup_s = time.perf_counter() - started
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for b in data:
            loss = step(b)
        float(loss)
        rates.append(BATCH * steps / (time.perf_counter() - start))
    test_t = tf.constant(test)
    sample = tf.function(lambda: flow.sample((64,)))
    log_prob = tf.function(lambda x: flow.log_prob(x))
    return {
        "train_images_per_second": statistics.median(rates),
        "train_first_run_seconds": warmup_s,
        "sample64_ms": median_ms(lambda: sample().numpy(), 15),
        "log_prob_test_ms": median_ms(lambda: log_prob(test_t).numpy(), 7),
        "num_parameters": int(sum(np.prod(v.shape) for v in variables)),
        "bayesflow": getattr(bf, "__version__", "?"),
    }


# ----------------------------------------------------------------------------- TFP
def tfp_glow(shape, jit: bool, train, test, steps, repeats) -> dict:
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

    data = [tf.constant(b) for b in batches(train, steps)]
    started = time.perf_counter()
    for b in data:
        step(b)
    float(step(data[0]))
    warmup_s = time.perf_counter() - started
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for b in data:
            loss = step(b)
        float(loss)
        rates.append(BATCH * steps / (time.perf_counter() - start))
    sample = tf.function(lambda: dist.sample(64), jit_compile=jit)
    test_t = tf.constant(test)
    log_prob = tf.function(lambda x: dist.log_prob(x * scale), jit_compile=jit)
    return {
        "train_images_per_second": statistics.median(rates),
        "train_first_run_seconds": warmup_s,
        "sample64_ms": median_ms(lambda: sample().numpy(), 15),
        "log_prob_test_ms": median_ms(lambda: log_prob(test_t).numpy(), 7),
        "num_parameters": int(sum(np.prod(v.shape) for v in variables)),
    }


# ----------------------------------------------------------------------------- normflows
def normflows_glow(shape, train, test, steps, repeats) -> dict:
    try:
        import normflows as nf
        import torch
    except ImportError as error:  # benchmark-only dependencies
        return {"error": f"normflows/torch not installed: {error}"}
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

    started = time.perf_counter()
    with torch.no_grad():
        model.log_prob(data[0], None)  # data-dependent ActNorm init happens on the first pass
    for b in data:
        step(b)
    warmup_s = time.perf_counter() - started
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for b in data:
            loss = step(b)
        float(loss)
        rates.append(BATCH * steps / (time.perf_counter() - start))
    test_t = to_torch(test)
    model.eval()

    def sample():
        with torch.no_grad():
            return model.sample(64)[0].numpy()

    def log_prob():
        with torch.no_grad():
            return model.log_prob(test_t, None).numpy()

    return {
        "train_images_per_second": statistics.median(rates),
        "train_first_run_seconds": warmup_s,
        "sample64_ms": median_ms(sample, 15),
        "log_prob_test_ms": median_ms(log_prob, 7),
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "torch": torch.__version__, "normflows": getattr(nf, "__version__", "?"),
        "torch_threads": torch.get_num_threads(),
    }


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
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8, choices=(8, 32))
    parser.add_argument("--steps", type=int, default=40, help="train steps per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="+", help="run names to keep (e.g. tfinv_default normflows)")
    parser.add_argument("--vector", action="store_true", help="also the vector flow on 64 pixels")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--plot", default="", help="bar-chart PNG ('' to skip)")
    args = parser.parse_args(argv)
    train, test = make_data(args.size)
    shape = tuple(train.shape[1:])
    runs = {
        "tfinv_eager": lambda: tfinv_glow(shape, "eager", train, test, args.steps, args.repeats),
        "tfinv_default": lambda: tfinv_glow(shape, "default", train, test, args.steps, args.repeats),
        "tfinv_xla": lambda: tfinv_glow(shape, "xla", train, test, args.steps, args.repeats),
        "tfp_function": lambda: tfp_glow(shape, False, train, test, args.steps, args.repeats),
        "tfp_xla": lambda: tfp_glow(shape, True, train, test, args.steps, args.repeats),
        "normflows": lambda: normflows_glow(shape, train, test, args.steps, args.repeats),
    }
    if args.vector and args.size == 8:
        for path in ("eager", "default", "xla"):
            runs[f"tfinv_vector_{path}"] = (
                lambda p=path: tfinv_vector(p, train, test, args.steps * 2, args.repeats))
        runs["bayesflow_vector"] = lambda: bayesflow_vector(train, test, args.steps * 2, args.repeats)
    if args.only:
        runs = {k: v for k, v in runs.items() if k in args.only}
    results = {}
    with stdout_to_stderr() as real_stdout:
        for name, run in runs.items():
            log(f"{name} ...")
            try:
                results[name] = run()
            except Exception as error:  # one library failing must not lose the others
                results[name] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"}
            log(f"{name}: {json.dumps(results[name])}")
        report = {
            "benchmark": "speed",
            "data": f"{'digits 8x8x1' if args.size == 8 else 'generated 32x32x3'} "
                    f"({len(train)} train / {len(test)} test)",
            "protocol": {"levels": LEVELS, "steps_per_level": STEPS_PER_LEVEL, "width": WIDTH,
                         "batch": BATCH, "optimizer": "Adam 1e-3", "steps": args.steps,
                         "repeats": args.repeats},
            "runs": results,
            "note": "2 shared CPU cores under load from other jobs: absolute figures are noisy, "
                    "compare ratios within one run",
            "environment": {"python": platform.python_version(), "tensorflow": tf.__version__,
                            "cpu_count": os.cpu_count()},
        }
        base = results.get("tfinv_default", {})
        ratios = {}
        for peer in ("normflows", "tfp_function", "tfp_xla"):
            other = results.get(peer, {})
            if "error" in other or "error" in base or not other or not base:
                continue
            ratios[f"train_vs_{peer}"] = base["train_images_per_second"] / other["train_images_per_second"]
            ratios[f"sample64_speedup_vs_{peer}"] = other["sample64_ms"] / base["sample64_ms"]
            ratios[f"log_prob_speedup_vs_{peer}"] = other["log_prob_test_ms"] / base["log_prob_test_ms"]
        vector, peer = results.get("tfinv_vector_default", {}), results.get("bayesflow_vector", {})
        if vector and peer and "error" not in vector and "error" not in peer:
            ratios["vector_train_vs_bayesflow"] = vector["train_images_per_second"] / peer["train_images_per_second"]
            ratios["vector_sample64_speedup_vs_bayesflow"] = peer["sample64_ms"] / vector["sample64_ms"]
            ratios["vector_log_prob_speedup_vs_bayesflow"] = peer["log_prob_test_ms"] / vector["log_prob_test_ms"]
            xla = results.get("tfinv_vector_xla", {})
            if xla and "error" not in xla:
                ratios["vector_xla_train_vs_bayesflow"] = xla["train_images_per_second"] / peer["train_images_per_second"]
        report["tfinv_default_ratios"] = ratios
        text = json.dumps(report, indent=2, default=float)
        if args.out:
            tmp = args.out + ".tmp"
            with open(tmp, "w") as f:
                f.write(text + "\n")
            os.replace(tmp, args.out)
        if args.plot:
            write_plot(report, args.plot)
        print(text, file=real_stdout, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
