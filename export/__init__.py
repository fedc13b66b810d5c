"""tfinv.export: the export stage (standard ONNX graphs, TF Serving SavedModel).

Depends on tfinv; tfinv never imports it.
"""

from tfinv.export.errors import ExportError
from tfinv.export.onnx import OnnxExport, export_flow, inference_session, to_onnx
from tfinv.export.saved_model import SIGNATURES, to_saved_model

__all__ = [
    "ExportError",
    "OnnxExport",
    "SIGNATURES",
    "export_flow",
    "inference_session",
    "to_onnx",
    "to_saved_model",
]
