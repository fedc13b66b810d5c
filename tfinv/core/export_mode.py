"""A flag the export stage raises while it traces graphs for ONNX.

Most layers need nothing from it: freezing turns variables into constants and folds
parameter-only work (weight inverses, LU products) before conversion. A layer whose natural op
has no standard ONNX form (an FFT, a data-dependent triangular solve) checks ``is_exporting()``
in its hooks and takes an export-friendly form instead (a DFT as matmuls, a loop of
convolutions). That keeps the exporter layer-agnostic: adding such a layer never means
editing ``tfinv.export``.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

_state = threading.local()


def is_exporting() -> bool:
    """True while `exporting()` is active in this thread."""
    return getattr(_state, "depth", 0) > 0


@contextlib.contextmanager
def exporting() -> Iterator[None]:
    """Marks graphs traced inside as destined for ONNX export."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1
