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

import time
from typing import Any, Mapping

import numpy as np

from tfinv.serving.errors import ServingError
from tfinv.serving.grpc_transport import DEFAULT_GRPC_URL, GrpcServingError, GrpcTransport
from tfinv.serving.rest_transport import RestTransport
from tfinv.serving.transport import DEFAULT_URL, SIGNATURES, Transport

__all__ = ["Client", "GrpcServingError", "GrpcTransport", "RestTransport", "SIGNATURES", "TRANSPORTS", "Transport",
           "DEFAULT_URL", "DEFAULT_GRPC_URL"]

_SCALAR_SIGNATURES = ("sample",)


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

    @staticmethod
    def _with_context(inputs: dict[str, Any], context: Any) -> dict[str, Any]:
        if context is not None:
            inputs["context"] = context
        return inputs

    def forward(self, x: Any, context: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Data -> latent: ``(z, log_det)`` for a batch ``x`` of shape ``(B, *data_shape)`` (and, for a
        conditional model, ``context`` of shape ``(B, *context_shape)``)."""
        out = self.predict("forward", self._with_context({"x": x}, context))
        return out["z"], out["log_det"]

    def inverse_and_log_det(self, z: Any, context: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Latent -> data: ``(x, log_det)`` for a batch ``z`` of shape ``(B, *latent_shape)``."""
        out = self.predict("inverse", self._with_context({"z": z}, context))
        return out["x"], out["log_det"]

    def inverse(self, z: Any, context: Any = None) -> np.ndarray:
        """Latent -> data: ``x`` (as ``FlowModel.inverse``); see `inverse_and_log_det`."""
        return self.inverse_and_log_det(z, context)[0]

    def sample(self, n: int, seed: int = 0, temperature: float = 1.0, return_z: bool = False,
               context: Any = None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """``n`` samples drawn on the server from ``seed`` (int32): ``x``, or ``(x, z)`` with
        ``return_z``. Reproducible for a seed; equal to ``model.sample(n, temperature, seed)``.
        A conditional model takes ``context`` of shape ``(n, *context_shape)``."""
        inputs = {"n": int(n), "seed": int(seed), "temperature": float(temperature)}
        out = self.predict("sample", self._with_context(inputs, context))
        return (out["x"], out["z"]) if return_z else out["x"]

    def log_prob(self, x: Any, context: Any = None) -> np.ndarray:
        """``log p(x)`` per example, shape ``(B,)``."""
        return self.predict("log_prob", self._with_context({"x": x}, context))["log_prob"]

    # ------------------------------------------------------------ model documents
    def status(self) -> dict[str, Any]:
        """TF Serving's model status JSON (``{"model_version_status": [...]}``)."""
        return self.transport.status()

    def metadata(self) -> dict[str, Any]:
        """TF Serving's model metadata JSON (``{"model_spec": ..., "metadata": {"signature_def": ...}}``)."""
        return self.transport.metadata()

    def num_levels(self) -> int | None:
        """The served model's pixel levels, from the metadata field ``tfinv`` that ``tfinv serve``
        adds; ``None`` when the server does not report them (TF Serving's metadata carries only
        the signatures)."""
        value = (self.metadata().get("metadata", {}).get("tfinv") or {}).get("num_levels")
        return value if type(value) is int and value > 1 else None

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
