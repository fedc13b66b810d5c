"""The ONNX part of the layer contract (it lives here because `tfinv` never imports the export
stage). ``tests/test_contract.py`` runs it over every `tfinv.testing.cases()` entry."""

from __future__ import annotations

import numpy as np

from tfinv.export.onnx import inference_session, prepare
from tfinv.testing import contract


def check_onnx(subject, x, tolerance: float = 1e-4, opset: int = 17, context=None) -> dict[str, float]:
    """Both directions convert to standard ONNX and match TF in onnxruntime within ``tolerance``
    (relative, per example: `tfinv.testing.contract.relative_error`). The inverse is checked at
    ``forward(x)``; a conditional subject's graphs take ``context`` as their second input.
    Returns the measured errors.

    The comparison is made here, on the graph `prepare` returns, independently of the export's own
    parity check: a bug in that check cannot make this one pass.
    """
    x = np.asarray(x, np.float32)
    if context is None:
        z, fldj = subject.forward_and_log_det(x)
        z = np.asarray(z, np.float32)
        x_back, ildj = subject.inverse_and_log_det(z)
    else:
        context = np.asarray(context, np.float32)
        z, fldj = subject.forward_and_log_det(x, context)
        z = np.asarray(z, np.float32)
        x_back, ildj = subject.inverse_and_log_det(z, context)
    expected = {"forward": {"z": z, "log_det": fldj}, "inverse": {"x": x_back, "log_det": ildj}}
    errors = {}
    for direction, value, input_name in (("forward", x, "x"), ("inverse", z, "z")):
        model_proto, _ = prepare(subject, direction, opset=opset, test_input=value, tolerance=tolerance,
                                 test_context=context)
        session, _ = inference_session(model_proto.SerializeToString())
        names = [o.name for o in session.get_outputs()]
        feeds = {input_name: value} if context is None else {input_name: value, "context": context}
        got = dict(zip(names, session.run(None, feeds)))
        for name, want in expected[direction].items():
            if name not in got:
                raise AssertionError(f"ONNX {direction} graph has no output {name!r} (outputs: {names})")
            err = contract.relative_error(got[name], np.asarray(want))
            if not err <= tolerance:
                raise AssertionError(
                    f"ONNX {direction} output {name!r} differs from TF: relative error {err:.3e} > {tolerance:.1e}")
            errors[f"{direction}:{name}"] = err
    return errors
