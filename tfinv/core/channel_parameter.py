"""A positive per-channel (or scalar) parameter stored as its log, for element-wise layers.

`LearnableLeakyReLU` (negative slope) and `SLog` (``alpha``) train ``a = exp(log_a) > 0``, one
value per channel of the last axis or one scalar: `positive_initial_value` validates the
constructor argument and `add_log_parameter` creates the ``log_a`` weight in ``build``.
"""

from __future__ import annotations

import math

import keras


def positive_initial_value(layer_class: str, argument: str, value) -> float:
    """``float(value)``; raises ``ValueError`` unless it is ``> 0``."""
    value = float(value)
    if not value > 0:
        raise ValueError(f"{layer_class} needs {argument} > 0, got {value}")
    return value


def add_log_parameter(layer, name: str, initial_value: float, per_channel: bool, input_shape):
    """Adds the weight ``name`` to ``layer`` (whose event shape is recorded), initialised to
    ``log(initial_value)``: shape ``(C,)`` with ``per_channel``, else ``()``."""
    channels = layer.input_event_shape[-1]
    if per_channel and channels is None:
        raise ValueError(
            f"{type(layer).__name__} '{layer.name}' with per_channel=True needs a known channel "
            f"count, got input shape {tuple(input_shape)}"
        )
    return layer.add_weight(
        name=name,
        shape=(channels,) if per_channel else (),
        initializer=keras.initializers.Constant(math.log(initial_value)),
    )
