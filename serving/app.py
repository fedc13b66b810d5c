"""The ASGI application: TF Serving's REST API over an `OnnxFlowServable` (Starlette).

=============================================== =============================================
``GET  /v1/models/<name>[/versions/<v>]``           model status (``model_version_status``)
``GET  /v1/models/<name>[/versions/<v>]/metadata``  signature defs (dtype, shape; ``-1`` = batch)
``POST /v1/models/<name>[/versions/<v>]:predict``   ``{"signature_name", "instances"|"inputs"}``
``GET  /healthz``                                  liveness (``{"status": "ok", ...}``)
=============================================== =============================================

Every request the server cannot answer is a 4xx with TF Serving's ``{"error": "..."}`` body:
malformed JSON, unknown model (404 ``Servable not found for request: ...``), unknown signature,
wrong shape or dtype, NaN/Inf or values beyond float32, batch or ``n`` over the limit, a body over
``max_body_bytes`` (413), a body that does not arrive within ``body_timeout`` seconds (408), and
an input outside the model's domain (its result is not finite). The server keeps serving.

Inference runs in a thread pool (onnxruntime sessions are thread-safe), at most
``max_concurrency`` runs at a time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Any, Mapping

import numpy as np

from tfinv.serving import protocol
from tfinv.serving.errors import ServingError
from tfinv.serving.options import positive_int, positive_seconds
from tfinv.serving.servable import DEFAULT_MAX_BATCH, DEFAULT_MAX_N, OnnxFlowServable

__all__ = ["DEFAULT_BODY_TIMEOUT", "DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_CONCURRENCY", "create_app"]

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_CONCURRENCY = 4
DEFAULT_BODY_TIMEOUT = 10.0
_logger = logging.getLogger("uvicorn.error")


def create_app(
    export_dir: str | os.PathLike,
    name: str | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_n: int = DEFAULT_MAX_N,
    version: int = 1,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    threads: int | None = None,
):
    """The Starlette application serving an ONNX flow export with TF Serving's REST API.

    The export is loaded (both onnxruntime sessions created) here, so a bad directory fails
    before anything is served.

    Args:
        export_dir: the directory `tfinv.export.export_flow` wrote.
        name: the served model name (URL ``/v1/models/<name>``); defaults to the manifest's.
        max_batch: largest batch a batched signature accepts (400 above).
        max_body_bytes: largest request body (413 above; checked against ``Content-Length`` and
            against the bytes actually received).
        max_n: largest ``n`` of the ``sample`` signature (400 above).
        version: the served version number (``/versions/<v>`` must match it).
        max_concurrency: inference runs executing at once in the thread pool.
        body_timeout: seconds a request body may take to arrive (408 and the connection closed
            after that).
        threads: onnxruntime intra-op threads per session (``None``: one per core).

    Returns:
        A `starlette.applications.Starlette` app; ``app.state.servable`` is the
        `OnnxFlowServable`.
    """
    import anyio
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import Response
    from starlette.routing import Route

    positive_int("max_body_bytes", max_body_bytes)
    positive_int("max_concurrency", max_concurrency)
    positive_seconds("body_timeout", body_timeout)
    servable = OnnxFlowServable(export_dir, name=name, version=version, max_batch=max_batch, max_n=max_n,
                                threads=threads)
    limits: dict[str, Any] = {}

    def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        content = json.dumps(body, allow_nan=True, separators=(",", ":")).encode()
        return Response(content, status, headers=dict(headers or {}), media_type="application/json")

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            # Up to a few times the limit, uvicorn reads and discards the rest, keeping the
            # connection (and the client's view of the 413) clean; beyond that it is closed.
            close = int(declared) > 4 * max_body_bytes
            raise ServingError(f"request body of {int(declared)} bytes exceeds this server's limit of "
                               f"{max_body_bytes} bytes (max_body_bytes)", 413,
                               {"Connection": "close"} if close else None)
        chunks, size = [], 0
        try:
            with anyio.fail_after(body_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_body_bytes:
                        raise ServingError(f"request body exceeds this server's limit of {max_body_bytes} bytes "
                                           "(max_body_bytes)", 413, {"Connection": "close"})
                    chunks.append(chunk)
        except TimeoutError:
            raise ServingError(f"the request body did not arrive within {body_timeout:g} s (body_timeout)", 408,
                               {"Connection": "close"}) from None
        return b"".join(chunks)

    async def predict(request: Request) -> Response:
        body = await read_body(request)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise ServingError(f"JSON Parse error: {err}", 400) from None
        sig, inputs, row_format = servable.parse(payload, check_bools=b"true" in body or b"false" in body)
        if "inference" not in limits:  # an app run without its lifespan (e.g. a bare TestClient)
            limits["inference"] = anyio.Semaphore(max_concurrency)
        async with limits["inference"]:
            try:
                outputs = await run_in_threadpool(servable.run, sig, inputs)
            except ServingError:
                raise
            except Exception as err:  # onnxruntime refusing a validated input
                _logger.warning("inference failed for signature %s: %s: %s", sig.name, type(err).__name__, err)
                raise ServingError(f"the model could not compute signature '{sig.name}' on this input: "
                                   f"{type(err).__name__}: {str(err)[:300]}", 400) from None
        bad = [k for k, v in outputs.items() if not np.all(np.isfinite(v))]
        if bad:
            raise ServingError(f"the input of signature '{sig.name}' is outside the model's domain: its output "
                               f"{bad} is not finite (NaN/Inf); e.g. data must lie in the model's range", 400)
        return json_response(protocol.render_predict(sig, outputs, row_format))

    async def models(request: Request) -> Response:
        rest = request.path_params["rest"]
        match = protocol.MODEL_PATH.match(rest)
        if match is None:
            raise ServingError(f"Malformed request: {request.method} {request.url.path}", 404)
        verb, is_metadata = match["verb"], match["metadata"] is not None
        servable.check_model(match["name"], match["version"])
        if request.method == "GET" and verb is None:
            return json_response(servable.metadata() if is_metadata else servable.status())
        if request.method == "POST" and verb == "predict":
            return await predict(request)
        if request.method == "POST" and verb in ("classify", "regress"):
            raise ServingError(f"this server serves predict signatures only: use :predict, not :{verb}", 400)
        raise ServingError(f"Malformed request: {request.method} {request.url.path}", 404)

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok", "model": servable.name, "version": str(servable.version),
                              "provider": servable.provider})

    async def on_serving_error(request: Request, err: ServingError) -> Response:
        return json_response({"error": err.message}, err.status or 400, err.headers)

    async def on_http_error(request: Request, err: HTTPException) -> Response:
        text = f"Malformed request: {request.method} {request.url.path}" if err.status_code in (404, 405) \
            else str(err.detail)
        return json_response({"error": text}, err.status_code)

    async def on_disconnect(request: Request, err: ClientDisconnect) -> Response:
        return json_response({"error": "client disconnected"}, 400)

    async def on_error(request: Request, err: Exception) -> Response:
        # A defect of this server, not of the request: logged with its traceback.
        _logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return json_response({"error": f"internal server error: {type(err).__name__}"}, 500)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        limits["inference"] = anyio.Semaphore(max_concurrency)
        _logger.info("Serving model '%s' version %s (signatures: %s) from %s on onnxruntime %s",
                     servable.name, servable.version, ", ".join(servable.signatures), servable.export_dir,
                     servable.provider)
        yield

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/v1/models/{rest:path}", models, methods=["GET", "POST"]),
        ],
        exception_handlers={ServingError: on_serving_error, HTTPException: on_http_error,
                            ClientDisconnect: on_disconnect, Exception: on_error},
        lifespan=lifespan,
    )
    app.state.servable = servable
    return app
