"""A TF Serving-compatible REST server for the ONNX export of a flow (Starlette + uvicorn).

Serves the ``forward.onnx`` / ``inverse.onnx`` pair written by `tfinv.export.export_flow` on
onnxruntime (CUDA provider when it loads, CPU otherwise) and speaks TF Serving's REST API, so
`tfinv.serving.Client` (and any TF Serving REST client) works unchanged against either server:

=============================================== =============================================
``GET  /v1/models/<name>[/versions/<v>]``           model status (``model_version_status``)
``GET  /v1/models/<name>[/versions/<v>]/metadata``  signature defs (dtype, shape; ``-1`` = batch)
``POST /v1/models/<name>[/versions/<v>]:predict``   ``{"signature_name", "instances"|"inputs"}``
``GET  /healthz``                                  liveness (``{"status": "ok", ...}``)
=============================================== =============================================

Signatures mirror the SavedModel export (`tfinv.export.saved_model`) name for name:

* ``forward``: ``x`` float32 ``[-1, *data_shape]`` -> ``z``, ``log_det``;
* ``inverse``: ``z`` float32 ``[-1, *latent_shape]`` -> ``x``, ``log_det``;
* ``sample``: scalars ``n`` int32, ``seed`` int32, ``temperature`` float32 -> ``x``, ``z``
  (scalars go in the columnar ``"inputs"`` form);
* ``log_prob``: ``x`` -> ``log_prob`` (standard normal log density of ``z = forward(x)``
  summed over the latent dimensions, plus ``log_det``);
* ``serving_default``: the same as ``log_prob``.

Request/response formats follow TF Serving: the row format ``{"instances": [...]}`` (a list of
values, or of ``{name: value}`` objects; answered with ``{"predictions": [...]}``, a list of
``{output: value}`` objects per instance when the signature has several outputs) and the columnar
format ``{"inputs": {...}}`` or ``{"inputs": value}`` (answered with ``{"outputs": ...}``, a bare
value for a single output). Errors are ``{"error": "..."}`` with a 4xx status for a bad request
(malformed JSON, unknown model -> 404 ``Servable not found for request: ...``, unknown signature,
wrong shape or dtype, NaN/Inf, batch or ``n`` over the configured limit, body over
``max_body_bytes`` -> 413); the server keeps serving.

**Sampling noise.** The ``sample`` signature draws ``z = temperature * eps`` with ``eps`` from
`tfinv.serving.rng.stateless_normal`, a NumPy replica of
``tf.random.stateless_normal([n, *latent_shape], seed=[seed, 0])`` (Philox-4x32-10 + Box-Muller,
bit-exact integer stream, float32 math equal up to a last-bit rounding), and feeds it to
``inverse.onnx``. So for a given ``seed`` the ONNX server returns the same samples as the TF
Serving SavedModel and as ``model.sample(n, temperature, seed)`` (to ONNX-vs-TF parity,
1e-4 relative), and no TensorFlow op runs at request time. (TensorFlow is imported at start-up
only because the ``tfinv`` package imports it.)

Inference runs in a thread pool (`starlette.concurrency.run_in_threadpool`; onnxruntime sessions
are thread-safe), at most ``max_concurrency`` runs at a time. `serve` binds loopback by default,
and shuts down gracefully on SIGTERM/SIGINT (stops accepting, finishes in-flight requests within
``graceful_timeout`` seconds, exits with status 0).

Run: ``python -m tfinv.serving.onnx_server --export-dir DIR [--name NAME] [--port 8501]``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import pathlib
import re
import signal
import sys
import threading
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from tfinv.serving.errors import ServingError
from tfinv.serving.rng import stateless_normal

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_N",
    "OnnxFlowServable",
    "add_arguments",
    "create_app",
    "main",
    "run_from_args",
    "serve",
]

DEFAULT_MAX_BATCH = 256
DEFAULT_MAX_N = 256
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_CONCURRENCY = 4
_INT32 = (-(2**31), 2**31 - 1)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_DT = {"float32": "DT_FLOAT", "int32": "DT_INT32"}
_logger = logging.getLogger("uvicorn.error")


# --------------------------------------------------------------------------- signatures
@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One named signature tensor: dtype (``"float32"``/``"int32"``) and shape (``-1`` = batch)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    def tensor_info(self, signature: str, role: str) -> dict[str, Any]:
        """TF Serving's JSON ``TensorInfo`` (int64 sizes as strings, as protobuf JSON has them)."""
        return {
            "dtype": _DT[self.dtype],
            "tensor_shape": {"dim": [{"size": str(s), "name": ""} for s in self.shape], "unknown_rank": False},
            "name": f"{signature}_{self.name}:0" if role == "input" else f"{signature}/{self.name}:0",
        }


@dataclasses.dataclass(frozen=True)
class Signature:
    """A predict signature: named inputs and outputs, and the function that computes it."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]

    @property
    def batched(self) -> bool:
        return all(spec.shape[:1] == (-1,) for spec in self.inputs)

    def signature_def(self) -> dict[str, Any]:
        return {
            "inputs": {s.name: s.tensor_info(self.name, "input") for s in self.inputs},
            "outputs": {s.name: s.tensor_info(self.name, "output") for s in self.outputs},
            "method_name": "tensorflow/serving/predict",
        }


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _has_bool(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is list:
            stack.extend(item)
        elif type(item) is bool:
            return True
    return False


# --------------------------------------------------------------------------- the servable
class OnnxFlowServable:
    """An exported flow (``manifest.json``, ``forward.onnx``, ``inverse.onnx``) as TF Serving-style
    signatures, with request parsing and validation. Independent of the web framework.

    Args:
        export_dir: the directory `tfinv.export.export_flow` wrote.
        name: the served model name; defaults to the manifest's ``name``.
        version: the (only) served version number.
        max_batch: largest accepted batch of a batched signature.
        max_n: largest accepted ``n`` of ``sample``.

    Raises:
        FileNotFoundError: a file of the export is missing.
        ValueError: the manifest lacks a required key or names other tensors.
    """

    def __init__(self, export_dir: str | os.PathLike, name: str | None = None, version: int = 1,
                 max_batch: int = DEFAULT_MAX_BATCH, max_n: int = DEFAULT_MAX_N):
        from tfinv.export.onnx import inference_session

        for what, value in (("version", version), ("max_batch", max_batch), ("max_n", max_n)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{what} must be a positive int, got {value!r}")
        self.export_dir = pathlib.Path(export_dir)
        manifest_path = self.export_dir / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{manifest_path} not found: pass the directory tfinv.export.export_flow wrote")
        self.manifest = json.loads(manifest_path.read_text())
        try:
            self.data_shape = tuple(int(s) for s in self.manifest["data_shape"])
            self.latent_shape = tuple(int(s) for s in self.manifest["latent_shape"])
            graphs = self.manifest["graphs"]
            forward_info, inverse_info = graphs["forward"], graphs["inverse"]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{manifest_path} is not a tfinv.export.export_flow manifest: missing {err}") from err
        self.name = name or self.manifest.get("name") or "model"
        if "/" in self.name or ":" in self.name:
            raise ValueError(f"model name must not contain '/' or ':', got {self.name!r}")
        self.version = version
        self.max_batch = max_batch
        self.max_n = max_n
        self._sessions = {}
        for direction, info, expected in (("forward", forward_info, ("x", {"z", "log_det"})),
                                          ("inverse", inverse_info, ("z", {"x", "log_det"}))):
            path = self.export_dir / pathlib.Path(info.get("path", f"{direction}.onnx")).name
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found (listed in {manifest_path})")
            if info.get("input_name") != expected[0] or set(info.get("outputs", {})) != expected[1]:
                raise ValueError(f"{path}: expected input {expected[0]!r} and outputs {sorted(expected[1])}, "
                                 f"the manifest lists {info.get('input_name')!r} and {sorted(info.get('outputs', {}))}")
            self._sessions[direction], provider = inference_session(str(path))
        self.provider = provider
        x = TensorSpec("x", "float32", (-1, *self.data_shape))
        z = TensorSpec("z", "float32", (-1, *self.latent_shape))
        log_det = TensorSpec("log_det", "float32", (-1,))
        log_prob = Signature("log_prob", (x,), (TensorSpec("log_prob", "float32", (-1,)),), self._log_prob)
        self.signatures: dict[str, Signature] = {
            "forward": Signature("forward", (x,), (TensorSpec("z", "float32", z.shape), log_det), self._forward),
            "inverse": Signature("inverse", (z,), (TensorSpec("x", "float32", x.shape), log_det), self._inverse),
            "sample": Signature("sample", (TensorSpec("n", "int32", ()), TensorSpec("seed", "int32", ()),
                                           TensorSpec("temperature", "float32", ())),
                                (TensorSpec("x", "float32", x.shape), TensorSpec("z", "float32", z.shape)),
                                self._sample),
            "log_prob": log_prob,
            "serving_default": dataclasses.replace(log_prob, name="serving_default"),
        }

    # ------------------------------------------------------------ computation (thread-safe)
    def _forward(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        z, log_det = self._sessions["forward"].run(["z", "log_det"], {"x": inputs["x"]})
        return {"z": z, "log_det": log_det}

    def _inverse(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x, log_det = self._sessions["inverse"].run(["x", "log_det"], {"z": inputs["z"]})
        return {"x": x, "log_det": log_det}

    def _log_prob(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self._forward(inputs)
        z = out["z"].astype(np.float64).reshape(len(out["z"]), -1)
        base = np.sum(-0.5 * np.square(z) - _LOG_SQRT_2PI, axis=1)
        return {"log_prob": (base + out["log_det"]).astype(np.float32)}

    def _sample(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n, seed = int(inputs["n"]), int(inputs["seed"])
        eps = stateless_normal((n, *self.latent_shape), (seed, 0))
        z = eps * np.float32(inputs["temperature"])
        return {"x": self._inverse({"z": z})["x"], "z": z}

    # ------------------------------------------------------------ TF Serving documents
    def check_model(self, name: str, version: str | None) -> None:
        """Raises TF Serving's 404 unless ``name`` (and ``version``, if given) is served."""
        if name != self.name or (version is not None and int(version) != self.version):
            request = f"Latest({name})" if version is None else f"Specific({name}, {int(version)})"
            raise ServingError(f"Servable not found for request: {request}", 404)

    def status(self) -> dict[str, Any]:
        """The body of ``GET /v1/models/<name>``."""
        return {"model_version_status": [{
            "version": str(self.version), "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""},
        }]}

    def metadata(self) -> dict[str, Any]:
        """The body of ``GET /v1/models/<name>/metadata`` (TF Serving's layout)."""
        return {
            "model_spec": {"name": self.name, "signature_name": "", "version": str(self.version)},
            "metadata": {"signature_def": {
                "signature_def": {key: sig.signature_def() for key, sig in self.signatures.items()},
            }},
        }

    # ------------------------------------------------------------ request parsing
    def parse(self, payload: Any, check_bools: bool = True) -> tuple[Signature, dict[str, np.ndarray], bool]:
        """Validates a predict body: ``(signature, inputs, row_format)`` or a 4xx `ServingError`."""
        if not isinstance(payload, dict):
            raise ServingError("the request body must be a JSON object with 'instances' or 'inputs'", 400)
        key = payload.get("signature_name", "serving_default")
        if not isinstance(key, str):
            raise ServingError(f"'signature_name' must be a string, got {json.dumps(key)}", 400)
        signature = self.signatures.get(key)
        if signature is None:
            raise ServingError(f'Serving signature key "{key}" not found. Available: '
                               f"{', '.join(sorted(self.signatures))}", 400)
        has_rows, has_columns = "instances" in payload, "inputs" in payload
        if has_rows == has_columns:
            raise ServingError("the request must have exactly one of the keys 'instances' (row format) "
                               "and 'inputs' (columnar format)"
                               if has_rows else "Missing 'inputs' or 'instances' key", 400)
        if has_rows:
            return signature, self._parse_rows(signature, payload["instances"], check_bools), True
        return signature, self._parse_columns(signature, payload["inputs"], check_bools), False

    def _parse_rows(self, sig: Signature, instances: Any, check_bools: bool) -> dict[str, np.ndarray]:
        if not sig.batched:
            raise ServingError(f"signature '{sig.name}' takes scalar inputs "
                               f"({', '.join(s.name for s in sig.inputs)}): send them in the columnar "
                               '"inputs" form, e.g. {"signature_name": "sample", "inputs": '
                               '{"n": 4, "seed": 0, "temperature": 1.0}}', 400)
        if not isinstance(instances, list) or not instances:
            raise ServingError("'instances' must be a non-empty list", 400)
        self._check_batch(len(instances))
        names = [s.name for s in sig.inputs]
        named = [isinstance(i, dict) for i in instances]
        if all(named):
            columns: dict[str, list] = {n: [] for n in names}
            for i, instance in enumerate(instances):
                if set(instance) != set(names):
                    raise ServingError(f"instance {i} of signature '{sig.name}' has inputs {sorted(instance)}, "
                                       f"expected {names}", 400)
                for n in names:
                    columns[n].append(instance[n])
        elif any(named):
            raise ServingError("'instances' mixes named ({...}) and unnamed values", 400)
        elif len(names) == 1:
            columns = {names[0]: instances}
        else:
            raise ServingError(f"signature '{sig.name}' has several inputs: each instance must be an object "
                               f"with the keys {names}", 400)
        return {s.name: self._array(sig, s, columns[s.name], check_bools) for s in sig.inputs}

    def _parse_columns(self, sig: Signature, inputs: Any, check_bools: bool) -> dict[str, np.ndarray]:
        names = [s.name for s in sig.inputs]
        if isinstance(inputs, dict):
            missing = [n for n in names if n not in inputs]
            unknown = sorted(set(inputs) - set(names))
            if missing or unknown:
                raise ServingError(f"signature '{sig.name}' takes the inputs {names}"
                                   + (f"; missing {missing}" if missing else "")
                                   + (f"; unknown {unknown}" if unknown else ""), 400)
        elif len(names) == 1:
            inputs = {names[0]: inputs}
        else:
            raise ServingError(f"signature '{sig.name}' has several inputs: 'inputs' must be an object "
                               f"with the keys {names}", 400)
        if sig.batched:
            for s in sig.inputs:
                if isinstance(inputs[s.name], list):
                    self._check_batch(len(inputs[s.name]))
            arrays = {s.name: self._array(sig, s, inputs[s.name], check_bools) for s in sig.inputs}
            if len({len(a) for a in arrays.values()}) > 1:
                raise ServingError(f"the inputs of signature '{sig.name}' have different batch sizes", 400)
            return arrays
        return {s.name: self._scalar(sig, s, inputs[s.name]) for s in sig.inputs}

    def _check_batch(self, batch: int) -> None:
        if batch > self.max_batch:
            raise ServingError(f"batch size {batch} exceeds this server's limit of {self.max_batch} "
                               "(max_batch); split the request", 400)

    @staticmethod
    def _array(sig: Signature, spec: TensorSpec, value: Any, check_bools: bool) -> np.ndarray:
        where = f"input '{spec.name}' of signature '{sig.name}'"
        try:
            array = np.asarray(value)
        except ValueError:
            raise ServingError(f"{where} must be a rectangular (not ragged) array of numbers", 400) from None
        if array.dtype.kind not in "iuf" or (check_bools and _has_bool(value)):
            kind = {"b": "booleans", "U": "strings", "O": "non-numbers or ragged lists"}.get(array.dtype.kind, array.dtype)
            raise ServingError(f"{where} must be numbers of dtype {_DT[spec.dtype]}, got {kind}", 400)
        if array.ndim != len(spec.shape) or array.shape[1:] != spec.shape[1:] or len(array) == 0:
            raise ServingError(f"{where} must have shape {_shape_text(spec.shape)} (-1: batch >= 1), "
                               f"got {_shape_text(array.shape)}", 400)
        with np.errstate(over="ignore", invalid="ignore"):
            array = array.astype(np.float32)
        if not np.all(np.isfinite(array)):
            raise ServingError(f"{where} contains NaN or Inf (or values beyond float32 range)", 400)
        return array

    def _scalar(self, sig: Signature, spec: TensorSpec, value: Any) -> np.ndarray:
        where = f"input '{spec.name}' of signature '{sig.name}'"
        if spec.dtype == "int32":
            if type(value) is not int or not _INT32[0] <= value <= _INT32[1]:
                raise ServingError(f"{where} must be an int32 scalar, got {json.dumps(value)[:80]}", 400)
        elif type(value) not in (int, float) or not math.isfinite(value):
            raise ServingError(f"{where} must be a finite float32 scalar, got {json.dumps(value)[:80]}", 400)
        if spec.name == "n" and not 1 <= value <= self.max_n:
            raise ServingError(f"{where} must be in [1, {self.max_n}] (this server's max_n), got {value}", 400)
        if spec.name == "temperature" and not value > 0:
            raise ServingError(f"{where} must be > 0, got {value}", 400)
        return np.asarray(value, np.int32 if spec.dtype == "int32" else np.float32)

    # ------------------------------------------------------------ response
    @staticmethod
    def render(sig: Signature, outputs: Mapping[str, np.ndarray], row_format: bool) -> dict[str, Any]:
        """TF Serving's response: ``predictions`` (row format) or ``outputs`` (columnar)."""
        values = {s.name: np.asarray(outputs[s.name]).tolist() for s in sig.outputs}
        if row_format:
            if len(values) == 1:
                return {"predictions": next(iter(values.values()))}
            batch = len(next(iter(values.values())))
            return {"predictions": [{k: v[i] for k, v in values.items()} for i in range(batch)]}
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}


# --------------------------------------------------------------------------- the ASGI app
_MODEL_PATH = re.compile(
    r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]{1,18}))?(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?$"
)


def create_app(
    export_dir: str | os.PathLike,
    name: str | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_n: int = DEFAULT_MAX_N,
    version: int = 1,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
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

    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be a positive int, got {max_body_bytes!r}")
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
        raise ValueError(f"max_concurrency must be a positive int, got {max_concurrency!r}")
    servable = OnnxFlowServable(export_dir, name=name, version=version, max_batch=max_batch, max_n=max_n)
    limits: dict[str, Any] = {}

    def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        # allow_nan: a non-finite output is written as NaN/Infinity, as TF Serving does.
        content = json.dumps(body, allow_nan=True, separators=(",", ":")).encode()
        return Response(content, status, headers=dict(headers or {}), media_type="application/json")

    def error_response(err: ServingError) -> Response:
        return json_response({"error": err.message}, err.status or 500, err.headers)

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
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise ServingError(f"request body exceeds this server's limit of {max_body_bytes} bytes "
                                   "(max_body_bytes)", 413, {"Connection": "close"})
            chunks.append(chunk)
        return b"".join(chunks)

    async def predict(request: Request) -> Response:
        body = await read_body(request)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise ServingError(f"JSON Parse error: {err}", 400) from None
        sig, inputs, row_format = servable.parse(payload, check_bools=b"true" in body or b"false" in body)
        async with limits["inference"]:
            try:
                outputs = await run_in_threadpool(sig.run, inputs)
            except Exception as err:  # onnxruntime failure on validated input: a server error
                _logger.exception("inference failed for signature %s", sig.name)
                raise ServingError(f"inference failed: {type(err).__name__}: {err}", 500) from None
        return json_response(servable.render(sig, outputs, row_format))

    async def models(request: Request) -> Response:
        rest = request.path_params["rest"]
        match = _MODEL_PATH.match(rest)
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
        return error_response(err)

    async def on_http_error(request: Request, err: HTTPException) -> Response:
        text = f"Malformed request: {request.method} {request.url.path}" if err.status_code in (404, 405) \
            else str(err.detail)
        return json_response({"error": text}, err.status_code)

    async def on_disconnect(request: Request, err: ClientDisconnect) -> Response:
        return json_response({"error": "client disconnected"}, 400)

    async def on_error(request: Request, err: Exception) -> Response:
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


# --------------------------------------------------------------------------- running
LISTENING_MESSAGE = "tfinv serve: listening on http://{host}:{port}"


def _port_reporting_server_class():
    import uvicorn

    class PortReportingServer(uvicorn.Server):
        """A uvicorn server that prints `LISTENING_MESSAGE` with the port it actually bound (so
        ``--port 0`` lets the OS pick a free port without a bind-release-reuse race)."""

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                for server in self.servers:
                    for sock in server.sockets:
                        host, port = sock.getsockname()[:2]
                        print(LISTENING_MESSAGE.format(host=host, port=port), flush=True)

    return PortReportingServer


def _PortReportingServer(config):  # noqa: N802 (a class, built lazily: uvicorn is an extra)
    return _port_reporting_server_class()(config)


def serve(
    export_dir: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8501,
    name: str | None = None,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_n: int = DEFAULT_MAX_N,
    version: int = 1,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    graceful_timeout: float = 10.0,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Serves an ONNX flow export with uvicorn until SIGTERM/SIGINT; returns after a graceful
    shutdown (no new connections, in-flight requests finished, at most ``graceful_timeout`` s).

    Binds ``127.0.0.1`` by default: pass ``host="0.0.0.0"`` deliberately to expose the server.
    Once listening it prints ``tfinv serve: listening on http://HOST:PORT`` with the bound port
    (``port=0`` lets the OS pick a free one).
    See `create_app` for the other arguments. uvicorn ends the process with ``SystemExit(3)``
    (startup failure) if the address cannot be bound.
    """
    import uvicorn

    app = create_app(export_dir, name=name, max_batch=max_batch, max_body_bytes=max_body_bytes, max_n=max_n,
                     version=version, max_concurrency=max_concurrency)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                            lifespan="on", timeout_graceful_shutdown=max(1, math.ceil(graceful_timeout)),
                            server_header=False)
    server = _PortReportingServer(config)
    # uvicorn re-raises a captured SIGTERM/SIGINT under the previous handler once it has shut
    # down; a no-op handler there makes a graceful shutdown end the process with status 0.
    handled = (signal.SIGTERM, signal.SIGINT)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in handled}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise RuntimeError(f"the server did not start on {host}:{port}")


# --------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the ``serve`` options to ``parser`` (for ``tfinv serve`` and ``python -m``)."""
    parser.add_argument("--export-dir", required=True, help="directory written by tfinv.export.export_flow")
    parser.add_argument("--name", default=None, help="model name in the URLs (default: the manifest's name)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, default=8501,
                        help="port (default: 8501, TF Serving's REST port; 0: a free port, printed at start-up)")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="largest batch per request")
    parser.add_argument("--max-n", type=int, default=DEFAULT_MAX_N, help="largest n of the sample signature")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="largest request body")
    parser.add_argument("--max-concurrency", type=int, default=DEFAULT_MAX_CONCURRENCY,
                        help="inference runs executing at once")
    parser.add_argument("--graceful-timeout", type=float, default=10.0,
                        help="seconds to finish in-flight requests on SIGTERM/SIGINT")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--access-log", action="store_true", help="log every request")
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    """Runs `serve` from parsed `add_arguments` options; returns the exit status (0 after a
    graceful shutdown, 2 for a bad export directory)."""
    try:
        serve(args.export_dir, host=args.host, port=args.port, name=args.name, max_batch=args.max_batch,
              max_body_bytes=args.max_body_bytes, max_n=args.max_n, max_concurrency=args.max_concurrency,
              graceful_timeout=args.graceful_timeout, log_level=args.log_level, access_log=args.access_log)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tfinv.serving.onnx_server --export-dir DIR [--port 8501] ...``; returns the exit status."""
    parser = add_arguments(argparse.ArgumentParser(
        prog="python -m tfinv.serving.onnx_server",
        description="Serve an ONNX flow export with TF Serving's REST API (onnxruntime)."))
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
