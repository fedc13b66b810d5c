"""TF Serving's REST API as a `Transport` (served by TF Serving and by ``tfinv serve``)."""

from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

from tfinv.export.signatures import io_names
from tfinv.serving import protocol
from tfinv.serving.errors import ServingError
from tfinv.serving.transport import Transport

__all__ = ["RestTransport"]

_NAMES = {**io_names(conditional=True), **io_names()}


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
        outputs = _NAMES.get(signature, ((), ()))[1]
        body = protocol.encode_predict(signature, inputs, row_format)
        payload = self._request("POST", f"{self._model_path}:predict", body)
        return protocol.decode_predict(payload, outputs)

    def status(self) -> dict[str, Any]:
        return self._request("GET", self._model_path)

    def metadata(self) -> dict[str, Any]:
        return self._request("GET", f"{self._model_path}/metadata")

    def close(self) -> None:
        self._http.close()
