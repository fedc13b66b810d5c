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

The wire protocol sits behind `Transport`; `Client` picks one by name (``transport="rest"``, the
only one implemented here). A gRPC transport (``tensorflow_serving.apis``'
``PredictionService``) plugs in by subclassing `Transport` and registering it in `TRANSPORTS`.
"""

from __future__ import annotations

import abc
import json
import time
from typing import Any, Mapping

import numpy as np

from tfinv.serving.errors import ServingError

__all__ = ["Client", "RestTransport", "SIGNATURES", "TRANSPORTS", "Transport"]

DEFAULT_URL = "http://127.0.0.1:8501"

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
    """The wire protocol of a `Client`: one instance talks to one model (and version)."""

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


#: Transports by name; ``"grpc"`` is to be registered here.
TRANSPORTS: dict[str, type[Transport]] = {"rest": RestTransport}


class Client:
    """Calls a served flow model (TF Serving or ``tfinv serve``) with NumPy in and out.

    Args:
        url: the server's base URL (REST: ``http://host:8501``).
        model: the served model name (``/v1/models/<model>``).
        version: a specific model version, or ``None`` for the latest.
        timeout: seconds per request.
        transport: ``"rest"`` (a name in `TRANSPORTS`) or a `Transport` instance.
        row_format: send batched inputs in TF Serving's row format (``"instances"``) instead of
            the columnar ``"inputs"``; ``sample`` always uses ``"inputs"`` (scalar inputs).

    Every method raises `ServingError` (``.message``: the server's error; ``.status``: the HTTP
    status, ``None`` if no response arrived). A client is a context manager; `close` releases its
    connections.
    """

    def __init__(self, url: str = DEFAULT_URL, *, model: str, version: int | None = None, timeout: float = 30.0,
                 transport: str | Transport = "rest", row_format: bool = False):
        if isinstance(transport, Transport):
            self.transport = transport
        elif transport in TRANSPORTS:
            self.transport = TRANSPORTS[transport](url, model, version=version, timeout=timeout)
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
