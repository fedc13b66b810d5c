"""Global random state and dtype policy: snapshot, restore, and a seeded scope.

Unseeded Keras initialisers draw their seed from Python's `random` module when the layer is
constructed, `tf.random` ops without a seed draw from TensorFlow's global seed, and
``keras.utils.set_random_seed`` changes all of them at once. A test (or a contract case) that
touches any of these would otherwise change what every later test sees; `preserved_state`
restores them, and `seeded` makes a block of code reproducible without leaking its seed.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Any, Iterator

import keras
import numpy as np
from tensorflow.python.eager import context as tf_context

__all__ = ["GlobalState", "preserved_state", "seeded"]


@dataclass
class GlobalState:
    """Everything a test can change that makes later random draws or dtypes differ."""

    python: Any
    numpy: Any
    tf_seed: Any
    tf_op_rng: Any
    keras_attributes: dict[str, Any]
    dtype_policy: Any

    _KERAS_KEYS = ("global_random_seed", "global_seed_generator")

    @classmethod
    def capture(cls) -> "GlobalState":
        from keras.src.backend.common import global_state

        ctx = tf_context.context()
        op_rng = getattr(ctx, "_rng", None)
        return cls(
            python=random.getstate(),
            numpy=np.random.get_state(),
            tf_seed=tf_context.global_seed(),
            tf_op_rng=op_rng.getstate() if op_rng is not None else None,
            keras_attributes={k: global_state.get_global_attribute(k) for k in cls._KERAS_KEYS},
            dtype_policy=keras.config.dtype_policy(),
        )

    def restore(self) -> None:
        from keras.src.backend.common import global_state

        random.setstate(self.python)
        np.random.set_state(self.numpy)
        ctx = tf_context.context()
        if tf_context.global_seed() != self.tf_seed or self.tf_op_rng is None:
            tf_context.set_global_seed(self.tf_seed)
        if self.tf_op_rng is not None:
            ctx._rng.setstate(self.tf_op_rng)  # the per-op seed sequence derived from the global seed
        for key, value in self.keras_attributes.items():
            global_state.set_global_attribute(key, value)
        keras.config.set_dtype_policy(self.dtype_policy)


@contextlib.contextmanager
def preserved_state() -> Iterator[GlobalState]:
    """Restores global RNG state (Python, NumPy, TF, Keras) and the Keras dtype policy on exit."""
    state = GlobalState.capture()
    try:
        yield state
    finally:
        state.restore()


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Runs the block under ``keras.utils.set_random_seed(seed)`` and restores the previous global
    random state afterwards, so the block is reproducible and the caller's draws are unchanged."""
    with preserved_state():
        keras.utils.set_random_seed(int(seed))
        yield
