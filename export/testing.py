"""The ONNX part of the layer contract (it lives here because `tfinv` never imports the export
stage). ``tests/test_contract.py`` runs it over every `tfinv.testing.cases()` entry."""

from __future__ import annotations

import numpy as np

from tfinv.export.onnx import prepare


def check_onnx(subject, x, tolerance: float = 1e-4, opset: int = 17, context=None) -> dict[str, float]:
    """Both directions convert to standard ONNX and match TF in onnxruntime within ``tolerance``
    (relative). The inverse is checked at ``forward(x)``; a conditional subject's graphs take
    ``context`` as their second input. Returns the measured errors."""
    x = np.asarray(x, np.float32)
    if context is None:
        z = np.asarray(subject.forward_and_log_det(x)[0], np.float32)
    else:
        context = np.asarray(context, np.float32)
        z = np.asarray(subject.forward_and_log_det(x, context)[0], np.float32)
    errors = {}
    for direction, value in (("forward", x), ("inverse", z)):
        _, info = prepare(subject, direction, opset=opset, test_input=value, tolerance=tolerance,
                          test_context=context)
        errors[direction] = info.max_relative_error
    return errors
