"""``tfinv export``: a trained ``.keras`` flow model to ONNX graphs and a TF Serving SavedModel.

Registered as a ``tfinv`` subcommand through the ``tfinv.commands`` entry point.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from tfinv.cli import UsageError


def register(commands) -> None:
    """Adds ``export`` to the ``tfinv`` subcommands."""
    parser = commands.add_parser(
        "export",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="export a trained model to ONNX (forward/inverse) and a TF Serving SavedModel",
        description="Write OUT/forward.onnx, OUT/inverse.onnx, OUT/manifest.json and the "
        "SavedModel OUT/saved_model/NAME/VERSION/ (TF Serving's layout).",
    )
    parser.add_argument("--model", required=True, help="a .keras file written by `tfinv train`")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--name", default=None, help="served model name (default: the model's name)")
    parser.add_argument("--version", type=int, default=1, help="SavedModel version directory")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (17 or 18)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest ONNX-vs-TF relative error")
    parser.add_argument("--saved-model", action=argparse.BooleanOptionalAction, default=True,
                        help="also write the TF Serving SavedModel")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tfinv
    from tfinv.export.errors import ExportError
    from tfinv.export.onnx import export_flow
    from tfinv.export.saved_model import to_saved_model

    out = pathlib.Path(args.out)
    try:
        model = tfinv.load_model(args.model)
        name = args.name or model.name
        manifest = export_flow(model, out, name=name, opset=args.opset, tolerance=args.tolerance,
                               overwrite=args.overwrite)
        if args.saved_model:
            path = to_saved_model(model, out / "saved_model", name, version=args.version,
                                  overwrite=args.overwrite)
            manifest["saved_model"] = str(path.relative_to(out))
            (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    except (ExportError, ValueError, TypeError, FileExistsError, FileNotFoundError) as err:
        raise UsageError(str(err)) from err
    for direction, info in manifest["graphs"].items():
        print(f"{direction}.onnx: max relative error vs TF {info['max_relative_error']:.2e} "
              f"({info['provider']})")
    if args.saved_model:
        print(f"SavedModel: {out / manifest['saved_model']}")
    print(f"wrote {out / 'manifest.json'}")
    return 0
