"""TF Serving's gRPC API as a `Transport` (``tensorflow-serving-api``; TF Serving only).

``PredictionService.Predict`` / ``GetModelMetadata`` and ``ModelService.GetModelStatus``; this
transport imports TensorFlow (for ``TensorProto`` conversion), the REST transport does not.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from tfinv.export.signatures import signatures
from tfinv.serving.errors import ServingError
from tfinv.serving.transport import Transport

__all__ = ["GRPC_TO_HTTP_STATUS", "GrpcServingError", "GrpcTransport"]

#: TF Serving's gRPC port on this host (the default URL of `GrpcTransport`).
DEFAULT_GRPC_URL = "127.0.0.1:8500"

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
    key: {spec.name: np.dtype(spec.dtype).type for spec in sig.inputs}
    for key, sig in signatures((1,), (1,), (1,)).items()
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
