"""tfinv.export: the export stage (standard ONNX graphs, TF Serving SavedModel).

Depends on tfinv; tfinv never imports it. The deployment contract (`tfinv.export.signatures`),
the manifest reader (`tfinv.export.manifest`) and onnxruntime sessions (`tfinv.export.runtime`)
import no TensorFlow; the exporters load TensorFlow on first use (``tfinv.export.export_flow``).
"""

from __future__ import annotations

import importlib
from typing import Any

from tfinv.export.errors import ExportError

__all__ = [
    "ExportError",
    "OnnxExport",
    "SIGNATURES",
    "export_flow",
    "inference_session",
    "read_manifest",
    "to_onnx",
    "to_saved_model",
]

# name -> the module that defines it (imported on first access: most pull in TensorFlow).
_LAZY = {
    "OnnxExport": "tfinv.export.onnx",
    "to_onnx": "tfinv.export.onnx",
    "export_flow": "tfinv.export.bundle",
    "to_saved_model": "tfinv.export.saved_model",
    "SIGNATURES": "tfinv.export.signatures:SIGNATURE_NAMES",
    "inference_session": "tfinv.export.runtime",
    "read_manifest": "tfinv.export.manifest",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attribute = _LAZY[name].partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
