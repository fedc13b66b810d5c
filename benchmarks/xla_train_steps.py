"""Report: does every layer case's training step compile with XLA (what TPUs run)?

For every case of `tfinv.testing.cases` (each public layer, seeded, non-identity weights), the
layer is wrapped in a `tfinv.FlowModel` and `tfinv.core.compiled_inference.train_step_compiles`
lowers its loss and the gradient for every trainable variable to XLA HLO with
``jit_compile=True`` (XLA's op rejections happen at this stage; code generation is left out).
Stdout: one JSON object (``ok``, ``failed``, seconds per case); also written to ``--out``.

Run: ``python benchmarks/xla_train_steps.py [--out FILE]``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pathlib
import sys
import time

from _common import log, stdout_to_stderr, write_json

REPO = pathlib.Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "figures" / "xla_train_steps.json"))
    args = parser.parse_args()
    with stdout_to_stderr():
        from tfinv.core import FlowModel
        from tfinv.core.compiled_inference import train_step_compiles

        cases = importlib.import_module("tfinv.testing.cases")
        results = {}
        for case in [*cases.cases(), *cases.residual_cases()]:
            layer, x = case.build()
            started = time.perf_counter()
            ok, reason = train_step_compiles(FlowModel(layer, input_shape=tuple(x.shape[1:])))
            results[case.name] = {"ok": ok, "seconds": round(time.perf_counter() - started, 2),
                                  **({} if ok else {"reason": reason})}
            log(f"{case.name}: {'ok' if ok else 'REJECTED: ' + reason}")
    report = {"benchmark": "xla_train_steps", "cases": len(results),
              "ok": sum(r["ok"] for r in results.values()),
              "failed": sorted(name for name, r in results.items() if not r["ok"]),
              "results": results, "load_average": round(os.getloadavg()[0], 2)}
    write_json(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
