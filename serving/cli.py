"""``tfinv serve`` (the ONNX Runtime server) and ``tfinv query`` (the client), registered as
``tfinv`` subcommands through the ``tfinv.commands`` entry point.

``tfinv query`` works against TF Serving and ``tfinv serve`` alike::

    tfinv query --url http://127.0.0.1:8501 --model digits sample --n 64 --out grid.png
    tfinv query --url 127.0.0.1:8500 --transport grpc --model digits status
"""

from __future__ import annotations

import argparse
import json

from tfinv.cli import UsageError


def register_serve(commands) -> None:
    """Adds ``serve``: the exported ONNX graphs behind TF Serving's REST API."""
    from tfinv.serving import onnx_server

    parser = commands.add_parser(
        "serve",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="serve exported ONNX graphs with TF Serving's REST API (onnxruntime)",
        description="Serve DIR/forward.onnx and DIR/inverse.onnx (written by `tfinv export`) on "
        "onnxruntime (CUDA provider when present, CPU otherwise) with TF Serving's REST API: "
        "signatures forward, inverse, sample, log_prob; status and metadata endpoints.",
    )
    onnx_server.add_arguments(parser)
    parser.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from tfinv.serving import onnx_server

    code = onnx_server.run_from_args(args)
    if code == 2:
        raise UsageError(f"cannot serve {args.export_dir!r} (see the message above)")
    return code


def register_query(commands) -> None:
    """Adds ``query``: call a served model (TF Serving or ``tfinv serve``)."""
    parser = commands.add_parser(
        "query",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="query a served model: sample to a PNG grid, status, metadata",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8501", help="REST URL or gRPC host:port")
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--transport", default="rest", help="rest or grpc")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the model to be AVAILABLE")
    parser.add_argument("what", choices=["sample", "status", "metadata"])
    parser.add_argument("--n", type=int, default=64, help="samples to draw")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--num-levels", type=int, default=17, help="pixel levels for the PNG grid")
    parser.add_argument("--out", default="served_samples.png", help="PNG file for `sample`")
    parser.set_defaults(func=_run_query)


def _run_query(args: argparse.Namespace) -> int:
    from tfinv.serving.client import Client
    from tfinv.serving.errors import ServingError

    try:
        with Client(args.url, model=args.model, transport=args.transport) as client:
            if args.wait > 0:
                client.wait_until_available(timeout=args.wait)
            if args.what == "sample":
                from tfinv.data import save_image_grid

                x = client.sample(args.n, seed=args.seed, temperature=args.temperature)
                save_image_grid(x, args.out, args.num_levels)
                print(f"wrote {len(x)} served samples (seed {args.seed}, temperature "
                      f"{args.temperature}) to {args.out}")
            else:
                print(json.dumps(client.status() if args.what == "status" else client.metadata(), indent=2))
    except (ServingError, TimeoutError, ValueError) as err:
        raise UsageError(str(err)) from err
    return 0
