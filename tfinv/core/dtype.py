"""Keras dtype policies in tfinv: one place for the rules every layer and model follows.

* **Sub-layers inherit the owner's policy.** A layer or model built with ``dtype=...`` creates
  its sub-layers (default conditioners, the steps of a block, the layers of a model) under that
  policy: `propagate_dtype_policy` runs a class's ``__init__`` (when ``dtype`` is given) and
  ``build`` with the owner's policy as Keras's default. A sub-layer given its own ``dtype`` (or a
  user-made conditioner) keeps it.
* **Compute in the compute dtype, accumulate log-dets in the variable dtype.** Inputs of another
  float dtype are cast to the compute dtype, as Keras's ``__call__`` does; weights read inside the
  public methods (``forward_and_log_det``...) are cast by Keras's autocast scope, also when the
  method bypasses ``__call__``; log-dets are returned in the variable dtype (float32 under
  ``mixed_float16``/``mixed_bfloat16``, float64 under ``float64``), so sums over many layers and
  pixels are not done in half precision.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Any, Iterator

import keras
import tensorflow as tf
from keras.src import backend as keras_backend

__all__ = ["default_dtype_policy", "propagate_dtype_policy", "autocast_scope", "cast_input"]


@contextlib.contextmanager
def default_dtype_policy(dtype: Any) -> Iterator[None]:
    """Makes ``dtype`` (a policy, its name or config) Keras's global policy inside the block."""
    if dtype is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(keras.dtype_policies.get(dtype))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _wrap_init(init):
    @functools.wraps(init)
    def wrapped(self, *args, **kwargs):
        with default_dtype_policy(kwargs.get("dtype")):
            init(self, *args, **kwargs)

    # Keras reads the constructor's signature (to record the config); keep the original one.
    wrapped.__signature__ = inspect.signature(init)
    wrapped._tfinv_dtype_wrapped = True
    return wrapped


def _wrap_build(build):
    @functools.wraps(build)
    def wrapped(self, *args, **kwargs):
        with default_dtype_policy(self.dtype_policy):
            return build(self, *args, **kwargs)

    wrapped._tfinv_dtype_wrapped = True
    return wrapped


def propagate_dtype_policy(cls: type) -> type:
    """Wraps ``cls.__init__`` and ``cls.build`` (those defined on ``cls`` itself) so that the
    sub-layers they create take the owner's dtype policy (see the module docstring)."""
    for name, wrap in (("__init__", _wrap_init), ("build", _wrap_build)):
        method = cls.__dict__.get(name)
        if method is not None and not getattr(method, "_tfinv_dtype_wrapped", False):
            setattr(cls, name, wrap(method))
    return cls


def autocast_scope(layer: Any):
    """Keras's autocast scope for ``layer`` (weights read as its compute dtype), entered by the
    public methods that bypass ``Layer.__call__``; mirrors the rule ``__call__`` applies."""
    compute = layer.compute_dtype
    current = keras_backend.get_autocast_scope()
    if current is not None:
        if not keras_backend.is_float_dtype(compute):
            return keras_backend.AutocastScope(None)
        if current.dtype != compute:
            return keras_backend.AutocastScope(compute)
        return contextlib.nullcontext()
    if compute != layer.variable_dtype:
        return keras_backend.AutocastScope(compute)
    return contextlib.nullcontext()


def cast_input(value: Any, dtype: Any) -> Any:
    """A floating tensor (or array) as ``dtype``, as Keras casts a layer's inputs; other dtypes and
    symbolic Keras tensors are returned unchanged (the caller rejects non-floating input)."""
    if isinstance(value, keras.KerasTensor):
        return value
    if not tf.is_tensor(value):
        return tf.convert_to_tensor(value, dtype=dtype)
    if value.dtype.is_floating and value.dtype != tf.as_dtype(dtype):
        return tf.cast(value, dtype)
    return value
