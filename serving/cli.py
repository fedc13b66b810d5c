"""The serving stage's commands: ``tfinv serve`` (the ONNX server), ``tfinv query`` (the client) and
``tfinv serve-config`` (TF Serving's files), registered as ``tfinv`` subcommands through the
``tfinv.commands`` entry point; and ``python -m tfinv.serving`` / ``tfinv-serve``, the same server
without the ``tfinv`` command (and without TensorFlow: the lean install runs this).

``tfinv query`` works against TF Serving and ``tfinv serve`` alike::

    tfinv query --url http://127.0.0.1:8501 --model digits sample --n 64 --out grid.png
    tfinv query --url 127.0.0.1:8500 --transport grpc --model digits status

A user error is one line on stderr (``tfinv <command>: error: ...``) and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

__all__ = ["add_serve_arguments", "main", "register_query", "register_serve", "register_serve_config", "run_serve"]


def _fail(command: str, err: object) -> int:
    print(f"tfinv {command}: error: {err}", file=sys.stderr)
    return 2


# --------------------------------------------------------------------------- serve
def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in [0, 65535] (0: a free port), got {text!r}")
    return value


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the server's options to ``parser`` (``tfinv serve`` and ``python -m tfinv.serving``)."""
    from tfinv.serving import app, server, servable

    parser.add_argument("--export-dir", required=True, help="directory written by `tfinv export`")
    parser.add_argument("--name", default=None, help="model name in the URLs (default: the manifest's name)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=_port, default=8501, help="port (TF Serving's REST port; 0: a free port, "
                        "printed and written to --port-file)")
    parser.add_argument("--port-file", default=None, help="write the port obtained to this file once listening")
    parser.add_argument("--max-batch", type=int, default=servable.DEFAULT_MAX_BATCH, help="largest batch per request")
    parser.add_argument("--max-n", type=int, default=servable.DEFAULT_MAX_N, help="largest n of the sample signature")
    parser.add_argument("--max-body-bytes", type=int, default=app.DEFAULT_MAX_BODY_BYTES, help="largest request body")
    parser.add_argument("--max-concurrency", type=int, default=app.DEFAULT_MAX_CONCURRENCY,
                        help="inference runs executing at once")
    parser.add_argument("--max-connections", type=int, default=server.DEFAULT_MAX_CONNECTIONS,
                        help="open connections at most; requests beyond get 503 (uvicorn's limit_concurrency)")
    parser.add_argument("--header-timeout", type=float, default=server.DEFAULT_HEADER_TIMEOUT,
                        help="seconds a connection may take to send its request headers")
    parser.add_argument("--body-timeout", type=float, default=app.DEFAULT_BODY_TIMEOUT,
                        help="seconds a request body may take to arrive (408 after)")
    parser.add_argument("--keep-alive", type=int, default=server.DEFAULT_KEEP_ALIVE,
                        help="seconds an idle keep-alive connection stays open")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads per session (default: cores)")
    parser.add_argument("--graceful-timeout", type=float, default=10.0,
                        help="seconds to finish in-flight requests on SIGTERM/SIGINT")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--access-log", action="store_true", help="log every request")
    return parser


def run_serve(args: argparse.Namespace) -> int:
    """Runs the server from parsed `add_serve_arguments` options; returns the exit status (0 after a
    graceful shutdown, 2 for a bad export directory or option)."""
    from tfinv.serving.server import serve

    try:
        serve(args.export_dir, host=args.host, port=args.port, name=args.name, max_batch=args.max_batch,
              max_body_bytes=args.max_body_bytes, max_n=args.max_n, max_concurrency=args.max_concurrency,
              max_connections=args.max_connections, header_timeout=args.header_timeout,
              body_timeout=args.body_timeout, keep_alive=args.keep_alive, threads=args.threads,
              graceful_timeout=args.graceful_timeout, port_file=args.port_file, log_level=args.log_level,
              access_log=args.access_log)
    except (OSError, ValueError, TypeError, RuntimeError) as err:
        return _fail("serve", f"cannot serve {args.export_dir!r}: {err}")
    return 0


def register_serve(commands) -> None:
    """Adds ``serve``: the exported ONNX graphs behind TF Serving's REST API."""
    parser = commands.add_parser(
        "serve",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="serve exported ONNX graphs with TF Serving's REST API (onnxruntime)",
        description="Serve DIR/forward.onnx and DIR/inverse.onnx (written by `tfinv export`) on "
        "onnxruntime (CUDA provider when present, CPU otherwise) with TF Serving's REST API: "
        "signatures forward, inverse, sample, log_prob; status and metadata endpoints.",
    )
    add_serve_arguments(parser)
    parser.set_defaults(func=run_serve)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tfinv.serving --export-dir DIR [--port 8501] ...`` (also the ``tfinv-serve``
    script); returns the exit status."""
    parser = add_serve_arguments(argparse.ArgumentParser(
        prog="tfinv-serve", description="Serve an ONNX flow export with TF Serving's REST API (onnxruntime)."))
    return run_serve(parser.parse_args(argv))


# --------------------------------------------------------------------------- query
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
    parser.add_argument("--context", default=None,
                        help="a conditional model's context for `sample`, as JSON: one context (shape "
                        "context_shape, used for every sample) or one row per sample, e.g. a one-hot label")
    parser.add_argument("--num-levels", type=int, default=None,
                        help="pixel levels for the PNG grid (default: the served model's, which `tfinv serve` "
                        "reports in its metadata; TF Serving does not, so pass it there)")
    parser.add_argument("--out", default="served_samples.png", help="PNG file for `sample`")
    parser.set_defaults(func=_run_query)


def _query_context(client, text: str | None, n: int):
    """``--context`` as an ``(n, *context_shape)`` array (one context broadcast to every sample)."""
    if text is None:
        return None
    import numpy as np

    try:
        context = np.asarray(json.loads(text), np.float32)
    except (ValueError, TypeError) as err:
        raise ValueError(f"--context must be a JSON number array, got {text[:80]!r} ({err})") from None
    inputs = client.signatures().get("sample", {}).get("inputs", {})
    if "context" not in inputs:
        raise ValueError("--context given, but the served model is unconditional (its sample signature takes "
                         "no context)")
    shape = tuple(inputs["context"][1][1:])
    if context.shape == shape:
        return np.broadcast_to(context, (n, *shape))
    if context.shape != (n, *shape):
        raise ValueError(f"--context must have shape {list(shape)} or {[n, *shape]}, got {list(context.shape)}")
    return context


def _check_png_destination(path: str) -> None:
    """Refuses, before any request, a ``--out`` that is not a writable ``.png`` path."""
    import os

    if not path.endswith(".png"):
        raise ValueError(f"--out {path!r} must end in .png (the samples are written as a PNG grid)")
    if os.path.isdir(path):
        raise ValueError(f"--out {path!r} is a folder; expected a .png file path")
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):  # missing folders are created: the nearest existing one decides
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--out {path!r}: cannot write in {folder!r}")


def _run_query(args: argparse.Namespace) -> int:
    from tfinv.serving.client import Client
    from tfinv.serving.errors import ServingError

    if args.what == "sample":
        try:
            _check_png_destination(args.out)
        except ValueError as err:
            return _fail("query", err)
    try:
        with Client(args.url, model=args.model, transport=args.transport) as client:
            if args.wait > 0:
                client.wait_until_available(timeout=args.wait)
            if args.what == "sample":
                from tfinv.data import save_image_grid

                num_levels = args.num_levels or client.num_levels()
                if num_levels is None:
                    raise ValueError(f"the served model {args.model!r} does not report its pixel levels (TF "
                                     "Serving's metadata has only the signatures): pass --num-levels, e.g. "
                                     "--num-levels 256 for 8-bit images")
                x = client.sample(args.n, seed=args.seed, temperature=args.temperature,
                                  context=_query_context(client, args.context, args.n))
                save_image_grid(x, args.out, num_levels)
                print(f"wrote {len(x)} served samples (seed {args.seed}, temperature "
                      f"{args.temperature}) to {args.out}")
            else:
                print(json.dumps(client.status() if args.what == "status" else client.metadata(), indent=2))
    except (ServingError, TimeoutError, ValueError, OSError) as err:
        return _fail("query", err)
    return 0


# --------------------------------------------------------------------------- serve-config
def _version_policy_arg(text: str):
    if text in ("latest", "all"):
        return text
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'latest', 'all' or versions like '1,2', got {text!r}") from None


def register_serve_config(commands) -> None:
    """Adds ``serve-config`` (`tfinv.serving.tf_serving.write_serving_config`)."""
    from tfinv.serving.tf_serving import DEFAULT_IMAGE, DEFAULT_ONNX_PORT

    parser = commands.add_parser(
        "serve-config",
        help="write models.config, batching parameters and a docker compose file for TF Serving",
        description="Write what the official TF Serving image needs to serve the SavedModel of a "
        "`tfinv export` directory (models.config, batching_parameters.txt, docker-compose.yml, "
        "docker-run.sh, SERVING.md) and, beside them, the lean ONNX server's Dockerfile.onnx and "
        "requirements-onnx.txt.",
    )
    parser.add_argument("--export-dir", required=True, help="a directory written by `tfinv export`")
    parser.add_argument("--name", default=None, help="served model name (default: the exported one)")
    parser.add_argument("--out", default=None, help="output directory (default: EXPORT_DIR/serving)")
    parser.add_argument("--rest-port", type=int, default=8501, help="host port for REST (default: 8501)")
    parser.add_argument("--grpc-port", type=int, default=8500, help="host port for gRPC (default: 8500)")
    parser.add_argument("--onnx-port", type=int, default=DEFAULT_ONNX_PORT,
                        help=f"host port of the lean ONNX server (default: {DEFAULT_ONNX_PORT})")
    parser.add_argument("--bind-address", default="127.0.0.1",
                        help="host address the ports are published on (default: 127.0.0.1; "
                        "0.0.0.0: all interfaces)")
    parser.add_argument("--version-policy", type=_version_policy_arg, default="latest",
                        help="'latest' (default), 'all', or comma-separated versions like 1,2")
    parser.add_argument("--enable-batching", action="store_true",
                        help="start the server with --enable_batching (the `sample` signature then fails: "
                        "TF Serving's batching rejects its scalar inputs)")
    parser.add_argument("--max-batch-size", type=int, default=64, help="batching: max rows per batch (default: 64)")
    parser.add_argument("--batch-timeout-micros", type=int, default=2000,
                        help="batching: max wait for a batch to fill, in microseconds (default: 2000)")
    parser.add_argument("--num-batch-threads", type=int, default=2,
                        help="batching: threads running batches (default: 2)")
    parser.add_argument("--max-enqueued-batches", type=int, default=100,
                        help="batching: queue length before requests are refused (default: 100)")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"TF Serving image (default: {DEFAULT_IMAGE})")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.set_defaults(func=_run_serve_config)


def _run_serve_config(args: argparse.Namespace) -> int:
    import pathlib
    import shlex

    from tfinv.serving.tf_serving import saved_model_base_from_manifest, write_serving_config

    export_dir = pathlib.Path(args.export_dir)
    out = pathlib.Path(args.out) if args.out else export_dir / "serving"
    try:
        if not export_dir.is_dir():
            raise FileNotFoundError(f"--export-dir {export_dir} is not a directory")
        base, name = saved_model_base_from_manifest(export_dir, args.name)
        paths = write_serving_config(
            base, out, name, rest_port=args.rest_port, grpc_port=args.grpc_port, onnx_port=args.onnx_port,
            max_batch_size=args.max_batch_size, batch_timeout_micros=args.batch_timeout_micros,
            num_batch_threads=args.num_batch_threads, max_enqueued_batches=args.max_enqueued_batches,
            version_policy=args.version_policy, enable_batching=args.enable_batching, image=args.image,
            bind_address=args.bind_address or None, overwrite=args.overwrite, export_dir=export_dir)
    except (ValueError, TypeError, OSError) as err:
        return _fail("serve-config", err)
    for path in paths.values():
        print(f"wrote {path}")
    print(f"start TF Serving: (cd {shlex.quote(str(out))} && docker compose up -d)  "
          f"# REST :{args.rest_port}, gRPC :{args.grpc_port}")
    return 0


# The serving commands run without TensorFlow: `tfinv.cli.main` builds them without importing it.
register_serve.needs_tensorflow = False
register_query.needs_tensorflow = False
register_serve_config.needs_tensorflow = False
