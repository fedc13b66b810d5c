"""A client for a served flow: TF Serving (the SavedModel export) or the ONNX server, the same API.

>>> client = Client("http://127.0.0.1:8501", model="digits")
>>> x = client.sample(16, seed=1, temperature=0.7)      # (16, H, W, C) float32
>>> z, log_det = client.forward(x)
>>> x_back = client.inverse(z)
>>> log_p = client.log_prob(x)

Both servers expose the signatures ``forward`` (``x`` -> ``z``, ``log_det``), ``inverse`` (``z`` ->
``x``, ``log_det``), ``sample`` (``n``, ``seed``, ``temperature`` -> ``x``, ``z``) and ``log_prob``
(``x`` -> ``log_prob``) through TF Serving's REST predict API. A failed request raises
`ServingError` with the server's message and HTTP status.

The wire protocol sits behind `Transport`; `Client` picks one by name from `TRANSPORTS`:
``transport="rest"`` (`RestTransport`, TF Serving's REST API, served by TF Serving and by
``tfinv serve``) or ``transport="grpc"`` (`GrpcTransport`, TF Serving's gRPC ``PredictionService``
and ``ModelService`` from ``tensorflow-serving-api``; TF Serving only):

>>> client = Client("127.0.0.1:8500", model="digits", transport="grpc")
>>> x = client.sample(16, seed=1, temperature=0.7)

Both transports return the same values and the same status/metadata documents (TF Serving's REST
JSON); a gRPC failure raises `GrpcServingError`, a `ServingError` whose ``status`` is the HTTP
status TF Serving's REST API gives the same error and whose ``code`` is the gRPC code name.
"""

from __future__ import annotations

import abc
import json
import time
from typing import Any, Mapping

import numpy as np

from tfinv.serving.errors import ServingError

__all__ = ["Client", "GrpcServingError", "GrpcTransport", "RestTransport", "SIGNATURES", "TRANSPORTS", "Transport"]

DEFAULT_URL = "http://127.0.0.1:8501"
#: TF Serving's gRPC port on this host (the default URL of `GrpcTransport`).
DEFAULT_GRPC_URL = "127.0.0.1:8500"

#: The signatures of a served flow: ``{key: (input names, output names)}``.
SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "forward": (("x",), ("z", "log_det")),
    "inverse": (("z",), ("x", "log_det")),
    "sample": (("n", "seed", "temperature"), ("x", "z")),
    "log_prob": (("x",), ("log_prob",)),
    "serving_default": (("x",), ("log_prob",)),
}
_SCALAR_SIGNATURES = ("sample",)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "numpy"):  # a TensorFlow eager tensor, without importing TensorFlow
        return np.asarray(value).tolist()
    return value


class Transport(abc.ABC):
    """The wire protocol of a `Client`: one instance talks to one model (and version).

    Subclasses take ``(url, model, version=None, timeout=30.0)`` and may set ``default_url``,
    used by `Client` when no URL is given.
    """

    default_url: str = DEFAULT_URL

    @abc.abstractmethod
    def predict(self, signature: str, inputs: Mapping[str, Any], row_format: bool = False) -> dict[str, np.ndarray]:
        """Runs ``signature`` on named ``inputs``; returns the named outputs as arrays."""

    @abc.abstractmethod
    def status(self) -> dict[str, Any]:
        """The model status, in TF Serving's REST JSON (``{"model_version_status": [...]}``)."""

    @abc.abstractmethod
    def metadata(self) -> dict[str, Any]:
        """The model metadata, in TF Serving's REST JSON (``{"model_spec", "metadata"}``)."""

    def close(self) -> None:
        """Releases connections."""


class RestTransport(Transport):
    """TF Serving's REST API over HTTP/1.1 (httpx, one pooled connection set per transport).

    Args:
        url: the server's base URL, e.g. ``http://127.0.0.1:8501``.
        model: the model name.
        version: a specific version, or ``None`` for the latest.
        timeout: seconds per request (connect, read, write).
    """

    def __init__(self, url: str, model: str, version: int | None = None, timeout: float = 30.0):
        import httpx

        self._httpx = httpx
        base = f"/v1/models/{model}" + (f"/versions/{int(version)}" if version is not None else "")
        self._model_path = base
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        content = None
        headers = {}
        if body is not None:
            # Encoded here (not httpx's json=) so that NaN reaches the server, which rejects it.
            content = json.dumps(body, allow_nan=True, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        try:
            response = self._http.request(method, path, content=content, headers=headers)
        except self._httpx.HTTPError as err:
            raise ServingError(f"{method} {path} failed: {type(err).__name__}: {err}", None) from err
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code >= 400:
            message = payload.get("error") if isinstance(payload, dict) else None
            raise ServingError(message or response.text or response.reason_phrase, response.status_code)
        if not isinstance(payload, dict):
            raise ServingError(f"{method} {path}: the server answered {response.status_code} without a JSON "
                               f"object: {response.text[:200]!r}", response.status_code)
        return payload

    def predict(self, signature: str, inputs: Mapping[str, Any], row_format: bool = False) -> dict[str, np.ndarray]:
        outputs = SIGNATURES.get(signature, ((), ()))[1]
        values = {k: _jsonable(v) for k, v in inputs.items()}
        if row_format:
            names = list(values)
            batch = len(values[names[0]])
            instances = (values[names[0]] if len(names) == 1
                         else [{n: values[n][i] for n in names} for i in range(batch)])
            body = {"signature_name": signature, "instances": instances}
        else:
            body = {"signature_name": signature, "inputs": values}
        payload = self._request("POST", f"{self._model_path}:predict", body)
        if "predictions" in payload:
            rows = payload["predictions"]
            if rows and isinstance(rows[0], dict):
                result = {k: [row[k] for row in rows] for k in rows[0]}
            else:
                result = {outputs[0] if len(outputs) == 1 else "predictions": rows}
        elif "outputs" in payload:
            out = payload["outputs"]
            result = out if isinstance(out, dict) else {outputs[0] if len(outputs) == 1 else "outputs": out}
        else:
            raise ServingError(f"predict response has neither 'predictions' nor 'outputs': {list(payload)}", 502)
        return {k: np.asarray(v, np.float32) for k, v in result.items()}

    def status(self) -> dict[str, Any]:
        return self._request("GET", self._model_path)

    def metadata(self) -> dict[str, Any]:
        return self._request("GET", f"{self._model_path}/metadata")

    def close(self) -> None:
        self._http.close()


#: The HTTP status TF Serving's REST API answers for each gRPC status code
#: (``ToHTTPStatusCode`` in tensorflow_serving/model_servers/http_server.cc).
GRPC_TO_HTTP_STATUS: dict[str, int] = {
    "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400,
    "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503,
    "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}

# Input dtypes of the flow's signatures (a gRPC TensorProto must carry the signature's dtype
# exactly; REST sends JSON numbers and the server converts them).
_INPUT_DTYPES: dict[str, dict[str, Any]] = {
    signature: {name: np.int32 if (signature, name) in (("sample", "n"), ("sample", "seed")) else np.float32
                for name in inputs}
    for signature, (inputs, _) in SIGNATURES.items()
}
_DT_TO_NUMPY = {"DT_FLOAT": np.float32, "DT_DOUBLE": np.float64, "DT_INT32": np.int32, "DT_INT64": np.int64,
                "DT_INT16": np.int16, "DT_INT8": np.int8, "DT_UINT8": np.uint8, "DT_HALF": np.float16}


class GrpcServingError(ServingError):
    """A failed gRPC call (or an input that cannot be sent with the signature's dtype).

    Attributes:
        message: the server's error details (or the client-side reason).
        code: the gRPC status code name, e.g. ``"NOT_FOUND"``, ``"INVALID_ARGUMENT"``,
            ``"UNAVAILABLE"`` (also when the server cannot be reached).
        status: the HTTP status TF Serving's REST API answers for the same error
            (`GRPC_TO_HTTP_STATUS`: 404, 400, 503, ...), so code written against the REST
            transport's ``status`` works unchanged.
    """

    def __init__(self, message: str, code: str, status: int | None = None):
        super().__init__(message, GRPC_TO_HTTP_STATUS.get(code, 500) if status is None else status)
        self.code = code

    def __str__(self) -> str:
        return f"gRPC {self.code}: {self.message}"

    def __reduce__(self):
        return type(self), (self.message, self.code, self.status)


def _grpc_target(url: str) -> str:
    """``host:port`` (or ``grpc://host:port``) -> the channel target."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"the gRPC transport needs 'host:port', got {url!r}")
    if url.startswith("grpc://"):
        url = url[len("grpc://"):]
    if "://" in url:
        raise ValueError(f"the gRPC transport takes 'host:port' (TF Serving's gRPC port, 8500), not a URL: "
                         f"{url!r}; use transport='rest' for http:// URLs")
    return url.rstrip("/")


class GrpcTransport(Transport):
    """TF Serving's gRPC API: ``PredictionService.Predict`` / ``GetModelMetadata`` and
    ``ModelService.GetModelStatus`` (``tensorflow-serving-api``; imports TensorFlow).

    Inputs go as ``TensorProto`` of the signature's dtype (int32 ``n``/``seed`` of ``sample``,
    float32 otherwise; for a signature this client does not know, the dtypes come from the model
    metadata); outputs come back as NumPy arrays. Messages are not size-limited on the client
    side (TF Serving accepts up to 2 GiB).

    Args:
        url: ``host:port`` of TF Serving's gRPC port, e.g. ``127.0.0.1:8500``
            (``grpc://host:port`` is accepted too).
        model: the model name (``ModelSpec.name``).
        version: a specific version (``ModelSpec.version``), or ``None`` for the latest.
        timeout: seconds per call (the RPC deadline).
        channel: an existing ``grpc.Channel`` to use instead (e.g. a secure channel); it is not
            closed by `close`.
    """

    default_url = DEFAULT_GRPC_URL

    def __init__(self, url: str, model: str, version: int | None = None, timeout: float = 30.0, *,
                 channel: Any = None):
        try:
            import grpc
            from google.protobuf import json_format
            from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                                 model_service_pb2_grpc, predict_pb2,
                                                 prediction_service_pb2_grpc)
        except ImportError as err:
            raise ImportError(f"the gRPC transport needs grpcio and tensorflow-serving-api ({err}); "
                              "pip install 'tfinv[serving]'") from err
        import tensorflow as tf

        self._grpc, self._json_format, self._tf = grpc, json_format, tf
        self._predict_pb2, self._metadata_pb2 = predict_pb2, get_model_metadata_pb2
        self._status_pb2 = get_model_status_pb2
        self.model, self.version, self.timeout = model, None if version is None else int(version), timeout
        self._own_channel = channel is None
        if channel is None:
            channel = grpc.insecure_channel(_grpc_target(url), options=[
                ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
        self._channel = channel
        self._predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self._model_stub = model_service_pb2_grpc.ModelServiceStub(channel)
        self._metadata_dtypes: dict[str, dict[str, Any]] | None = None

    # ------------------------------------------------------------ helpers
    def _spec(self, spec, signature: str | None = None) -> None:
        spec.name = self.model
        if self.version is not None:
            spec.version.value = self.version
        if signature is not None:
            spec.signature_name = signature

    def _call(self, method, request, what: str):
        try:
            return method(request, timeout=self.timeout)
        except self._grpc.RpcError as err:
            code = err.code() if callable(getattr(err, "code", None)) else None
            details = err.details() if callable(getattr(err, "details", None)) else None
            name = code.name if code is not None else "UNKNOWN"
            raise GrpcServingError(details or f"{what} failed ({name})", name) from None

    def _as_dict(self, message) -> dict[str, Any]:
        return self._json_format.MessageToDict(message, preserving_proto_field_name=True,
                                               always_print_fields_with_no_presence=True)

    def _input_dtypes(self, signature: str) -> dict[str, Any]:
        if signature in _INPUT_DTYPES:
            return _INPUT_DTYPES[signature]
        if self._metadata_dtypes is None:
            defs = self.metadata()["metadata"]["signature_def"]["signature_def"]
            self._metadata_dtypes = {
                key: {name: _DT_TO_NUMPY.get(info.get("dtype"), np.float32)
                      for name, info in d.get("inputs", {}).items()}
                for key, d in defs.items()}
        return self._metadata_dtypes.get(signature, {})

    @staticmethod
    def _array(signature: str, key: str, value: Any, dtype: Any) -> np.ndarray:
        where = f"input '{key}' of signature '{signature}'"
        if hasattr(value, "numpy"):  # a TensorFlow eager tensor
            value = value.numpy()
        try:
            array = np.asarray(value)
        except ValueError:
            raise GrpcServingError(f"{where} must be a rectangular (not ragged) array of numbers",
                                   "INVALID_ARGUMENT") from None
        if array.dtype.kind not in "iuf":
            raise GrpcServingError(f"{where} must be numbers, got dtype {array.dtype}", "INVALID_ARGUMENT")
        if np.issubdtype(dtype, np.integer) and array.size:
            info = np.iinfo(dtype)
            with np.errstate(invalid="ignore"):
                integral = bool(np.all(np.isfinite(array)) and np.all(np.floor(array) == array))
            if not integral or array.min() < info.min or array.max() > info.max:
                raise GrpcServingError(f"{where} must be {np.dtype(dtype).name} integers, got "
                                       f"{np.array2string(array.ravel()[:4])}", "INVALID_ARGUMENT")
        return array.astype(dtype)

    # ------------------------------------------------------------ Transport
    def predict(self, signature: str, inputs: Mapping[str, Any], row_format: bool = False) -> dict[str, np.ndarray]:
        """Runs ``signature`` (``row_format`` does not apply to gRPC)."""
        request = self._predict_pb2.PredictRequest()
        self._spec(request.model_spec, signature)
        dtypes = self._input_dtypes(signature)
        for key, value in inputs.items():
            array = self._array(signature, key, value, dtypes.get(key, np.float32))
            request.inputs[key].CopyFrom(self._tf.make_tensor_proto(array))
        response = self._call(self._predict_stub.Predict, request, "Predict")
        outputs = {}
        for key, proto in response.outputs.items():
            value = self._tf.make_ndarray(proto)
            outputs[key] = value.astype(np.float32) if value.dtype.kind == "f" else value
        return outputs

    def status(self) -> dict[str, Any]:
        request = self._status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec)
        return self._as_dict(self._call(self._model_stub.GetModelStatus, request, "GetModelStatus"))

    def metadata(self) -> dict[str, Any]:
        request = self._metadata_pb2.GetModelMetadataRequest()
        self._spec(request.model_spec)
        request.metadata_field.append("signature_def")
        response = self._call(self._predict_stub.GetModelMetadata, request, "GetModelMetadata")
        signature_defs = self._metadata_pb2.SignatureDefMap()
        if "signature_def" not in response.metadata or not response.metadata["signature_def"].Unpack(signature_defs):
            raise GrpcServingError("GetModelMetadata answered without a SignatureDefMap under 'signature_def'",
                                   "DATA_LOSS", 502)
        return {"model_spec": self._as_dict(response.model_spec),
                "metadata": {"signature_def": self._as_dict(signature_defs)}}

    def close(self) -> None:
        if self._own_channel:
            self._channel.close()


#: Transports by name (`Client`'s ``transport=``).
TRANSPORTS: dict[str, type[Transport]] = {"rest": RestTransport, "grpc": GrpcTransport}


class Client:
    """Calls a served flow model (TF Serving or ``tfinv serve``) with NumPy in and out.

    Args:
        url: the server's address: REST ``http://host:8501``, gRPC ``host:8500``; default: the
            transport's (``http://127.0.0.1:8501`` / ``127.0.0.1:8500``).
        model: the served model name (``/v1/models/<model>``).
        version: a specific model version, or ``None`` for the latest.
        timeout: seconds per request.
        transport: ``"rest"`` or ``"grpc"`` (a name in `TRANSPORTS`), or a `Transport` instance.
        row_format: send batched inputs in TF Serving's row format (``"instances"``) instead of
            the columnar ``"inputs"``; ``sample`` always uses ``"inputs"`` (scalar inputs).

    Every method raises `ServingError` (``.message``: the server's error; ``.status``: the HTTP
    status, ``None`` if no response arrived; over gRPC a `GrpcServingError` with the gRPC ``.code``
    and the HTTP status TF Serving's REST API would give). A client is a context manager; `close`
    releases its connections.
    """

    def __init__(self, url: str | None = None, *, model: str, version: int | None = None, timeout: float = 30.0,
                 transport: str | Transport = "rest", row_format: bool = False):
        if isinstance(transport, Transport):
            self.transport = transport
        elif transport in TRANSPORTS:
            cls = TRANSPORTS[transport]
            url = cls.default_url if url is None else url
            self.transport = cls(url, model, version=version, timeout=timeout)
        else:
            raise ValueError(f"transport {transport!r} is not available; choose one of {sorted(TRANSPORTS)}")
        self.url, self.model, self.version, self.row_format = url, model, version, row_format

    # ------------------------------------------------------------ signatures
    def predict(self, signature: str, inputs: Mapping[str, Any], row_format: bool | None = None) -> dict[str, np.ndarray]:
        """Runs any signature on named inputs; returns its named outputs (float32 arrays)."""
        rows = self.row_format if row_format is None else row_format
        return self.transport.predict(signature, inputs, rows and signature not in _SCALAR_SIGNATURES)

    def forward(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """Data -> latent: ``(z, log_det)`` for a batch ``x`` of shape ``(B, *data_shape)``."""
        out = self.predict("forward", {"x": x})
        return out["z"], out["log_det"]

    def inverse_and_log_det(self, z: Any) -> tuple[np.ndarray, np.ndarray]:
        """Latent -> data: ``(x, log_det)`` for a batch ``z`` of shape ``(B, *latent_shape)``."""
        out = self.predict("inverse", {"z": z})
        return out["x"], out["log_det"]

    def inverse(self, z: Any) -> np.ndarray:
        """Latent -> data: ``x`` (as ``FlowModel.inverse``); see `inverse_and_log_det`."""
        return self.inverse_and_log_det(z)[0]

    def sample(self, n: int, seed: int = 0, temperature: float = 1.0,
               return_z: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """``n`` samples drawn on the server from ``seed`` (int32): ``x``, or ``(x, z)`` with
        ``return_z``. Reproducible for a seed; equal to ``model.sample(n, temperature, seed)``."""
        out = self.predict("sample", {"n": int(n), "seed": int(seed), "temperature": float(temperature)})
        return (out["x"], out["z"]) if return_z else out["x"]

    def log_prob(self, x: Any) -> np.ndarray:
        """``log p(x)`` per example, shape ``(B,)``."""
        return self.predict("log_prob", {"x": x})["log_prob"]

    # ------------------------------------------------------------ model documents
    def status(self) -> dict[str, Any]:
        """TF Serving's model status JSON (``{"model_version_status": [...]}``)."""
        return self.transport.status()

    def metadata(self) -> dict[str, Any]:
        """TF Serving's model metadata JSON (``{"model_spec": ..., "metadata": {"signature_def": ...}}``)."""
        return self.transport.metadata()

    def signatures(self) -> dict[str, dict[str, dict[str, tuple[str, list[int]]]]]:
        """The signatures from `metadata`, simplified: ``{key: {"inputs"|"outputs": {name: (dtype,
        shape)}}}`` with dtype like ``"DT_FLOAT"`` and ``-1`` for the batch axis."""
        defs = self.metadata()["metadata"]["signature_def"]["signature_def"]

        def tensors(infos):
            return {name: (info.get("dtype", ""), [int(d.get("size", -1)) for d in
                                                   info.get("tensor_shape", {}).get("dim", [])])
                    for name, info in infos.items()}

        return {key: {"inputs": tensors(d.get("inputs", {})), "outputs": tensors(d.get("outputs", {}))}
                for key, d in defs.items() if not key.startswith("__")}

    def wait_until_available(self, timeout: float = 60.0, interval: float = 0.2) -> dict[str, Any]:
        """Polls `status` until a version is ``AVAILABLE``; returns the status. Raises the last
        `ServingError` (or a ``TimeoutError``) after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = self.status()
                if any(v.get("state") == "AVAILABLE" for v in status.get("model_version_status", [])):
                    return status
                error: Exception = TimeoutError(f"model {self.model!r} not AVAILABLE after {timeout} s: {status}")
            except ServingError as err:
                error = err
            if time.monotonic() >= deadline:
                raise error
            time.sleep(interval)

    # ------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Releases the transport's connections."""
        self.transport.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r}, model={self.model!r}, version={self.version!r}, " \
               f"transport={type(self.transport).__name__})"
