"""Whether the current computation is a training step.

`InvertibleLayer` methods (``forward_and_log_det``) take no ``training`` argument, and models call
them outside Keras's ``Layer.__call__``. Keras 3 keeps the training flag of the outermost call
(``model(x, training=True)`` inside ``fit``'s train step) in a thread-local call context; layers
whose computation differs in training (a stochastic log-det estimator, a spectral-norm update)
read it here. No active call, or ``training`` unset: not training (the deterministic form).
"""

from __future__ import annotations

from keras.src.backend.common import global_state

__all__ = ["in_training"]


def in_training() -> bool:
    """True inside a Keras call made with ``training=True`` (e.g. ``fit``'s train step)."""
    context = global_state.get_global_attribute("current_call_ctx")
    return bool(context is not None and context.training)
