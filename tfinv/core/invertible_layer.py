"""`InvertibleLayer`: a Keras 3 layer that is also a TensorFlow Probability bijector.

Direction convention (one, everywhere): ``forward`` is the network direction, data ``x`` to
latent/features ``z``; ``inverse`` is ``z`` to ``x`` (sampling, for a flow).
``forward_log_det_jacobian(x)`` is ``log|det dz/dx|`` with the batch shape.

A subclass writes only math and configuration:

* ``event_ndims`` (class attribute): 1 for vectors, 3 for images ``(H, W, C)``; a layer that
  changes the rank (`Patchify`: image -> patches) also sets ``output_event_ndims``, the rank of
  one event of its output;
* ``build(input_shape)``: weights (the base class has already recorded the event shape, so
  ``self.input_event_shape`` is available inside ``build``);
* ``_forward_and_log_det(x) -> (z, log_det)`` and ``_inverse_and_log_det(z) -> (x, log_det)``,
  where the inverse log-det is ``log|det dx/dz|`` (so it equals ``-fldj(x)``) and both have the
  batch shape ``x.shape[:-event_ndims]`` (``z.shape[:-output_event_ndims]``);
* ``get_config``; and, if the event shape changes, ``compute_output_shape`` and
  ``compute_input_shape``.

The base class does the wiring: input checks, Keras ``call`` (= forward), TFP's ``_forward``,
``_inverse`` and log-det hooks, event-shape hooks, and the data-dependent ``initialize`` step.

Conditioning: the public methods take an optional ``context`` (``forward_and_log_det(x, context)``).
A layer that uses it sets ``self.context_shape`` (the shape of one context, no batch axis) in
``__init__`` and writes its hooks as ``_forward_and_log_det(x, context=None)``; the base class
checks the context (present, shape ``(batch,) + context_shape``) and passes it on. A layer whose
``context_shape`` is ``None`` ignores any context and its hooks keep the one-argument form, so
containers can hand the same context to every step.

Why the unusual construction (measured, see shared/STACK.md): with ``Bijector`` first in the bases
and Keras's ``__call__``/variable properties restored explicitly, the object works both in Keras
(functional and subclassed models, ``fit``, XLA, ``.keras`` files) and in TFP (``Chain``,
``Invert``, ``TransformedDistribution``). TFP's result cache is disabled: it returns stale
results after ``variable.assign`` and breaks ``fit`` on auto-built subclassed models.
TFP finds variables by walking modules for ``tf.Variable``s, which Keras 3 weights are not: every
layer carries a live view of its weights' underlying ``tf.Variable``s
(`tfinv.core.tfp_variables`), so ``Chain``/``Invert``/``TransformedDistribution`` over tfinv
layers list every weight in ``trainable_variables`` (Keras's own ``layer.trainable_variables``
still returns Keras variables).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from keras.src import backend as keras_backend
from tensorflow_probability.python.internal import cache_util

from tfinv.core.dtype import autocast_scope, cast_input, propagate_dtype_policy
from tfinv.core.tfp_variables import expose_variables_to_tfp

tfb = tfp.bijectors

__all__ = ["InvertibleLayer", "batch_log_det", "propagate_validate_args"]


class _RecomputingCache(cache_util.BijectorCache):
    """A `BijectorCache` that never remembers: every lookup recomputes."""

    def _lookup(self, input, forward_name, inverse_name, **kwargs):  # noqa: A002
        return self._invoke(input, forward_name, kwargs, {})

    def _attributes(self, input, fn_name, **kwargs):  # noqa: A002
        return {}


def propagate_validate_args(root: Any) -> None:
    """Turns ``validate_args`` on in every `InvertibleLayer` nested in ``root`` (a container or
    a model); layers that already validate are left as they are."""
    for layer in root._flatten_layers(include_self=False):
        if isinstance(layer, InvertibleLayer):
            layer._validate_args = True


def _log_det_dtype_for(dtype: tf.DType) -> tf.DType:
    """Log-det dtype returned through the TFP API for inputs of ``dtype``: never half precision."""
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


def batch_log_det(value: tf.Tensor | float, x: tf.Tensor, event_ndims: int) -> tf.Tensor:
    """Broadcasts a log-det (scalar or per-example) to the batch shape ``x.shape[:-event_ndims]``,
    in ``x``'s dtype (float32 for half-precision ``x``: log-dets are never kept in half)."""
    batch_shape = tf.shape(x)[: tf.rank(x) - event_ndims]
    return tf.broadcast_to(tf.cast(value, _log_det_dtype_for(x.dtype)), batch_shape)


class InvertibleLayer(tfb.Bijector, keras.layers.Layer):
    """Base class of every tfinv layer: a Keras layer (``call`` = forward) and a TFP bijector.

    Dtype policies (`tfinv.core.dtype`): ``dtype`` reaches the sub-layers a layer creates;
    inputs of another float dtype are cast to the compute dtype; the public methods compute in
    the compute dtype (weights autocast as in ``__call__``) and return log-dets in the variable
    dtype (float32 under ``mixed_float16``/``mixed_bfloat16``). Through the TFP API
    (``forward``, ``inverse``, ``Chain``...) a layer is dtype-preserving: outputs come back in
    the input's dtype, so a mixed-precision layer composes with float32 TFP distributions.

    Args:
        validate_args: if True, every call also asserts that its input is finite and inside
            the layer's domain (e.g. `LogitPreprocess`: ``[0, L]``); a violation raises
            ``tf.errors.InvalidArgumentError`` naming the layer, the direction and the expected
            range, eagerly and in ``tf.function`` graphs (XLA drops assertions: a
            ``jit_compile=True`` call is not checked). A container passes it on to the layers
            it holds. Off by default (it costs a reduction per call): out-of-domain inputs then
            give NaN (or Inf) silently.
        name: layer name (Keras and TFP share it).
        **kwargs: other Keras ``Layer`` arguments (``dtype``, ``trainable``).
    """

    #: Number of trailing axes that form one event (1 vectors, 3 images). Declared once per class.
    event_ndims: int = 1
    #: Event rank of the output (the inverse's input) if it differs; ``None``: ``event_ndims``.
    output_event_ndims: int | None = None
    #: True for layers whose math half precision lacks or spoils (FFTs, solvers, SVD on data):
    #: under a mixed policy they compute in the variable dtype (float32) and cast the output to
    #: the compute dtype.
    full_precision: bool = False

    #: True for layers measured faster under XLA than in graph mode on a CPU at small sizes, with
    #: compiles of seconds (the dense vector layers): a `FlowModel` made only of such layers
    #: trains and infers under XLA on a CPU-only machine by default
    #: (`FlowModel.cpu_xla_training_max_dims`).
    prefers_xla_on_cpu: bool = False

    #: Shape of one context (no batch axis) for a conditional layer; ``None``: context is ignored.
    context_shape: tuple[int, ...] | None = None

    _cache = _RecomputingCache()

    def __init_subclass__(cls, **kwargs: Any):
        # Every ``build`` records the event shape before the subclass's own code runs, so no
        # subclass has to (recording twice along a ``super().build`` chain is harmless).
        super().__init_subclass__(**kwargs)
        own_build = cls.__dict__.get("build")
        if own_build is not None and not getattr(own_build, "_records_event_shape", False):

            @functools.wraps(own_build)
            def build(self, input_shape, *args, **kw):
                self._record_event_shape(input_shape)
                return own_build(self, input_shape, *args, **kw)

            build._records_event_shape = True
            cls.build = build
        propagate_dtype_policy(cls)

    # Keras must own calling and variable tracking (TFP's versions come first in the MRO).
    __call__ = keras.layers.Layer.__call__
    variables = keras.layers.Layer.variables
    trainable_variables = keras.layers.Layer.trainable_variables
    non_trainable_variables = keras.layers.Layer.non_trainable_variables

    def __init__(self, validate_args: bool = False, name: str | None = None, **kwargs: Any):
        keras.layers.Layer.__init__(self, name=name, **kwargs)
        tfb.Bijector.__init__(
            self,
            forward_min_event_ndims=self.event_ndims,
            inverse_min_event_ndims=self._event_ndims_of("inverse"),
            validate_args=validate_args,
            name=self.name,
        )
        self._input_event_shape: tuple[int, ...] | None = None
        self._built_input_shape: tuple[int | None, ...] | None = None
        expose_variables_to_tfp(self)

    # ``name`` is set by both parents' constructors; one attribute serves both.
    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = value

    # Layers are compared and hashed by identity (TFP would compare constructor parameters).
    __hash__ = object.__hash__

    def __eq__(self, other: object) -> bool:
        return self is other

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} event_ndims={self.event_ndims}>"

    # ------------------------------------------------------------------ shapes
    def build(self, input_shape: Sequence[int | None]) -> None:
        """Records the event shape; subclasses create weights and then call ``super().build``."""
        self._record_event_shape(input_shape)
        if self.validate_args:
            propagate_validate_args(self)
        super().build(input_shape)

    build._records_event_shape = True

    def _record_event_shape(self, input_shape: Sequence[int | None]) -> None:
        shape = tuple(tf.TensorShape(input_shape).as_list())
        if len(shape) < self.event_ndims + 1:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' expects inputs of rank >= "
                f"{self.event_ndims + 1} (batch + event of rank {self.event_ndims}), "
                f"got shape {shape}"
            )
        self._input_event_shape = shape[len(shape) - self.event_ndims :]
        self._built_input_shape = shape

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple:
        """Shape of ``forward(x)`` for an ``x`` of ``input_shape`` (identity unless overridden)."""
        return tuple(input_shape)

    def compute_input_shape(self, output_shape: Sequence[int | None]) -> tuple:
        """Shape of ``inverse(z)`` for a ``z`` of ``output_shape`` (identity unless overridden)."""
        return tuple(output_shape)

    @property
    def input_event_shape(self) -> tuple[int, ...] | None:
        """Event shape seen at build time (``None`` before ``build``)."""
        return self._input_event_shape

    @property
    def built_input_shape(self) -> tuple[int | None, ...] | None:
        """Full input shape (batch first) seen at build time (``None`` before ``build``)."""
        return self._built_input_shape

    @property
    def output_event_shape(self) -> tuple[int, ...] | None:
        if self._input_event_shape is None:
            return None
        return tuple(self.compute_output_shape((1,) + self._input_event_shape)[1:])

    # ------------------------------------------------------------------ checks
    def _event_ndims_of(self, direction: str) -> int:
        """Event rank of the input of ``direction`` (``"forward"``: x, ``"inverse"``: z)."""
        if direction != "forward" and self.output_event_ndims is not None:
            return int(self.output_event_ndims)
        return int(self.event_ndims)

    def _check(self, x: Any, expected_event_shape: tuple | None, direction: str) -> tf.Tensor:
        """Converts and validates an input; builds the layer eagerly on first use."""
        x = cast_input(x, self.compute_dtype)
        dtype = tf.as_dtype(x.dtype)
        if not dtype.is_floating:
            raise TypeError(
                f"{type(self).__name__} '{self.name}' ({direction}) expects a floating-point "
                f"tensor, got dtype {dtype.name}"
            )
        shape = tuple(x.shape)
        ndims = self._event_ndims_of(direction)
        if len(shape) < ndims + 1:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' ({direction}) expects inputs of rank >= "
                f"{ndims + 1} (batch + event of rank {ndims}), got shape {shape}"
            )
        if not self.built:
            if direction != "forward":
                raise ValueError(
                    f"{type(self).__name__} '{self.name}' is not built: call it forward once "
                    f"(or build(input_shape)) before using the inverse"
                )
            self.build(shape)
            expected_event_shape = self._input_event_shape
        event = shape[len(shape) - ndims :]
        if expected_event_shape is not None and any(
            e is not None and g is not None and e != g for e, g in zip(expected_event_shape, event)
        ):
            raise ValueError(
                f"{type(self).__name__} '{self.name}' ({direction}) expects event shape "
                f"{tuple(expected_event_shape)}, got {tuple(event)} (input shape {shape})"
            )
        if self.validate_args:
            x = self._validate(x, direction)
        return x

    def _validate(self, x: tf.Tensor, direction: str) -> tf.Tensor:
        """``x`` with the ``validate_args`` assertions attached: finite, and in the domain."""
        x = tf.debugging.assert_all_finite(
            x, f"{type(self).__name__} '{self.name}' ({direction}) got NaN or Inf input"
        )
        checks = [c for c in self._domain_assertions(x, direction) if c is not None]
        if checks:  # graph mode; eagerly the assertions have already run (and raised)
            with tf.control_dependencies(checks):
                x = tf.identity(x)
        return x

    def _domain_assertions(self, x: tf.Tensor, direction: str) -> list:
        """Assertions on the input of ``direction`` beyond finiteness (none by default);
        layers with a bounded domain return `_assert_in_range` here."""
        del x, direction
        return []

    def _assert_in_range(self, x: tf.Tensor, low: float, high: float, direction: str) -> list:
        """Asserts ``low <= x <= high`` element-wise (``InvalidArgumentError`` naming the layer)."""
        what = "x" if direction == "forward" else "z"
        message = (f"{type(self).__name__} '{self.name}' ({direction}) expects {what} in "
                   f"[{low:g}, {high:g}]")
        return [
            tf.debugging.assert_greater_equal(x, tf.cast(low, x.dtype), message=message),
            tf.debugging.assert_less_equal(x, tf.cast(high, x.dtype), message=message),
        ]

    @property
    def is_conditional(self) -> bool:
        """True if the layer uses a context (``context_shape`` is set)."""
        return self.context_shape is not None

    def _check_context(self, context: Any, x: tf.Tensor, direction: str) -> tf.Tensor | None:
        """Validates the context of a conditional layer (``None`` for an unconditional one)."""
        if self.context_shape is None:
            return None
        expected = tuple(self.context_shape)
        where = f"{type(self).__name__} '{self.name}' ({direction})"
        if context is None:
            raise ValueError(
                f"{where} is conditional: pass context of shape (batch, "
                f"{', '.join(map(str, expected))})"
            )
        if not tf.is_tensor(context) and not isinstance(context, keras.KerasTensor):
            context = tf.convert_to_tensor(context, dtype=x.dtype)
        elif context.dtype != x.dtype:
            context = tf.cast(context, x.dtype)
        shape = tuple(context.shape)
        if len(shape) != len(expected) + 1 or any(
            g is not None and g != e for g, e in zip(shape[1:], expected)
        ):
            raise ValueError(
                f"{where} expects context of shape (batch, {', '.join(map(str, expected))}), "
                f"got {shape}"
            )
        if shape[0] is not None and x.shape[0] is not None and shape[0] != x.shape[0]:
            raise ValueError(f"{where}: context batch {shape[0]} differs from the input batch {x.shape[0]}")
        return context

    def _call_hook(self, hook, value, context):
        if self.context_shape is None:
            return hook(value)
        return hook(value, context=context)

    # ------------------------------------------------------------------ public fused API
    @property
    def log_det_dtype(self) -> tf.DType:
        """Dtype of the returned log-dets: the variable dtype (float32 under mixed precision)."""
        return tf.as_dtype(self.variable_dtype)

    def forward_and_log_det(self, x: tf.Tensor, context: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns ``(z, log|det dz/dx|)``; the log-det has the batch shape.

        ``context`` conditions a conditional layer (``context_shape`` set); others ignore it.
        An empty batch (a batch axis statically 0) gives empty results of the right shapes
        without running the layer: some ops do not (TF 2.21's oneDNN ``conv2d`` returns its
        input's spatial shape for an empty batch).
        """
        x = self._check(x, self._input_event_shape, "forward")
        context = self._check_context(context, x, "forward")
        if self._is_empty_batch(x, "forward"):
            return self._empty_result(x, self.compute_output_shape, "forward")
        with tf.name_scope(self.name), self._compute_scope():  # exported nodes name their layer
            z, log_det = self._call_hook(self._forward_and_log_det, self._to_working_dtype(x),
                                         self._to_working_dtype(context))
        return tf.cast(z, x.dtype), tf.cast(log_det, self.log_det_dtype)

    def inverse_and_log_det(self, z: tf.Tensor, context: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns ``(x, log|det dx/dz|)``; the log-det has the batch shape (empty batches as in
        `forward_and_log_det`)."""
        z = self._check(z, self.output_event_shape, "inverse")
        context = self._check_context(context, z, "inverse")
        if self._is_empty_batch(z, "inverse"):
            return self._empty_result(z, self.compute_input_shape, "inverse")
        with tf.name_scope(self.name), self._compute_scope():
            x, log_det = self._call_hook(self._inverse_and_log_det, self._to_working_dtype(z),
                                         self._to_working_dtype(context))
        return tf.cast(x, z.dtype), tf.cast(log_det, self.log_det_dtype)

    def _to_working_dtype(self, x: tf.Tensor | None) -> tf.Tensor | None:
        """``x`` in the dtype the hooks compute in (see ``full_precision``)."""
        if x is not None and self.full_precision and x.dtype != self.log_det_dtype:
            return tf.cast(x, self.log_det_dtype)
        return x

    def _compute_scope(self):
        """Autocast for the hooks: weights as the compute dtype, or as the variable dtype for a
        ``full_precision`` layer."""
        return self.variable_precision() if self.full_precision else autocast_scope(self)

    def variable_precision(self):
        """Context in which weights read at their variable dtype, not autocast to the compute
        dtype: for parameter-only math (inverses and factorisations of weight matrices) that
        half precision lacks or would spoil. Cast its results to the input's dtype."""
        return keras_backend.AutocastScope(self.variable_dtype)

    def _is_empty_batch(self, x, direction: str) -> bool:
        batch_shape = tuple(x.shape)[: len(x.shape) - self._event_ndims_of(direction)]
        return 0 in batch_shape

    def _empty_result(self, x, shape_map, direction: str) -> tuple[tf.Tensor, tf.Tensor]:
        shape = tuple(x.shape)
        batch_shape = shape[: len(shape) - self._event_ndims_of(direction)]
        output_shape = tuple(shape_map(shape))
        if any(s is None for s in output_shape):
            output_shape = tuple(0 if s is None else s for s in output_shape)  # 0 elements either way
        return tf.zeros(output_shape, x.dtype), tf.zeros(batch_shape, self.log_det_dtype)

    def initialize(self, x: tf.Tensor, context: tf.Tensor | None = None) -> tf.Tensor:
        """Data-dependent initialisation step; returns ``forward(x)`` so models can chain it.

        The default does no initialisation; layers such as ``ActNorm`` override
        ``_initialize``. Call it explicitly (``FlowModel.initialize(batch)``) before training.

        Raises:
            ValueError: on an empty batch (there are no statistics to initialise from).
        """
        x = self._check(x, self._input_event_shape, "forward")
        context = self._check_context(context, x, "forward")
        if self._is_empty_batch(x, "forward"):
            raise ValueError(
                f"{type(self).__name__} '{self.name}' cannot initialise on an empty batch "
                f"(shape {tuple(x.shape)}); pass at least one example"
            )
        with self._compute_scope():
            self._call_hook(self._initialize, self._to_working_dtype(x), self._to_working_dtype(context))
        return self.forward_and_log_det(x, context)[0]

    def _initialize(self, x: tf.Tensor, context: tf.Tensor | None = None) -> None:
        del x, context

    # ------------------------------------------------------------------ math hooks
    def _forward_and_log_det(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement _forward_and_log_det")

    def _inverse_and_log_det(self, z: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement _inverse_and_log_det")

    # ------------------------------------------------------------------ Keras
    def call(self, x: tf.Tensor, context: tf.Tensor | None = None) -> tf.Tensor:
        return self.forward_and_log_det(x, context)[0]

    def get_config(self) -> dict:
        config = super().get_config()
        config["validate_args"] = self.validate_args
        return config

    # ------------------------------------------------------------------ TFP wiring
    # TFP passes conditioning keyword arguments through: ``layer.forward(x, context=c)``.
    # Dtype-preserving for TFP: results in the input's dtype (log-dets at least float32).
    def _forward(self, x, context=None):
        return tf.cast(self.forward_and_log_det(x, context)[0], x.dtype)

    def _inverse(self, y, context=None):
        return tf.cast(self.inverse_and_log_det(y, context)[0], y.dtype)

    def _forward_log_det_jacobian(self, x, context=None):
        return tf.cast(self.forward_and_log_det(x, context)[1], _log_det_dtype_for(x.dtype))

    def _inverse_log_det_jacobian(self, y, context=None):
        return tf.cast(self.inverse_and_log_det(y, context)[1], _log_det_dtype_for(y.dtype))

    def _event_shape_map(self, shape, fn) -> tf.TensorShape:
        shape = tf.TensorShape(shape)
        if shape.rank is None:
            return shape
        return tf.TensorShape(fn((1,) + tuple(shape.as_list()))[1:])

    def _forward_event_shape(self, input_shape):
        return self._event_shape_map(input_shape, self.compute_output_shape)

    def _inverse_event_shape(self, output_shape):
        return self._event_shape_map(output_shape, self.compute_input_shape)

    def _static_event_shape_tensor(self, shape_tensor, fn):
        static = tf.get_static_value(shape_tensor)
        if static is None:
            raise ValueError(f"{type(self).__name__} '{self.name}' needs a static event shape")
        return tf.constant(np.asarray(fn((1,) + tuple(int(s) for s in static))[1:], np.int32))

    def _forward_event_shape_tensor(self, input_shape):
        return self._static_event_shape_tensor(input_shape, self.compute_output_shape)

    def _inverse_event_shape_tensor(self, output_shape):
        return self._static_event_shape_tensor(output_shape, self.compute_input_shape)
