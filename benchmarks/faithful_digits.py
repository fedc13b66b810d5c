"""Benchmark: digits bits/dim of the paper-faithful Glow variants of issue 18 beside today's ones.

Every variant is ``tfinv train`` (`tfinv.cli.main`) of the default digits Glow (2 levels, 4 steps
per level, 64 hidden channels) with its ``--linear`` / ``--coupling``, at the budget of
``benchmarks/linear_layers.py`` and ``benchmarks/conv_inverse.py``: ``--epochs`` (10), batch 64,
Adam lr 1e-3, seeds ``--seeds`` (0). Reported per variant: test and train bits/dim of the fixed
dequantisation noise, fit seconds, parameter count.

A variant is written ``LINEAR``, ``LINEAR:COUPLING`` (e.g. ``cinc:quad``) or
``LINEAR:COUPLING:OPTIONS`` with OPTIONS among ``prior`` (``--learned-prior``), ``cnorm``
(``--conditioner-actnorm``) and ``paper`` (both: Glow's paper configuration), joined by ``+``.
Run: ``python benchmarks/faithful_digits.py --variants emerging raster_emerging [--out r.json]``.
Stdout is one JSON object; progress goes to stderr.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from _common import log, stdout_to_stderr, write_json  # noqa: E402


OPTIONS = {"prior": ["--learned-prior"], "cnorm": ["--conditioner-actnorm"],
           "paper": ["--learned-prior", "--conditioner-actnorm"]}


def train(linear: str, coupling: str, seed: int, epochs: int, dataset: str = "digits",
          extra: list[str] | None = None) -> dict:
    from tfinv import cli

    with tempfile.TemporaryDirectory() as tmp:
        argv = ["train", "--dataset", dataset, "--epochs", str(epochs), "--linear", linear,
                "--coupling", coupling, "--seed", str(seed), "--verbose", "0", "--num-samples", "16",
                "--out", tmp, *(extra or [])]
        started = time.perf_counter()
        code = cli.main(argv)
        path = os.path.join(tmp, "metrics.json")
        metrics = {}
        if os.path.exists(path):
            with open(path) as f:
                metrics = json.load(f)
    return {
        "linear": linear, "coupling": coupling, "options": list(extra or []), "seed": seed, "exit_code": code,
        "test_bits_per_dim": metrics.get("test_bits_per_dim"),
        "train_bits_per_dim": metrics.get("train_bits_per_dim"),
        "fit_seconds": metrics.get("fit_seconds"),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "num_parameters": metrics.get("num_parameters"),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", required=True, help="LINEAR or LINEAR:COUPLING")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    rows = []
    with stdout_to_stderr() as real_stdout:
        for variant in args.variants:
            linear, _, rest = variant.partition(":")
            coupling, _, options = rest.partition(":")
            extra = []
            for option in filter(None, options.split("+")):
                if option not in OPTIONS:
                    parser.error(f"unknown option {option!r} in {variant!r}; expected one of {sorted(OPTIONS)}")
                extra += [flag for flag in OPTIONS[option] if flag not in extra]
            for seed in args.seeds:
                row = train(linear, coupling or "affine", seed, args.epochs, extra=extra)
                log(f"{variant} seed {seed}: test bits/dim {row['test_bits_per_dim']} "
                    f"(fit {row['fit_seconds']} s)")
                rows.append(row)
        report = {"benchmark": "faithful_digits", "budget": {"epochs": args.epochs, "batch_size": 64,
                  "lr": 1e-3, "seeds": args.seeds, "model": "Glow levels=2 steps_per_level=4 hidden=64"},
                  "platform": platform.platform(), "results": rows}
        write_json(report, args.out, real_stdout)


if __name__ == "__main__":
    main()
