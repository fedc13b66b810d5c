"""Measured errors of the contract harness for every case: prints JSON.

    python benchmarks/contract_report.py [--only NAME ...] [--no-onnx]

For each `tfinv.testing.cases()` and `model_cases()` entry: round trip (both ways), log-det vs
slogdet of the autodiff Jacobian (both ways, and fldj = -ildj), XLA vs eager, serialisation and
onnxruntime vs TF, all relative errors as defined in `tfinv.testing.contract`; then the maximum
of each over all cases (the figures quoted against the tolerances).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, help="case names (prefix match)")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX parity check")
    args = parser.parse_args()

    from tfinv.testing import cases, contract, model_cases

    check_onnx = None
    if not args.no_onnx:
        from tfinv.export.testing import check_onnx

    report, worst = {}, {}
    started = time.perf_counter()
    entries = [(c, False) for c in cases()] + [(c, True) for c in model_cases()]
    for case, is_model in entries:
        if args.only and not case.name.startswith(tuple(args.only)):
            continue
        print(f"{case.name} ...", file=sys.stderr)
        subject, x = case.build()
        row = {}
        row.update({f"round_trip {k}": v for k, v in contract.check_round_trip(subject, x, case.round_trip_tol).items()})
        row.update({f"log_det {k}": v for k, v in contract.check_log_det(subject, x, case.log_det_tol).items()})
        row["jit"] = contract.check_jit(subject, x)
        if not is_model:
            row["serialization"] = contract.check_serialization(subject, x)
        if check_onnx is not None:
            row.update({f"onnx {k}": v for k, v in check_onnx(subject, x).items()})
        report[case.name] = row
        for key, value in row.items():
            worst[key] = max(worst.get(key, 0.0), value)
    print(json.dumps({"cases": len(report), "seconds": round(time.perf_counter() - started, 1),
                      "max_relative_error": worst, "per_case": report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
