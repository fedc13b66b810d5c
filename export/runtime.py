"""onnxruntime sessions for exported graphs (no TensorFlow: the lean ONNX server uses this)."""

from __future__ import annotations

from typing import Any

__all__ = ["inference_session"]


def inference_session(model: Any, threads: int | None = None):
    """An onnxruntime session on the CUDA provider when it loads, else the CPU provider.

    Args:
        model: a path or serialized ``ModelProto`` bytes.
        threads: intra-op threads (``None``: onnxruntime's default, one per core).

    Returns:
        ``(session, provider_in_use)``.
    """
    import onnxruntime as ort

    wanted = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    # On a machine without CUDA the CUDA provider fails to load and onnxruntime falls back to
    # the CPU provider, logging an error; the provider in use is reported instead.
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(model if isinstance(model, (bytes, str)) else str(model),
                                       sess_options=options, providers=wanted or None)
    finally:
        ort.set_default_logger_severity(2)
    return session, session.get_providers()[0]
