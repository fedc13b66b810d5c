"""`FlowModel`: a Keras model over an invertible layer and a base distribution (a normalizing flow).

``forward(x, context) -> (z, log|det dz/dx|)`` maps data to latents; ``inverse(z, context)``
maps latents to data, so ``inverse`` of base noise is sampling. The density is the change of
variables ``log p(x | c) = log p_Z(forward(x, c)) + log|det dz/dx|``.

``model.fit(dataset)`` needs no labels: the loss is the per-example negative log-likelihood,
averaged over the global batch (so ``tf.distribute`` reduces it correctly), and the
``bits_per_dim`` metric is reported beside it. A conditional model (``context_shape`` set)
trains on a dataset of ``(x, context)`` pairs.
"""

from __future__ import annotations

import logging
import math
import secrets
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfinv.core import distributions
from tfinv.core.compiled_inference import CompiledInference, _has_accelerator, compiled, train_step_compiles
from tfinv.core.distributions import BaseDistribution
from tfinv.core.dtype import cast_input, propagate_dtype_policy
from tfinv.core.invertible_layer import InvertibleLayer, _RecomputingCache, propagate_validate_args
from tfinv.core.tfp_variables import expose_variables_to_tfp
from tfinv.core.invertible_sequential import InvertibleSequential

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["FlowModel"]


def _serialize(layer) -> dict:
    """A sub-layer's config without its build config (the model builds it from the data shape)."""
    config = keras.saving.serialize_keras_object(layer)
    config.pop("build_config", None)
    return config


class _FlowBijector(tfb.Bijector):
    """TFP view of a `FlowModel` (data -> latent), used by ``as_distribution``; a conditional
    model's view holds one context (batched, or one context for every example)."""

    # TFP's result cache would return latents computed with the weights of an earlier step.
    _cache = _RecomputingCache()

    def __init__(self, model: "FlowModel", context: tf.Tensor | None = None):
        self._model = model
        self._context = context
        super().__init__(
            forward_min_event_ndims=len(model.data_shape),
            inverse_min_event_ndims=len(model.latent_shape),
            name=f"{model.name}_bijector",
        )
        # TFP's ``trainable_variables`` then lists the model's weights (see tfp_variables).
        expose_variables_to_tfp(self, model)

    def _context_for(self, value):
        if self._context is None or len(self._context.shape) > len(self._model.context_shape):
            return self._context
        batch = tf.shape(value)[:1]
        return tf.broadcast_to(self._context, tf.concat([batch, tf.shape(self._context)], 0))

    # Results in the base distribution's dtype (the model's variable dtype), so TFP's
    # TransformedDistribution works under mixed precision.
    def _forward(self, x):
        return tf.cast(self._model.forward(x, self._context_for(x))[0], self._model.log_det_dtype)

    def _inverse(self, z):
        return tf.cast(self._model.inverse(z, self._context_for(z)), self._model.log_det_dtype)

    def _forward_log_det_jacobian(self, x):
        return self._model.forward(x, self._context_for(x))[1]

    def _inverse_log_det_jacobian(self, z):
        return self._model.inverse_and_log_det(z, self._context_for(z))[1]

    def _forward_event_shape(self, shape):
        return tf.TensorShape(self._model.latent_shape)

    def _inverse_event_shape(self, shape):
        return tf.TensorShape(self._model.data_shape)

    def _forward_event_shape_tensor(self, shape):
        return tf.constant(self._model.latent_shape, tf.int32)

    def _inverse_event_shape_tensor(self, shape):
        return tf.constant(self._model.data_shape, tf.int32)


#: Event size up to which a flow made only of layers that prefer XLA on CPU (the dense vector
#: layers) uses XLA on a CPU-only machine by default: measured on 64 values,
#: ``benchmarks/speed.py --vector``.
CPU_XLA_MAX_DIMS = 256


def _unseeded_pair() -> tuple[int, int]:
    """The stateless seed of an unseeded draw: TF's ``(global seed, operation counter)`` when a
    global seed is set (the pair an eager ``tf.random.normal`` would use, so resetting the seed
    repeats the draws), else a random pair."""
    global_seed, operation_seed = tf.compat.v1.random.get_seed(None)
    if global_seed is None or operation_seed is None:
        return secrets.randbits(62), secrets.randbits(62)
    return int(global_seed), int(operation_seed)


def _check_sample_arguments(n, temperature, dtype) -> tuple[int, float]:
    """``(n, temperature)`` validated for `FlowModel.sample` (see its Raises)."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"sample needs n, the number of samples, as a positive int, got {n!r}")
    if n < 1:
        raise ValueError(f"sample needs n >= 1, got {n}")
    if isinstance(temperature, (bool, np.bool_)) or not isinstance(temperature, (int, float, np.number)):
        raise TypeError(f"sample needs temperature as a real number, got {temperature!r}")
    limit = float(tf.as_dtype(dtype).max)  # np.finfo rejects bfloat16
    if not (math.isfinite(float(temperature)) and 0 < float(temperature) <= limit):
        raise ValueError(f"sample needs a finite temperature > 0 (at most {limit:.3g} in {dtype}), got {temperature}")
    return int(n), float(temperature)


@keras.saving.register_keras_serializable(package="tfinv")
class FlowModel(CompiledInference, keras.Model):
    """A normalizing flow: an invertible layer (data -> latent) and a base distribution.

    ``forward``, ``inverse``, ``inverse_and_log_det``, ``log_prob``, ``bits_per_dim`` and
    ``sample`` run as compiled functions (traced once per input signature, XLA when the model
    compiles; see `tfinv.core.compiled_inference`); ``model.run_eagerly = True`` runs them eagerly.

    Args:
        layers: an `InvertibleLayer`, or a list of them applied in order in the forward
            direction (composed with `InvertibleSequential`).
        input_shape: shape of one data example, e.g. ``(8, 8, 1)``. The model is built eagerly
            from it (Keras's symbolic auto-build is avoided on purpose).
        base: base distribution of the latents: a `tfinv.core.distributions.BaseDistribution`,
            its serialised config, or a name (``"normal"`` — the default —, ``"diagonal"``,
            ``"mixture"``, ``"radial"``).
        context_shape: shape of one context (conditioning input) for a conditional flow; by
            default the context shape of the conditional layers (``None``: unconditional).
        validate_args: turn on every layer's input checks (finite, inside its domain:
            ``tf.errors.InvalidArgumentError`` naming the layer); off by default, when inputs
            outside a layer's domain give NaN silently.
        **kwargs: `keras.Model` arguments (``name``...).

    Call: ``model(x)`` (or ``model(x, context)``, ``model((x, context))``) returns
    ``(z, log_det)`` (the forward direction).

    Dtype policies: ``dtype=...`` (or the global policy) reaches every layer and the base;
    inputs of another float dtype are cast to the compute dtype on every entry point; latents
    and samples are in the compute dtype; log-dets, ``log_prob``, the base distribution and the
    loss are in the variable dtype (float32 under ``mixed_float16``/``mixed_bfloat16``, float64
    under ``float64``).
    """

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        propagate_dtype_policy(cls)

    def __init__(
        self,
        layers: InvertibleLayer | Sequence[InvertibleLayer | dict] | dict | None = None,
        input_shape: Sequence[int] | None = None,
        base: str | dict | BaseDistribution | None = None,
        context_shape: Sequence[int] | None = None,
        validate_args: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if input_shape is None:
            raise ValueError(f"{type(self).__name__} needs input_shape, the shape of one example")
        self.data_shape = tuple(int(s) for s in input_shape)
        self.flow = self._compose(layers)
        self.base = distributions.get(base)
        flow_context = self.flow.context_shape
        if context_shape is None:
            self.context_shape = None if flow_context is None else tuple(flow_context)
        else:
            self.context_shape = tuple(int(s) for s in context_shape)
            if flow_context is None:
                raise ValueError(
                    f"{type(self).__name__} '{self.name}' has context_shape={self.context_shape} but "
                    f"none of its layers uses a context (give the couplings context_shape)"
                )
            if tuple(flow_context) != self.context_shape:
                raise ValueError(
                    f"{type(self).__name__} '{self.name}' has context_shape={self.context_shape} but "
                    f"its layers expect context of shape {tuple(flow_context)}"
                )
        self.validate_args = bool(validate_args)
        self.bits_per_dim_tracker = keras.metrics.Mean(name="bits_per_dim")
        self.build()

    def _compose(self, layers) -> InvertibleLayer:
        if isinstance(layers, dict):
            layers = keras.saving.deserialize_keras_object(layers)
        if isinstance(layers, InvertibleLayer) and layers.event_ndims == len(self.data_shape):
            return layers
        if isinstance(layers, InvertibleLayer):
            layers = [layers]
        if isinstance(layers, keras.Sequential):  # a user's composition: its layers, in order
            layers = list(layers.layers)
        if layers is None:
            layers = []
        if not isinstance(layers, (list, tuple)):
            raise TypeError(
                f"{type(self).__name__} needs an InvertibleLayer, a list of them or a keras.Sequential of "
                f"them (tfinv.layers), got {type(layers).__name__}"
            )
        if not layers:
            raise ValueError(
                f"{type(self).__name__} needs an InvertibleLayer or a non-empty list of InvertibleLayer `layers`"
            )
        return InvertibleSequential(list(layers), event_ndims=len(self.data_shape), name="flow")

    # ---------------------------------------------------------------- structure
    def build(self, input_shape=None):
        """Builds the flow and the base eagerly from the data shape (no symbolic tracing)."""
        if self.built:
            return
        if not self.flow.built:
            self.flow.build((None,) + self.data_shape)
        if not self.base.built:
            self.base.build((None,) + self.latent_shape)
        if self.validate_args:
            propagate_validate_args(self)
        self.built = True

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent ``z``."""
        return tuple(self.flow.compute_output_shape((1,) + self.data_shape)[1:])

    @property
    def num_dims(self) -> int:
        return int(np.prod(self.data_shape))

    @property
    def is_conditional(self) -> bool:
        return self.context_shape is not None

    @property
    def log_det_dtype(self) -> tf.DType:
        """Dtype of log-dets, log-densities and the base distribution: the variable dtype."""
        return tf.as_dtype(self.variable_dtype)

    def _base_log_prob(self, z, log_det) -> tf.Tensor:
        dtype = self.log_det_dtype
        return self.base.log_prob(tf.cast(z, dtype)) + tf.cast(log_det, dtype)

    @property
    def base_distribution(self) -> tfd.Distribution:
        """The base as a TFP distribution over latents."""
        return self.base.distribution()

    # ---------------------------------------------------------------- checks
    def _check(self, value, expected: tuple[int, ...], what: str) -> tf.Tensor:
        value = cast_input(value, self.compute_dtype)
        if not value.dtype.is_floating:
            hint = ""
            if value.dtype.is_integer and what == "x":  # raw pixel counts: the usual first mistake
                hint = (" (integer pixel counts need dequantisation noise: tfinv.training.fit_flow(model, images, "
                        "...) or tfinv.data.dequantized_dataset(images) gives float32 counts + U[0, 1))")
            raise TypeError(
                f"{type(self).__name__} '{self.name}': {what} must be floating point, "
                f"got dtype {value.dtype.name}{hint}"
            )
        got = tuple(value.shape[1:])
        if len(value.shape) != len(expected) + 1 or any(
            g is not None and g != e for g, e in zip(got, expected)
        ):
            raise ValueError(
                f"{type(self).__name__} '{self.name}': {what} must have shape "
                f"(batch, {', '.join(map(str, expected))}), got {tuple(value.shape)}"
            )
        self.build()
        if self.validate_args:
            value = tf.debugging.assert_all_finite(value, f"{type(self).__name__} '{self.name}': {what} has NaN or Inf")
        return value

    def _real_context(self, context):
        """``context`` unchanged if it holds real numbers (float or int), else ``ValueError``: a bool,
        complex or string context would be silently cast (the imaginary part dropped) or fail deep
        inside TensorFlow."""
        if tf.is_tensor(context) or isinstance(context, keras.KerasTensor):
            dtype = tf.as_dtype(context.dtype)
            real = dtype.is_floating or (dtype.is_integer and dtype != tf.bool)
        else:
            try:
                dtype = np.asarray(context).dtype
            except (TypeError, ValueError):  # ragged nested lists
                dtype = np.dtype(object)
            real = np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)
        if not real:
            shape = ", ".join(map(str, self.context_shape))
            raise ValueError(f"{type(self).__name__} '{self.name}': context must hold real numbers (float or int) "
                             f"of shape (batch, {shape}), got dtype {getattr(dtype, 'name', dtype)}")
        return context

    def _check_context(self, context, value) -> tf.Tensor | None:
        """The context of a conditional model, checked against ``context_shape`` and ``value``'s batch."""
        where = f"{type(self).__name__} '{self.name}'"
        if self.context_shape is None:
            if context is not None:
                raise ValueError(f"{where} is unconditional (context_shape=None) but got a context")
            return None
        expected = f"(batch, {', '.join(map(str, self.context_shape))})"
        if context is None:
            raise ValueError(f"{where} is conditional: pass context of shape {expected}")
        context = self._real_context(context)
        if not tf.is_tensor(context):
            context = tf.convert_to_tensor(np.asarray(context), dtype=value.dtype)
        elif context.dtype != value.dtype:
            context = tf.cast(context, value.dtype)
        shape = tuple(context.shape)
        if len(shape) != len(self.context_shape) + 1 or any(
            g is not None and g != e for g, e in zip(shape[1:], self.context_shape)
        ):
            raise ValueError(f"{where}: context must have shape {expected}, got {shape}")
        if shape[0] is not None and value.shape[0] is not None and shape[0] != value.shape[0]:
            raise ValueError(f"{where}: context batch {shape[0]} differs from the input batch {value.shape[0]}")
        return context

    # ---------------------------------------------------------------- directions
    @compiled(xla_on_cpu=False)
    def forward(self, x, context=None) -> tuple[tf.Tensor, tf.Tensor]:
        """Data -> latent: ``(z, log|det dz/dx|)``, the log-det of shape ``(batch,)``."""
        x = self._check(x, self.data_shape, "x")
        return self.flow.forward_and_log_det(x, self._check_context(context, x))

    def forward_and_log_det(self, x, context=None) -> tuple[tf.Tensor, tf.Tensor]:
        """Same as `forward` (the name shared with `InvertibleLayer`)."""
        return self.forward(x, context)

    @compiled
    def inverse_and_log_det(self, z, context=None) -> tuple[tf.Tensor, tf.Tensor]:
        """Latent -> data: ``(x, log|det dx/dz|)``."""
        z = self._check(z, self.latent_shape, "z")
        return self.flow.inverse_and_log_det(z, self._check_context(context, z))

    @compiled
    def inverse(self, z, context=None) -> tf.Tensor:
        """Latent -> data; the inverse of base noise is a sample."""
        return self.inverse_and_log_det(z, context)[0]

    def call(self, x, context=None, training=None):
        if context is None and self.context_shape is not None and isinstance(x, (tuple, list)):
            x, context = x
        return self.forward(x, context)

    # ---------------------------------------------------------------- density
    @compiled(xla_on_cpu=False)
    def log_prob(self, x, context=None) -> tf.Tensor:
        """``log p(x | context)`` per example, shape ``(batch,)``."""
        z, log_det = self.forward(x, context)
        return self._base_log_prob(z, log_det)

    @compiled(xla_on_cpu=False)
    def bits_per_dim(self, x, context=None) -> tf.Tensor:
        """``-log p(x | context) / (D ln 2)`` per example."""
        return -self.log_prob(x, context) / (self.num_dims * math.log(2.0))

    def _sample_context(self, context, n: int):
        """A context for ``n`` samples: ``(n,) + context_shape``, or one context repeated."""
        if context is None or self.context_shape is None:
            return context
        context = self._real_context(context)
        context = tf.convert_to_tensor(context, dtype=self.compute_dtype) if not tf.is_tensor(context) else context
        if tuple(context.shape) == self.context_shape:
            context = tf.broadcast_to(context[None], (n,) + self.context_shape)
        return context

    def sample(self, n: int, temperature: float = 1.0, seed: int | None = None, context=None) -> tf.Tensor:
        """Draws ``n`` samples: ``inverse(base.sample_latent(eps, temperature), context)``.

        ``eps ~ N(0, I)`` of shape ``(n,) + base.noise_shape`` (for the default standard normal
        base, ``z = temperature * eps``), drawn by ``tf.random.stateless_normal`` with
        ``seed=[seed, 0]``: a seed makes the draw reproducible, compiled or eager. Without a
        seed the pair is TF's own ``(global seed, operation counter)`` when a global seed is set
        (``tf.random.set_seed``, ``keras.utils.set_random_seed``: unseeded samples repeat after
        resetting it, as TF's eager random ops do) and a random pair otherwise.
        ``temperature < 1`` gives the sharper, less diverse samples of Glow §5. A conditional
        model needs ``context``: ``(n,) + context_shape``, or one context of shape
        ``context_shape`` for all ``n`` samples. Compiled, the draw and the inverse flow run in
        one call: a graph function drawing with TF's random kernel (XLA's streams differ), the
        flow inside it as a nested XLA program.

        Raises:
            TypeError: ``n`` is not an integer (``2.7``, ``"3"`` and ``True`` are refused, not
                rounded) or ``temperature`` is not a real number.
            ValueError: ``n < 1``, or ``temperature`` is not finite and positive in the model's
                dtype (``inf``, ``nan``, ``1e39`` in float32).
        """
        n, temperature = _check_sample_arguments(n, temperature, self.compute_dtype)
        self.build()
        seed, stream = (int(seed), 0) if seed is not None else _unseeded_pair()
        return self._draw_and_sample(n, temperature, seed, stream, self._sample_context(context, n))

    @compiled(scalars={"n": tf.int32, "temperature": "float", "seed": tf.int64, "stream": tf.int64},
              graph_only=True)
    def _draw_and_sample(self, n, temperature, seed, stream, context):
        shape = tf.concat([tf.reshape(tf.cast(n, tf.int32), [1]),
                           tf.constant(self.base.noise_shape, tf.int32)], axis=0)
        seeds = tf.stack([tf.cast(seed, tf.int64), tf.cast(stream, tf.int64)])
        eps = tf.random.stateless_normal(shape, seed=seeds, dtype=self.log_det_dtype)
        return self._sample_from_noise(eps, temperature, context)

    @compiled(scalars={"temperature": "float"})
    def _sample_from_noise(self, eps, temperature, context):
        z = self.base.sample_latent(eps, tf.cast(temperature, eps.dtype))
        return self.inverse(z, context)

    def as_distribution(self, context=None) -> tfd.Distribution:
        """``TransformedDistribution(base, Invert(flow))``: a TFP distribution over data.

        A conditional model needs ``context``: batched (its batch must match the values passed
        to ``log_prob``), or one context of shape ``context_shape`` used for every example.
        """
        self.build()
        if self.context_shape is None and context is not None:
            raise ValueError(f"{type(self).__name__} '{self.name}' is unconditional (context_shape=None) but got a context")
        if self.context_shape is not None:
            if context is None:
                raise ValueError(
                    f"{type(self).__name__} '{self.name}' is conditional: as_distribution needs a context "
                    f"of shape {self.context_shape} or (batch, {', '.join(map(str, self.context_shape))})"
                )
            context = tf.convert_to_tensor(self._real_context(context), dtype=self.compute_dtype)
        return tfd.TransformedDistribution(self.base.distribution(), tfb.Invert(_FlowBijector(self, context)))

    def initialize(self, batch, context=None) -> "FlowModel":
        """Explicit data-dependent initialisation (ActNorm) on one batch; returns ``self``.

        A conditional model takes ``context`` (or a ``(x, context)`` pair as ``batch``).
        """
        if context is None and self.context_shape is not None and isinstance(batch, (tuple, list)):
            batch, context = batch
        x = self._check(batch, self.data_shape, "initialisation batch")
        self.flow.initialize(x, self._check_context(context, x))
        return self

    # ---------------------------------------------------------------- training
    #: Largest event size (``num_dims``) at which ``compile()`` picks XLA training on a CPU-only
    #: machine (0: never). ``None`` (the default): `CPU_XLA_MAX_DIMS` if every layer of the flow
    #: opts in (`InvertibleLayer.prefers_xla_on_cpu`: the dense vector layers), else 0. Models
    #: measured faster under XLA on CPU set their own (`tfinv.models.Glow`).
    cpu_xla_training_max_dims: int | None = None
    #: The same for the data direction of compiled inference (``forward``, ``log_prob``,
    #: ``bits_per_dim`` under ``inference_mode="auto"``); sampling uses XLA on every machine.
    cpu_xla_inference_max_dims: int | None = None

    def _cpu_xla_max_dims(self, kind: str) -> int:
        """``cpu_xla_{kind}_max_dims`` (``kind``: ``"training"`` or ``"inference"``), resolved."""
        value = getattr(self, f"cpu_xla_{kind}_max_dims")
        if value is not None:
            return int(value)
        return CPU_XLA_MAX_DIMS if self._layers_prefer_xla_on_cpu() else 0

    def _layers_prefer_xla_on_cpu(self) -> bool:
        """Whether every innermost invertible layer of the flow prefers XLA on CPU. Read on every
        inference call: the walk over the (fixed) layer tree is done once."""
        cached = self.__dict__.get("_prefers_xla_on_cpu")
        if cached is None:
            leaves = [layer for layer in self.flow._flatten_layers(include_self=True)
                      if isinstance(layer, InvertibleLayer)
                      and not any(isinstance(child, InvertibleLayer)
                                  for child in layer._flatten_layers(include_self=False, recursive=False))]
            cached = bool(leaves) and all(layer.prefers_xla_on_cpu for layer in leaves)
            object.__setattr__(self, "_prefers_xla_on_cpu", cached)  # not a tracked attribute
        return cached

    def _cpu_xla_inference(self) -> bool:
        return self.num_dims <= self._cpu_xla_max_dims("inference")

    def compile(self, optimizer="rmsprop", *, jit_compile="auto", steps_per_execution="auto", **kwargs):
        """`keras.Model.compile` with the fastest training path of small flows as the default.

        ``jit_compile="auto"`` (default): XLA when the model's loss and gradient lower to XLA
        (checked once here; otherwise a one-line notice and no XLA), on a GPU/TPU always, on a
        CPU-only machine only for models that opt in through ``cpu_xla_training_max_dims`` and
        events no larger than it (Glow on 8x8 digits trains ~1.2-1.5x faster under XLA on CPU,
        flows of dense vector layers on 64 values ~1.5x with 8 steps per call;
        at 32x32x3 XLA measured slower than graph mode there, and XLA compiles of some models,
        e.g. residual flows' fixed-point loops, took minutes); ``jit_compile=True`` forces it.
        Keras's own ``"auto"`` never picks XLA on a CPU-only machine.
        ``steps_per_execution="auto"``: 8 train steps per call of the compiled function on a
        GPU/TPU or under XLA, else 1 (at a few ms per step of a small flow, per-call overhead
        decides the throughput; callbacks such as ``TerminateOnNaN`` then see every eighth
        batch). Both fall back to Keras's plain path (no XLA, one step per call) under a
        ``tf.distribute`` strategy with several replicas (where neither works on CPU replicas)
        and with ``run_eagerly=True``. A ``.keras`` file keeps these arguments as given
        (``"auto"`` is resolved again where it is loaded) and the optimizer's state: the loaded
        model comes compiled (`compile_from_config`).
        """
        requested_jit, requested_steps = jit_compile, steps_per_execution
        plain = bool(kwargs.get("run_eagerly")) or tf.distribute.get_strategy().num_replicas_in_sync > 1
        accelerated = _has_accelerator()
        if jit_compile == "auto":
            jit_compile = False
            # XLA drops the input checks: never with validate_args.
            small_on_cpu = self.num_dims <= self._cpu_xla_max_dims("training")
            if (accelerated or small_on_cpu) and not plain and not self.validate_args:
                jit_compile, reason = train_step_compiles(self)
                if not jit_compile:
                    logging.getLogger("tfinv").warning(
                        "tfinv: %s '%s' does not compile with XLA (%s); training without XLA",
                        type(self).__name__, self.name, reason)
        if steps_per_execution == "auto":
            steps_per_execution = 8 if (accelerated or jit_compile is True) and not plain else 1
        super().compile(optimizer=optimizer, jit_compile=jit_compile,
                        steps_per_execution=steps_per_execution, **kwargs)
        # saved as asked, not as resolved here: a model saved with "auto" and loaded on another
        # machine resolves "auto" again there
        self._compile_config.config.update(jit_compile=requested_jit, steps_per_execution=requested_steps)

    def compile_from_config(self, config: dict) -> None:
        """Compiles a loaded model as it was compiled when saved (optimizer, jit, steps per call).

        Keras skips compiling a loaded model whose ``compile`` is overridden unless the class
        overrides this too; the optimizer's variables are built here so that its saved state loads.
        """
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`; a call whose first training step fails (bad data: wrong shape or
        dtype) leaves the model as it was, so a corrected call trains. Keras would keep the
        failed trace and the retrace would then create the optimizer's variables on a non-first
        call of the ``tf.function`` (``ValueError: Creating variables on a non-first call``).
        A `tf.data.Dataset` is taken in its own order (no ``shuffle`` warning from Keras, whose
        default ``shuffle=True`` does not apply to datasets)."""
        data = args[0] if args else kwargs.get("x")
        if isinstance(data, tf.data.Dataset) and len(args) < 9:  # shuffle is fit's 9th argument
            kwargs.setdefault("shuffle", False)
        try:
            return super().fit(*args, **kwargs)
        except BaseException:
            if self.optimizer is not None and not self.optimizer.built:
                self.train_function = None  # never traced through: trace afresh next time
            raise

    def _pack_context(self, data):
        """``(x, context[, sample_weight])`` -> ``((x, context), None[, sample_weight])`` so that
        Keras's train and test steps hand the context to ``call`` instead of treating it as ``y``."""
        if self.context_shape is None:
            return data
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None or isinstance(x, (tuple, list)):
            return data
        return keras.utils.pack_x_y_sample_weight((x, y), None, sample_weight)

    def train_step(self, data):
        return _reducible_logs(super().train_step(self._pack_context(data)))

    def test_step(self, data):
        return _reducible_logs(super().test_step(self._pack_context(data)))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Mean per-example negative log-likelihood (nats), scaled for ``tf.distribute``."""
        z, log_det = y_pred
        return self._loss_from_nll(-self._base_log_prob(z, log_det), sample_weight)

    def _loss_from_nll(self, nll, sample_weight=None):
        """The training loss from per-example NLLs: weighted, tracked as bits/dim, averaged over
        the global batch, plus the layers' own losses."""
        if sample_weight is not None:
            nll = nll * tf.cast(tf.reshape(sample_weight, [-1]), nll.dtype)
        self.bits_per_dim_tracker.update_state(nll / (self.num_dims * math.log(2.0)))
        # Keras multiplies the reported loss by the number of replicas and sums gradients
        # across them, so a replica's share of the global mean is its mean / replicas.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        loss = tf.reduce_mean(nll) / replicas
        for extra in self.losses:
            loss += self._aggregate_additional_loss(extra)
        return loss

    # ---------------------------------------------------------------- config
    def _model_config(self) -> dict:
        """The configuration shared by every flow model (no layers)."""
        return {
            "name": self.name,
            "input_shape": list(self.data_shape),
            "base": _serialize(self.base),
            "context_shape": None if self.context_shape is None else list(self.context_shape),
            "validate_args": self.validate_args,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    def get_config(self) -> dict:
        return {**self._model_config(), "layers": _serialize(self.flow)}

    def get_build_config(self):
        return {"input_shape": list(self.data_shape)}

    def build_from_config(self, config):
        self.build()


def _reducible_logs(logs: dict) -> dict:
    """The step's logs in a shape Keras can reduce over the workers of a multi-worker strategy.

    Keras 3 reduces a step's logs under `tf.distribute.MultiWorkerMirroredStrategy` with
    ``strategy.reduce("MEAN", value, axis=0)``, which fails on the scalar metric results every
    model returns ("Invalid reduction dimension 0 for input with 0 dimensions", tensorflow
    issue 72388). One-element vectors reduce to the same scalar (the metrics are already
    synchronised: every replica holds the same value). Other strategies get the logs unchanged.
    """
    strategy = tf.distribute.get_strategy()
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        strategy.extended._in_multi_worker_mode()
    if not multi_worker:
        return logs
    return {key: tf.reshape(value, [1]) if getattr(value, "shape", None) is not None and value.shape.rank == 0
            else value for key, value in logs.items()}


propagate_dtype_policy(FlowModel)
