"""tfinv.serving: the serving stage (TF Serving config and client, ONNX Runtime server); depends on
tfinv.export. Importing it (client, server, rng, errors) loads no TensorFlow, TFP or Keras.

One job per module: `protocol` (TF Serving's REST JSON, shared by server and client),
`servable` (an ONNX export on onnxruntime), `app` (the Starlette app), `server` (uvicorn with
limits and timeouts), `cli` (``tfinv serve``/``query``/``serve-config``, ``python -m
tfinv.serving``), `client` with its transports, `tf_serving` (TF Serving's files, from
``templates/``), `rng` (TensorFlow's stateless normal in NumPy).
"""

from __future__ import annotations

from typing import Any

from tfinv.serving.client import Client
from tfinv.serving.errors import ServingError

__all__ = ["Client", "OnnxFlowServable", "ServingError", "create_app", "serve", "write_serving_config"]

_LAZY = {"create_app": "tfinv.serving.app", "serve": "tfinv.serving.server",
         "OnnxFlowServable": "tfinv.serving.servable", "write_serving_config": "tfinv.serving.tf_serving"}


def __getattr__(name: str) -> Any:
    # The server (Starlette, uvicorn, onnxruntime) loads on first use, so a client-only user
    # does not import it.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
