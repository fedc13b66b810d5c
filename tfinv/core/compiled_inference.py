"""Compiled inference for flow models: public methods run as cached ``tf.function``s (XLA when
the model compiles), eager execution on request.

A method decorated with `compiled` runs, when called eagerly, as a ``tf.function`` traced once
per *input signature*: tensor arguments get a ``TensorSpec`` with a free batch axis, the scalar
arguments named in ``scalars`` (e.g. ``n``, ``temperature``, ``seed`` of sampling) become scalar
tensors, and ``None`` / strings / booleans are part of the cache key. So a new batch size, ``n``,
seed or temperature never retraces (XLA still compiles its program once per new batch size, ~1 s
for a small Glow on CPU; the same size again reuses it). The first compiled call of a model tries XLA
(``jit_compile=True``); if XLA rejects an op of the model, that call and all later ones use
plain graph functions, and a one-line notice is logged (``tfinv`` logger).

A method decorated with ``compiled(graph_only=True)`` (sampling: it draws noise with TF's random
kernels, whose streams XLA does not reproduce) runs as one graph function whose own ops never go
through XLA; the compiled methods it calls become *nested* functions inside it, under XLA when the
model's inference is. One Python call then runs the draw and the XLA program together.

Eager execution (debugging, stepping into layers) is kept: ``model.run_eagerly = True`` (or
``compile(run_eagerly=True)``), ``tf.config.run_functions_eagerly(True)``, or
``model.inference_mode = "eager"``. Inside a graph (a train step, an export trace, a user's
``tf.function``) the methods run inline, uncompiled. ``model.inference_mode`` is ``"auto"``
(XLA if it compiles and the model does not ``validate_args``, the default; on a machine without
GPU/TPU the data direction, ``forward``/``log_prob``/``bits_per_dim``, uses XLA only for models
that opt in, `_cpu_xla_inference`, and runs in graph mode otherwise), ``"xla"``, ``"graph"`` or
``"eager"``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from typing import Any, Callable

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import record  # whether a gradient tape is recording

from tfinv.core.training_mode import in_training

__all__ = ["INFERENCE_MODES", "CompiledInference", "compiled"]

INFERENCE_MODES = ("auto", "xla", "graph", "eager")
_LOG = logging.getLogger("tfinv")
# Errors XLA raises when a graph holds an op it cannot compile (e.g. slogdet, lu).
_XLA_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.InternalError)


def compiled(method: Callable | None = None, *, scalars: dict[str, Any] | None = None, xla_on_cpu: bool = True,
             graph_only: bool = False):
    """Runs a `CompiledInference` method as a cached ``tf.function`` when called eagerly.

    ``scalars`` maps argument names to the dtype their Python scalars become (``"float"``: the
    model's compute dtype), so their values do not retrace. ``xla_on_cpu=False``: under
    ``inference_mode="auto"`` on a machine without GPU/TPU the method runs under XLA only if the
    model opts in (`CompiledInference._cpu_xla_inference`), else as a graph function (the data
    direction: XLA measured faster for small Glows and slower for residual flows and i-DenseNets
    on CPU, ``benchmarks/figures/inference_modes.json``). ``graph_only=True``: the method's own
    ops run as a graph function, never under XLA, and the compiled methods it calls run as
    nested functions, under XLA when the model's inference uses it (see the module doc)."""
    if method is None:
        return functools.partial(compiled, scalars=scalars, xla_on_cpu=xla_on_cpu, graph_only=graph_only)
    signature = inspect.signature(method)
    scalars = dict(scalars or {})

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if not self._compiles_inference():
            if self.__dict__.get("_nested_xla") and tf.inside_function():
                # called while a graph-only method traces: a nested XLA function
                bound = signature.bind(self, *args, **kwargs)
                bound.apply_defaults()
                return self._run_nested(method, bound.arguments, scalars)
            return method(self, *args, **kwargs)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        return self._run_compiled(method, bound.arguments, scalars, xla_on_cpu, graph_only)

    wrapper.eager = method
    return wrapper


@functools.lru_cache(maxsize=1)
def _has_accelerator() -> bool:
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


class CompiledInference:
    """Mixin of `tfinv.core.FlowModel`: the machinery behind `compiled` (see the module doc)."""

    @property
    def inference_mode(self) -> str:
        """``"auto"`` (XLA when every layer compiles, else graph), ``"xla"``, ``"graph"`` or ``"eager"``."""
        return self.__dict__.get("_inference_mode", "auto")

    @inference_mode.setter
    def inference_mode(self, mode: str) -> None:
        if mode not in INFERENCE_MODES:
            raise ValueError(f"inference_mode must be one of {INFERENCE_MODES}, got {mode!r}")
        object.__setattr__(self, "_inference_mode", mode)

    @property
    def inference_uses_xla(self) -> bool | None:
        """Whether compiled inference runs under XLA (``None`` until the first compiled call)."""
        if self.inference_mode in ("xla", "graph"):
            return self.inference_mode == "xla"
        return self.__dict__.get("_xla_ok")

    def _cpu_xla_inference(self) -> bool:
        """Whether ``"auto"`` inference uses XLA for ``xla_on_cpu=False`` methods on a CPU-only
        machine (models override it: `tfinv.core.FlowModel`)."""
        return False

    @contextlib.contextmanager
    def _nesting(self, xla: bool):
        """While a graph-only method traces, compiled methods it calls become nested XLA
        functions (``xla=True``) or run inline (``False``)."""
        saved = self.__dict__.get("_nested_xla", False)
        object.__setattr__(self, "_nested_xla", xla)
        try:
            yield
        finally:
            object.__setattr__(self, "_nested_xla", saved)

    def _compiles_inference(self) -> bool:
        return (
            tf.executing_eagerly()
            and self.inference_mode != "eager"
            and not getattr(self, "run_eagerly", False)
            and not tf.config.functions_run_eagerly()
        )

    def _inference_cache(self) -> dict:
        cache = self.__dict__.get("_inference_functions")
        if cache is None:
            cache = {}
            object.__setattr__(self, "_inference_functions", cache)  # not a tracked attribute
        return cache

    def _as_input(self, name: str, value, scalars: dict):
        """``("tensor", tensor, spec)`` or ``("static", value, value)`` for one argument."""
        if name in scalars and value is not None and not tf.is_tensor(value):
            dtype = self.compute_dtype if scalars[name] == "float" else scalars[name]
            tensor = tf.constant(value, dtype=dtype)
            return "tensor", tensor, tf.TensorSpec([], tensor.dtype)
        if value is None or isinstance(value, (bool, str, int, float)):
            return "static", value, value
        if not tf.is_tensor(value):
            array = np.asarray(value)
            if array.dtype.kind != "f":
                return "static", None, None  # unusual input: the eager method gives the error
            value = tf.convert_to_tensor(array, dtype=self.compute_dtype)
        if value.shape.rank is None:
            return "static", None, None
        shape = value.shape if value.shape.rank == 0 else [None] + value.shape[1:].as_list()
        return "tensor", value, tf.TensorSpec(shape, value.dtype)

    def _bind(self, method: Callable, arguments: dict, scalars: dict):
        """A call's arguments (``self`` skipped) as ``(key, names, tensors, statics)``: the cache
        key (method, Keras's training flag, each argument's spec or value), the tensor arguments
        in order, and the others by name. ``None`` if an argument cannot be a tensor (the eager
        method then runs and gives its error)."""
        # Keras's training flag (``model(x, training=True)``) is read by layers at trace time
        # (stochastic estimators, relative gradients): it is part of the cache key.
        names, tensors, key = [], [], [method.__name__, ("training", in_training())]
        statics = {}
        for name, value in list(arguments.items())[1:]:
            kind, converted, spec = self._as_input(name, value, scalars)
            if kind == "static" and converted is None and value is not None:
                return None
            if kind == "tensor":
                names.append(name)
                tensors.append(converted)
                key.append((name, tuple(spec.shape.as_list()), spec.dtype.name))
            else:
                statics[name] = value
                key.append((name, repr(value)))
        return tuple(key), names, tensors, statics

    def _runner(self, method: Callable, names: list, statics: dict, nest_xla: bool) -> Callable:
        """The traced body: ``method`` on the tensors (in ``names``' order) and the statics. While
        it traces, the compiled methods it calls become nested XLA functions (``nest_xla``, a
        graph-only method's) or run inline."""
        def run(*values):
            with self._nesting(nest_xla):
                return method(self, **statics, **dict(zip(names, values)))
        return run

    @staticmethod
    def _specs(tensors: list) -> list:
        """Input signature of ``tensors``: a free batch axis (scalars stay scalars)."""
        return [tf.TensorSpec((None,) + tuple(t.shape[1:]) if t.shape.rank else (), t.dtype) for t in tensors]

    def _run_compiled(self, method: Callable, arguments: dict, scalars: dict, xla_on_cpu: bool = True,
                      graph_only: bool = False):
        def eager():
            return method(self, **dict(list(arguments.items())[1:]))

        bound = self._bind(method, arguments, scalars)
        if bound is None:
            return eager()
        key, names, tensors, statics = bound
        batches = {int(t.shape[0]) for t in tensors if t.shape.rank and t.shape[0] is not None}
        if len(batches) > 1 or 0 in batches:
            # batched arguments that disagree: the compiled signature (free batch axis) cannot
            # see it, the eager method names it. An empty batch runs eagerly as well: there is
            # nothing to compute, and TF's graph optimiser (grappler's fused convolutions)
            # rejects some zero-size convolutions that eager execution and XLA accept.
            return eager()
        mode = self.inference_mode
        # XLA drops assertions: a model that validates its inputs runs as a plain tf.function
        # under "auto", so its checks still raise.
        # Under a gradient tape "auto" avoids XLA too: TF cannot differentiate an XLA cluster
        # holding a while loop (fixed-point inverses, wavefront solves) from outside it.
        xla = mode == "xla" or (mode == "auto" and self.__dict__.get("_xla_ok", True)
                                and not getattr(self, "validate_args", False)
                                and not record.could_possibly_record()
                                and (xla_on_cpu or _has_accelerator() or self._cpu_xla_inference()))
        cache = self._inference_cache()
        fn = cache.get((key, xla))
        if fn is None:
            specs = self._specs(tensors)
            # a graph-only method nests XLA functions; any other clears the flag, so the
            # compiled methods it calls run inline
            run = self._runner(method, names, statics, nest_xla=xla and graph_only)
            fn = tf.function(run, input_signature=specs, jit_compile=xla and not graph_only, autograph=False)
            try:
                if mode == "auto" and xla:
                    graph_run = self._runner(method, names, statics, nest_xla=False)
                    result, fn, xla = self._first_xla_call(fn, graph_run, specs, tensors)
                else:
                    result = fn(*tensors)
            except (ValueError, TypeError):
                # a bad input fails while tracing (with the batch axis shown as None): the eager
                # method raises the same error with the caller's shapes
                return eager()
            # the one trace itself: calling a ConcreteFunction skips tf.function's signature
            # matching, ~0.6 ms of Python per call (a third of a small Glow's sample(64))
            self._inference_cache()[(key, xla)] = fn.get_concrete_function(*specs)
            return result
        return fn(*tensors)

    def _first_xla_call(self, fn, run, specs, tensors):
        """Runs a new XLA function; if XLA rejects the graph, falls back to graph mode for good.
        Returns ``(result, function to cache, whether it is XLA)``."""
        try:
            result = fn(*tensors)
        except _XLA_ERRORS as error:
            graph_fn = tf.function(run, input_signature=specs, jit_compile=False, autograph=False)
            result = graph_fn(*tensors)  # a genuine error (bad input) raises here as well
            object.__setattr__(self, "_xla_ok", False)
            self._inference_cache().clear()
            reason = str(error).strip().splitlines()[0][:160]
            _LOG.warning("tfinv: %s '%s' does not compile with XLA (%s); inference runs as "
                         "tf.function without XLA", type(self).__name__, self.name, reason)
            return result, graph_fn, False
        object.__setattr__(self, "_xla_ok", True)
        return result, fn, True

    def _run_nested(self, method: Callable, arguments: dict, scalars: dict):
        """Calls ``method`` as a cached XLA ``tf.function`` from inside another function's trace
        (a graph-only method's): the caller's graph holds one call of the compiled program."""
        bound = self._bind(method, arguments, scalars)
        if bound is None:
            return method(self, **dict(list(arguments.items())[1:]))
        key, names, tensors, statics = bound
        key = ("nested",) + key
        cache = self._inference_cache()
        fn = cache.get(key)
        if fn is None:
            fn = tf.function(self._runner(method, names, statics, nest_xla=False),
                             input_signature=self._specs(tensors), jit_compile=True, autograph=False)
            cache[key] = fn
        return fn(*tensors)


def train_step_compiles(model) -> tuple[bool, str]:
    """Whether XLA accepts ``model``'s loss and its gradient: ``(ok, first line of the error)``.

    The graph (two random examples, gradient for the trainable variables) is only lowered to
    HLO, which is where XLA rejects an op; the expensive code generation is left to the real
    train step. Nothing is run or updated."""
    x = tf.random.stateless_uniform((2,) + tuple(model.data_shape), seed=[0, 0], dtype=model.compute_dtype)
    context_shape = getattr(model, "context_shape", None)
    context = None if context_shape is None else tf.zeros((2,) + tuple(context_shape), model.compute_dtype)

    @tf.function(jit_compile=True, autograph=False)
    def loss_and_grads(x, context):
        with tf.GradientTape() as tape:
            z, log_det = model.forward(x) if context is None else model.forward(x, context)
            loss = -tf.reduce_mean(model._base_log_prob(z, log_det))  # log-det dtype (float32 under mixed precision)
        return loss, tape.gradient(loss, model.trainable_variables)

    try:
        loss_and_grads.experimental_get_compiler_ir(x, context)(stage="hlo")
    except (ValueError, *_XLA_ERRORS) as error:
        return False, str(error).strip().splitlines()[0][:160]
    return True, ""
