"""Benchmark: RBIG and convolutional RBIG on digits, and Glow with the ECO mixer (issue 18, item 6).

Two parts, one JSON each (stdout; ``--out`` also writes it whole):

* ``--part glow``: the default digits Glow (2 levels, 4 steps per level, 64 hidden channels)
  trained by ``tfinv train`` with ``--linear eco`` beside the default ``inv_conv1x1``, at the
  budget of ``benchmarks/faithful_digits.py`` (whose ``train`` helper runs each variant; the
  ablations ``eco_k1`` and ``eco_k4`` of `ABLATIONS` can be listed in ``--linear`` too):
  ``--epochs`` (10), batch 64, Adam lr 1e-3, seeds ``--seeds``. Test/train bits/dim, fit seconds,
  parameters.
* ``--part rbig``: `tfinv.models.fit_rbig` on 80 % of the dequantised digits training split
  (``--copies`` dequantisation draws of each image; the other 20 %, one draw, is the validation
  set that stops the loop after ``--patience`` iterations without improvement and picks the
  depth), classical RBIG (PCA rotations of the 64 pixels) and convolutional RBIG (space-to-depth
  2, then orthonormal 3 x 3 convolutions learned by reconstruction loss and projected), at most
  ``--max-layers`` iterations (``--validation-fraction 0``: all of the split is fitted and the
  tolerance rule on the fitted data's reductions stops); test bits/dim with the
  fixed dequantisation noise of ``tfinv train``'s test split, the multi-information estimate
  (sum of per-iteration reductions, nats and bits), fit seconds, the learned convolutions' distance
  from orthonormality before projection, and a PNG of the reductions per iteration and of samples.

Run: ``python benchmarks/rbig_digits.py --part glow --out g.json`` /
``python benchmarks/rbig_digits.py --part rbig --out r.json --png r.png``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from _common import log, stdout_to_stderr  # noqa: E402
from faithful_digits import train  # noqa: E402


#: ablations of the ECO mixer, registered with `register_linear` for this process only:
#: a 1x1 ECO (a Cayley rotation of the channels) and k = 4 (a full 4 x 4 circular kernel on the
#: first level's 4 x 4 images, where k = 3 falls back to 2 with dilation 2)
ABLATIONS = {"eco_k1": 1, "eco_k4": 4}


def glow_part(args) -> dict:
    from tfinv.blocks.glow_step import LINEAR_LAYERS, register_linear
    from tfinv.layers import ECOConv

    for name, k in ABLATIONS.items():
        if name in args.linear and name not in LINEAR_LAYERS:
            register_linear(name, lambda seed, name, k=k: ECOConv(kernel_size=k, seed=seed, fit_kernel_to_image=True,
                                                                  name=name))
    rows = []
    for linear in args.linear:
        for seed in args.seeds:
            row = train(linear, "affine", seed, args.epochs)
            log(f"glow {linear} seed {seed}: test bits/dim {row['test_bits_per_dim']} (fit {row['fit_seconds']} s)")
            rows.append(row)
    return {"benchmark": "eco_glow_digits", "budget": {
        "epochs": args.epochs, "batch_size": 64, "lr": 1e-3, "seeds": args.seeds,
        "model": "Glow levels=2 steps_per_level=4 hidden=64 coupling=affine"}, "results": rows}


def _test_images():
    import tensorflow as tf

    from tfinv.data import digits

    return np.concatenate([b.numpy() for b in digits(batch_size=360, split="test", shuffle=False)], axis=0), tf



def rbig_part(args) -> dict:
    from tfinv.data import digits_arrays
    from tfinv.models import fit_rbig

    counts, _ = digits_arrays("train", with_labels=False)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(counts))
    cut = int(round(args.validation_fraction * len(counts)))
    held = counts[order[:cut]]  # validation: stopping and depth, never the test split
    counts = counts[order[cut:]]
    train_x = np.concatenate([counts + rng.uniform(size=counts.shape) for _ in range(args.copies)]).astype(np.float32)
    validation = (held + rng.uniform(size=held.shape)).astype(np.float32) if cut else None
    test_x, tf = _test_images()
    rows, curves, samples = [], {}, {}
    for rotation in args.rotations:
        started = time.perf_counter()
        result = fit_rbig(train_x, rotation=rotation, max_layers=args.max_layers, tolerance=args.tolerance,
                          patience=args.patience, seed=0, conv_kernel_size=3, conv_steps=args.conv_steps,
                          validation=validation, verbose=True)
        seconds = time.perf_counter() - started
        model = result.model
        test_bpd = float(np.mean(model.bits_per_dim(tf.constant(test_x)).numpy()))
        train_bpd = float(np.mean(model.bits_per_dim(tf.constant(train_x[: len(counts)])).numpy()))
        z = model.forward(tf.constant(test_x))[0].numpy().reshape(len(test_x), -1)
        rows.append({
            "rotation": rotation, "iterations": len(result.reductions),
            "test_bits_per_dim": test_bpd, "train_bits_per_dim": train_bpd,
            "multi_information_nats": result.multi_information,
            "multi_information_bits": result.multi_information / math.log(2.0),
            "reductions_nats": [round(r, 5) for r in result.reductions],
            "fit_seconds": round(seconds, 1), "noise_floor_nats": result.noise_floor,
            "rotation_orthonormality_error_before_projection": result.orthonormality_errors,
            "test_latent_mean_abs": float(np.abs(z.mean(0)).mean()),
            "test_latent_std_mean": float(z.std(0).mean()),
        })
        log(f"rbig {rotation}: {len(result.reductions)} iterations, test bits/dim {test_bpd:.4f}, "
            f"multi-information {result.multi_information:.3f} nats ({seconds:.0f} s)")
        dims = int(np.prod(test_x.shape[1:]))
        held_bpd = [-v / (dims * math.log(2.0)) for v in result.held_out_log_likelihood]
        rows[-1]["validation_bits_per_dim_by_iteration"] = [round(v, 4) for v in held_bpd]
        test_curve = _bits_per_dim_by_depth(model, test_x, tf)
        rows[-1]["test_bits_per_dim_by_kept_iteration"] = [round(v, 4) for v in test_curve]
        curves[rotation] = (np.cumsum(result.reductions), held_bpd or test_curve)
        samples[rotation] = np.clip(model.sample(16, seed=1).numpy(), 0, 17)
    if args.png:
        args.figure = (curves, samples, args.png)  # drawn after the JSON is written
    from tfinv.ops.gaussianization import gaussian_multi_information

    flat = train_x.reshape(len(train_x), -1).astype(np.float64)
    reference = gaussian_multi_information(np.cov(flat, rowvar=False))
    return {"benchmark": "rbig_digits",
            "gaussian_multi_information_of_the_pixels_nats": reference,
            "gaussian_multi_information_note": "-1/2 log det(correlation) of the dequantised training pixels: "
                                               "the multi-information of a Gaussian with their correlations",
            "budget": {
        "train_examples": int(len(train_x)), "validation_images": int(cut),
        "dequantisation_copies": args.copies, "max_layers": args.max_layers,
        "tolerance_nats": args.tolerance, "patience": args.patience, "conv_steps": args.conv_steps,
        "marginals": "per-dimension, 40 knots (38 quantiles + 2 tail knots)", "conv_kernel_size": 3,
        "conv_squeeze": 2}, "results": rows}


def _bits_per_dim_by_depth(model, x, tf) -> list[float]:
    """Test bits/dim of the flow cut after each rotation (base N(0, I) on what comes out)."""
    from tfinv.layers import OrthonormalConv

    data, total = tf.constant(x), 0.0
    dims = int(np.prod(x.shape[1:]))
    out = []
    for layer in model.flow.steps:
        data, log_det = layer.forward_and_log_det(data)
        total = total + log_det.numpy()
        if isinstance(layer, OrthonormalConv):
            flat = data.numpy().reshape(len(x), -1)
            log_p = -0.5 * np.sum(flat**2, axis=1) - 0.5 * dims * math.log(2 * math.pi) + total
            out.append(float(np.mean(-log_p) / (dims * math.log(2.0))))
    return out


def _plot(curves, samples, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 + len(samples), figsize=(8 + 3 * len(samples), 3.2))
    for name, (information, bpd) in curves.items():
        axes[0].plot(np.arange(1, len(information) + 1), information, label=name)
        axes[1].plot(np.arange(1, len(bpd) + 1), bpd, label=name)
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("multi-information so far (nats)")
    axes[0].legend()
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel("validation (none: test) bits/dim, flow cut there")
    axes[1].legend()
    for ax, (name, images) in zip(axes[2:], samples.items()):
        grid = images[:16, :, :, 0].reshape(4, 4, 8, 8).transpose(0, 2, 1, 3).reshape(32, 32)
        ax.imshow(grid, cmap="gray_r", vmin=0, vmax=17)
        ax.set_title(f"{name} RBIG samples")
        ax.axis("off")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("glow", "rbig"), required=True)
    parser.add_argument("--linear", nargs="+", default=["inv_conv1x1", "eco"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--rotations", nargs="+", default=["pca", "conv"])
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--max-layers", type=int, default=40)
    parser.add_argument("--tolerance", type=float, default=1e-3)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--validation-fraction", type=float, default=0.2,
                        help="0: no validation set (tolerance stopping on the fitted data, up to --max-layers)")
    parser.add_argument("--conv-steps", type=int, default=300)
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--png", help="rbig part: write the reductions and samples figure here")
    args = parser.parse_args(argv)
    with stdout_to_stderr() as real_stdout:
        report = glow_part(args) if args.part == "glow" else rbig_part(args)
        report["platform"] = platform.platform()
        text = json.dumps(report, indent=2)
        if args.out:
            tmp = args.out + ".tmp"
            with open(tmp, "w") as f:
                f.write(text + "\n")
            os.replace(tmp, args.out)
        print(text, file=real_stdout, flush=True)
        if getattr(args, "figure", None):
            _plot(*args.figure)


if __name__ == "__main__":
    main()
