"""Fourier flow vs RealNVP on synthetic time series with known spectra.

Two stationary processes of length ``T`` (one channel), each with a closed-form power spectral
density ``S(w)``:

* ``ar2``: ``x_t = phi_1 x_{t-1} + phi_2 x_{t-2} + e_t`` (complex roots: one spectral peak),
  ``S(w) = sigma^2 / |1 - phi_1 e^{-iw} - phi_2 e^{-2iw}|^2``;
* ``seasonal``: ``x_t = Phi x_{t-P} + e_t`` (seasonal AR(1), period ``P``: peaks at the multiples
  of ``1 / P``), ``S(w) = sigma^2 / |1 - Phi e^{-iwP}|^2``.

The *known spectrum* a finite sample should show is the expected periodogram
``E|X_k|^2 / T = sum_{|h| < T} (1 - |h| / T) gamma(h) e^{-i w_k h}`` (the PSD blurred by the
Fejer kernel), with the autocovariances ``gamma(h)`` integrated from ``S`` on a fine grid (4096
points: exact to float64 round-off for these smooth spectra).

Models, trained by maximum likelihood with ``model.fit`` at the same budget (steps, batch, Adam):

* ``FourierFlow((T, 1))``: real DFT, per-frequency ActNorm, ``K`` spectral filter couplings;
* ``RealNVP``: ``FlowModel`` on ``(T,)`` vectors: ``VectorActNorm`` and ``K`` ``VectorAffineCoupling``
  layers alternating the two halves of the sequence, hidden width chosen so that the parameter
  count is the closest to the Fourier flow's (both counts are reported).

Metrics: held-out log-likelihood (nats per sequence, on the same time-domain data: the
orthonormal DFT has log-det 0, so the two models' densities are comparable; the exact Gaussian
log-likelihood under the true process, Toeplitz covariance from ``gamma``, is the reference) and the spectral
error of ``n`` samples: mean over the frequencies ``k = 0 .. T // 2`` of
``|10 log10(P_model(k) / P_true(k))|`` dB, ``P_model`` the samples' mean periodogram. The same
error of ``n`` held-out *data* sequences is the sampling-noise floor. Both metrics are also
reported right after the data-dependent ActNorm initialisation, before any training step: for
the Fourier flow that is already a Gaussian with one variance per Fourier coefficient, which
for a stationary process is most of its structure (the inductive bias the comparison measures).

Writes ``benchmarks/figures/fourier_flows.json`` and ``fourier_flows.png`` (true vs sampled
spectra, drawn with Pillow), each whole (temporary file, then rename); prints the JSON.

Usage: ``python benchmarks/fourier_flows.py [--steps 600] [--length 32]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import log, stdout_to_stderr  # noqa: E402

FIGURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures")

PROCESSES = {
    "ar2": {"ar": {1: 0.75, 2: -0.5}, "sigma": 1.0},
    "seasonal": {"ar": {8: 0.8}, "sigma": 1.0},
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=32, help="sequence length T")
    parser.add_argument("--train", type=int, default=20000, help="training sequences per process")
    parser.add_argument("--test", type=int, default=2000, help="held-out sequences (and samples) per process")
    parser.add_argument("--steps", type=int, default=600, help="training steps per model")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--couplings", type=int, default=4, help="couplings K of both models")
    parser.add_argument("--hidden", type=int, default=32, help="hidden width of the Fourier flow's MLPs")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(FIGURES, "fourier_flows.json"))
    parser.add_argument("--png", default=os.path.join(FIGURES, "fourier_flows.png"))
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- processes
def simulate(process: dict, n: int, length: int, rng: np.random.Generator, burn_in: int = 500) -> np.ndarray:
    """``n`` stationary sequences ``(n, length)`` of the AR process (after a burn-in)."""
    lags = process["ar"]
    total = burn_in + length
    x = np.zeros((n, total))
    noise = process["sigma"] * rng.standard_normal((n, total))
    for t in range(total):
        x[:, t] = noise[:, t] + sum(c * x[:, t - lag] for lag, c in lags.items() if t >= lag)
    return x[:, burn_in:]


def power_spectral_density(process: dict, omega: np.ndarray) -> np.ndarray:
    """``S(w) = sigma^2 / |1 - sum_l c_l e^{-i w l}|^2`` (autocovariance ``gamma(h) = (1/2pi) int S e^{iwh}``)."""
    transfer = 1.0 - sum(c * np.exp(-1j * omega * lag) for lag, c in process["ar"].items())
    return process["sigma"] ** 2 / np.abs(transfer) ** 2


def expected_periodogram(process: dict, length: int, grid: int = 4096) -> np.ndarray:
    """``E|X_k|^2 / T`` for ``k = 0 .. T // 2`` (the known spectrum of a length-``T`` sample)."""
    gamma = autocovariance(process, length, grid)
    lags = np.arange(-(length - 1), length)
    weights = (1 - np.abs(lags) / length) * gamma[np.abs(lags)]
    k = np.arange(length // 2 + 1)
    return np.real(np.exp(-2j * np.pi * np.outer(k, lags) / length) @ weights)


def autocovariance(process: dict, length: int, grid: int = 4096) -> np.ndarray:
    """``gamma(h)``, ``h = 0 .. length - 1``, from the PSD on a fine grid."""
    omega = 2 * np.pi * np.arange(grid) / grid
    return np.real(np.fft.ifft(power_spectral_density(process, omega)))[:length]


def true_log_likelihood(process: dict, x: np.ndarray) -> np.ndarray:
    """``log N(x; 0, Gamma)`` per sequence under the true (Gaussian, stationary) process, with the
    Toeplitz covariance ``Gamma[s, t] = gamma(|s - t|)``: the best a model can do on average."""
    length = x.shape[-1]
    gamma = autocovariance(process, length)
    cov = gamma[np.abs(np.subtract.outer(np.arange(length), np.arange(length)))]
    chol = np.linalg.cholesky(cov)
    white = np.linalg.solve(chol, x.T.astype(np.float64))
    return -0.5 * np.sum(white**2, axis=0) - np.sum(np.log(np.diag(chol))) - 0.5 * length * np.log(2 * np.pi)


def periodogram(x: np.ndarray) -> np.ndarray:
    """Mean periodogram ``mean_n |rfft(x_n)|^2 / T``, ``(T // 2 + 1,)``."""
    return np.mean(np.abs(np.fft.rfft(x, axis=-1)) ** 2, axis=0) / x.shape[-1]


def spectral_error_db(estimate: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.abs(10 * np.log10(estimate / truth))))


# ----------------------------------------------------------------------------- models
def count_parameters(model) -> int:
    return int(sum(np.prod(v.shape) for v in model.trainable_variables))


def real_nvp(length: int, couplings: int, hidden: int):
    import tfinv
    from tfinv import layers

    steps = [layers.VectorActNorm(name="act_norm")]
    steps += [layers.VectorAffineCoupling(parity=i % 2, hidden_units=hidden, name=f"coupling_{i}")
              for i in range(couplings)]
    return tfinv.FlowModel(steps, input_shape=(length,), name="real_nvp")


def fourier_flow(length: int, couplings: int, hidden: int):
    from tfinv.models import FourierFlow

    return FourierFlow((length, 1), num_couplings=couplings, hidden_units=hidden)


def matched_real_nvp(length: int, couplings: int, target: int):
    """The RealNVP whose parameter count is the closest to ``target``."""
    best = None
    for hidden in range(4, 257):
        model = real_nvp(length, couplings, hidden)
        gap = abs(count_parameters(model) - target)
        if best is None or gap < best[0]:
            best = (gap, hidden)
        if count_parameters(model) > target:
            break
    return real_nvp(length, couplings, best[1]), best[1]


def train(model, x_train: np.ndarray, args) -> dict:
    import keras
    import tensorflow as tf

    model.compile(keras.optimizers.Adam(args.lr))
    steps_per_epoch = len(x_train) // args.batch_size
    epochs = max(1, math.ceil(args.steps / steps_per_epoch))
    dataset = (tf.data.Dataset.from_tensor_slices(x_train).shuffle(len(x_train), seed=args.seed)
               .batch(args.batch_size, drop_remainder=True).repeat())
    start = time.perf_counter()
    history = model.fit(dataset, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=0)
    return {"seconds": time.perf_counter() - start, "steps": epochs * steps_per_epoch,
            "final_train_nll": float(history.history["loss"][-1])}


def evaluate(model, x_test: np.ndarray, shape, truth: np.ndarray, seed: int) -> tuple[dict, np.ndarray]:
    log_prob = np.asarray(model.log_prob(x_test.reshape((-1,) + shape)))
    samples = np.asarray(model.sample(len(x_test), seed=seed)).reshape(len(x_test), -1)
    spectrum = periodogram(samples)
    return {
        "test_log_likelihood": float(np.mean(log_prob)),
        "test_log_likelihood_se": float(np.std(log_prob) / math.sqrt(len(log_prob))),
        "spectral_error_db": spectral_error_db(spectrum, truth),
        "samples_finite": bool(np.all(np.isfinite(samples))),
    }, spectrum


# ----------------------------------------------------------------------------- figure
def draw_png(results: dict, spectra: dict, path: str) -> None:
    """Log-spectrum panels (one per process): true (black), Fourier flow (blue), RealNVP (red)."""
    from PIL import Image, ImageDraw

    panel_w, panel_h, margin = 420, 300, 50
    names = list(spectra)
    image = Image.new("RGB", (panel_w * len(names), panel_h + 40), "white")
    draw = ImageDraw.Draw(image)
    colours = {"true": (0, 0, 0), "fourier_flow": (30, 90, 220), "real_nvp": (220, 50, 40)}
    for p, name in enumerate(names):
        curves = {key: 10 * np.log10(value) for key, value in spectra[name].items()}
        low = min(c.min() for c in curves.values()) - 1
        high = max(c.max() for c in curves.values()) + 1
        left, right, top, bottom = p * panel_w + margin, (p + 1) * panel_w - 15, 30, panel_h - 10
        draw.rectangle([left, top, right, bottom], outline=(150, 150, 150))
        draw.text((left, 8), f"{name}: periodogram (dB) vs frequency k/T", fill=(0, 0, 0))
        draw.text((left - 45, top), f"{high:.0f}", fill=(0, 0, 0))
        draw.text((left - 45, bottom - 10), f"{low:.0f}", fill=(0, 0, 0))
        for key, curve in curves.items():
            xs = left + (right - left) * np.arange(len(curve)) / (len(curve) - 1)
            ys = bottom - (bottom - top) * (curve - low) / (high - low)
            draw.line(list(zip(xs.tolist(), ys.tolist())), fill=colours[key], width=3 if key == "true" else 2)
        errors = results[name]
        draw.text((left + 5, bottom + 5),
                  f"error dB: FF {errors['fourier_flow']['spectral_error_db']:.2f}  "
                  f"RealNVP {errors['real_nvp']['spectral_error_db']:.2f}  "
                  f"data {errors['data_noise_floor_db']:.2f}", fill=(0, 0, 0))
    legend_x = 10
    for key, colour in colours.items():
        draw.line([(legend_x, panel_h + 28), (legend_x + 25, panel_h + 28)], fill=colour, width=3)
        draw.text((legend_x + 30, panel_h + 22), key, fill=(0, 0, 0))
        legend_x += 140
    import io

    from tfinv.files import write_bytes_atomic

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())


def main(argv=None) -> dict:
    args = parse_args(argv)
    with stdout_to_stderr() as stdout:
        import keras

        from tfinv.files import atomic_write

        results, spectra = {}, {}
        started = time.perf_counter()
        for index, (name, process) in enumerate(PROCESSES.items()):
            rng = np.random.default_rng(args.seed + index)
            x_train = simulate(process, args.train, args.length, rng).astype(np.float32)
            x_test = simulate(process, args.test, args.length, rng).astype(np.float32)
            truth = expected_periodogram(process, args.length)
            spectra[name] = {"true": truth}
            true_ll = true_log_likelihood(process, x_test)
            results[name] = {"data_noise_floor_db": spectral_error_db(periodogram(x_test), truth),
                             "true_process_test_log_likelihood": float(np.mean(true_ll)),
                             "true_expected_periodogram": truth.tolist()}
            keras.utils.set_random_seed(args.seed)
            ff = fourier_flow(args.length, args.couplings, args.hidden)
            keras.utils.set_random_seed(args.seed)
            nvp, nvp_hidden = matched_real_nvp(args.length, args.couplings, count_parameters(ff))
            for key, model, shape in (("fourier_flow", ff, (args.length, 1)), ("real_nvp", nvp, (args.length,))):
                log(f"{name}: training {key} ({count_parameters(model)} parameters)")
                model.initialize(x_train[: 4 * args.batch_size].reshape((-1,) + shape))
                # the control: after the data-dependent ActNorm, before any step (a diagonal
                # Gaussian on the Fourier coefficients for the Fourier flow, on the time steps
                # for RealNVP)
                at_init, _ = evaluate(model, x_test, shape, truth, seed=args.seed + 7)
                fit = train(model, x_train.reshape((-1,) + shape), args)
                metrics, spectrum = evaluate(model, x_test, shape, truth, seed=args.seed + 7)
                spectra[name][key] = spectrum
                results[name][key] = {"parameters": count_parameters(model), **fit, **metrics,
                                      "after_act_norm_initialisation_only": at_init,
                                      "sample_periodogram": spectrum.tolist()}
                if key == "real_nvp":
                    results[name][key]["hidden_units"] = nvp_hidden
                log(f"  {key}: test log-lik {metrics['test_log_likelihood']:.3f} nats, "
                    f"spectral error {metrics['spectral_error_db']:.2f} dB, {fit['seconds']:.1f} s")
        report = {
            "benchmark": "fourier_flows",
            "config": vars(args) | {"processes": {k: {"ar": {str(l): c for l, c in v["ar"].items()},
                                                      "sigma": v["sigma"]} for k, v in PROCESSES.items()}},
            "units": {"test_log_likelihood": "nats per sequence (higher is better)",
                      "spectral_error_db": "mean |10 log10(P_samples / P_true)| over k = 0..T//2 (lower is better)"},
            "results": results,
            "total_seconds": time.perf_counter() - started,
            "load_average": os.getloadavg()[0],
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with atomic_write(args.out) as f:
            json.dump(report, f, indent=1)
        if args.png:
            draw_png(results, spectra, args.png)
        summary = {name: {key: {m: r[key][m] for m in ("parameters", "test_log_likelihood", "spectral_error_db")}
                          for key in ("fourier_flow", "real_nvp")} | {"data_noise_floor_db": r["data_noise_floor_db"],
                                                              "true_process_test_log_likelihood":
                                                                  r["true_process_test_log_likelihood"]}
                   for name, r in results.items()}
        print(json.dumps({"summary": summary, "out": args.out, "png": args.png}, indent=1), file=stdout)
    return report


if __name__ == "__main__":
    main()
