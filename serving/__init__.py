"""tfinv.serving: the serving stage (TF Serving config and client, ONNX Runtime server); depends on tfinv.export."""

from __future__ import annotations

from typing import Any

from tfinv.serving.client import Client
from tfinv.serving.errors import ServingError

__all__ = ["Client", "ServingError", "create_app", "serve", "write_serving_config"]


def __getattr__(name: str) -> Any:
    # The server (Starlette, uvicorn, onnxruntime) loads on first use, so a client-only user
    # does not import it, and ``python -m tfinv.serving.onnx_server`` runs it only once.
    if name in ("create_app", "serve"):
        from tfinv.serving import onnx_server

        return getattr(onnx_server, name)
    if name == "write_serving_config":
        from tfinv.serving.tf_serving import write_serving_config

        return write_serving_config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
