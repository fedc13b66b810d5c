"""Quiet TensorFlow start-up for the ``tfinv`` command.

TensorFlow's C++ start-up lines (the oneDNN notice, the CUDA stub, ``cpu_feature_guard``, absl's
"All log messages before absl::InitializeLog()") are written to file descriptor 2 while
``tensorflow`` is imported and its devices are listed; ``TF_CPP_MIN_LOG_LEVEL`` does not silence
the absl ones. When this process is the ``tfinv`` console command without ``--verbose``,
`import_tensorflow` captures fd 2 during that window, drops those known lines, and passes
anything else on (a real error is never hidden); ``TF_CPP_MIN_LOG_LEVEL=2`` keeps the runtime
quiet. Library users (``import tfinv`` from Python) are untouched. Imports only the standard
library: it runs before TensorFlow is imported (from `tfinv.cli.main`, first thing).
"""

from __future__ import annotations

import os
import sys
import tempfile

#: Substrings of the start-up lines dropped in quiet mode.
NOISE = (
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations are on",
    "cudart_stub.cc",
    "cuda_platform.cc",
    "cuda_executor.cc",
    "cpu_feature_guard.cc",
    "To enable the following instructions:",
    "Unable to register cu",
    "TF-TRT Warning",
    "computation_placer.cc",
    "failed call to cuInit",
)

#: The start-up lines held back in quiet mode (``tfinv --verbose`` shows them).
held_back: list[str] = []


def is_quiet_command(argv: list[str] | None = None) -> bool:
    """True for the ``tfinv`` console command run without ``--verbose`` before its command."""
    argv = list(sys.argv if argv is None else argv)
    if not argv or os.path.basename(argv[0]) != "tfinv":
        return False
    for token in argv[1:]:
        if token == "--verbose":
            return False
        if not token.startswith("-"):  # the command: options after it are the command's
            break
    return True


def import_tensorflow(quiet: bool) -> None:
    """Imports TensorFlow (and lists its devices); with ``quiet``, without the start-up noise."""
    if not quiet or "tensorflow" in sys.modules:
        import tensorflow  # noqa: F401

        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # device start-up logs its lines now, not later
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode(errors="replace")
    kept = []
    for line in text.splitlines(keepends=True):
        (held_back if any(marker in line for marker in NOISE) else kept).append(line)
    if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()
