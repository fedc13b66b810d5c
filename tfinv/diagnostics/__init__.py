"""Invertibility diagnostics: bi-Lipschitz estimates, condition numbers, log-det contributions and
the exploding-inverse stress test, for any `InvertibleLayer` or `FlowModel`.

* `diagnose(model, x)` -> a JSON-ready report; `write_report(report, folder)` writes
  ``diagnostics.json`` and a PNG per layer, whole or not at all;
* `local_spectral_norm` / `bi_lipschitz`: power iteration on Jacobian-vector products;
* `InvertibilityMonitor`: a Keras callback recording the bounds every epoch and warning when the
  reconstruction error crosses a threshold.

CLI: ``tfinv diagnose --model DIR/model.keras``.

References: Behrmann et al., "Understanding and Mitigating Exploding Inverses in Invertible
Neural Networks", arXiv:2006.09347.
"""

from tfinv.diagnostics.monitor import InvertibilityMonitor, InvertibilityWarning
from tfinv.diagnostics.output import write_report
from tfinv.diagnostics.report import Subject, bi_lipschitz, diagnose, invertible_subject, load_diagnosable
from tfinv.diagnostics.spectral import jacobian_vector_product, local_spectral_norm, vector_jacobian_product
from tfinv.diagnostics.stress import error_summary, reconstruction_errors, stress_sets
from tfinv.diagnostics.tracing import LayerTrace, trace_layers

__all__ = [
    "InvertibilityMonitor",
    "InvertibilityWarning",
    "LayerTrace",
    "Subject",
    "bi_lipschitz",
    "diagnose",
    "error_summary",
    "invertible_subject",
    "jacobian_vector_product",
    "load_diagnosable",
    "local_spectral_norm",
    "reconstruction_errors",
    "stress_sets",
    "trace_layers",
    "vector_jacobian_product",
    "write_report",
]
