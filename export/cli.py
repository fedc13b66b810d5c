"""``tfinv export``: a trained ``.keras`` flow model to ONNX graphs and a TF Serving SavedModel.

Registered as a ``tfinv`` subcommand through the ``tfinv.commands`` entry point. A user error
(a bad name, version or destination, a file that is not a tfinv model) is one line on stderr and
exit status 2; it is found before the model is converted, and nothing is written.
"""

from __future__ import annotations

import argparse
import pathlib
import sys


def register(commands) -> None:
    """Adds ``export`` to the ``tfinv`` subcommands."""
    parser = commands.add_parser(
        "export",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="export a trained model to ONNX (forward/inverse) and a TF Serving SavedModel",
        description="Write OUT/forward.onnx, OUT/inverse.onnx, OUT/manifest.json and the "
        "SavedModel OUT/saved_model/NAME/VERSION/ (TF Serving's layout), all or nothing.",
    )
    parser.add_argument("--model", required=True, help="a .keras file written by `tfinv train`")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--name", default=None, help="served model name (default: the model's name)")
    parser.add_argument("--version", type=int, default=1, help="SavedModel version directory (>= 1)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (17 or 18)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest ONNX-vs-TF relative error")
    parser.add_argument("--saved-model", action=argparse.BooleanOptionalAction, default=True,
                        help="also write the TF Serving SavedModel")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.set_defaults(func=run)


def _fail(err: Exception) -> int:
    print(f"tfinv export: error: {err}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from tfinv.export.files import check_destination
    from tfinv.export.signatures import GRAPHS, check_model_name, check_version

    out = pathlib.Path(args.out)
    user_errors = (ValueError, TypeError, OSError)
    # Everything the arguments alone can get wrong, before the model is even loaded.
    try:
        if args.name is not None:
            check_model_name(args.name)
        check_version(args.version)
        files = [f"{d}.onnx" for d in GRAPHS] + ["manifest.json"]
        if args.saved_model and args.name is not None:
            files.append(f"saved_model/{args.name}/{args.version}/")
        check_destination(out, files, args.overwrite)
    except user_errors as err:
        return _fail(err)

    import tfinv
    from tfinv.export.bundle import export_flow
    from tfinv.export.errors import ExportError

    try:
        model = tfinv.load_model(args.model)
        manifest = export_flow(model, out, name=args.name, opset=args.opset, tolerance=args.tolerance,
                               overwrite=args.overwrite, saved_model=args.saved_model, version=args.version)
    except (ExportError, *user_errors) as err:
        return _fail(err)
    for direction, info in manifest["graphs"].items():
        print(f"{direction}.onnx: max relative error vs TF {info['max_relative_error']:.2e} "
              f"({info['provider']})")
    if args.saved_model:
        print(f"SavedModel: {out / manifest['saved_model']}")
    print(f"wrote {out / 'manifest.json'}")
    return 0
