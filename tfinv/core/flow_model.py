"""`FlowModel`: a Keras model over invertible layers and a base distribution (a normalizing flow).

``forward(x) -> (z, log|det dz/dx|)`` maps data to latents; ``inverse(z)`` maps latents to data,
so ``inverse`` of base noise is sampling. The density is the change of variables
``log p(x) = log p_Z(forward(x)) + log|det dz/dx|``.

``model.fit(dataset)`` needs no labels: the loss is the per-example negative log-likelihood,
averaged over the global batch (so ``tf.distribute`` reduces it correctly), and the
``bits_per_dim`` metric is reported beside it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfinv.blocks.invertible_sequential import InvertibleSequential
from tfinv.core.dtype import cast_input, propagate_dtype_policy
from tfinv.core.invertible_layer import InvertibleLayer, _RecomputingCache, propagate_validate_args
from tfinv.core.tfp_variables import expose_variables_to_tfp

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["FlowModel"]

BASE_DISTRIBUTIONS = ("normal",)


class _FlowBijector(tfb.Bijector):
    """TFP view of a `FlowModel` (data -> latent), used by ``as_distribution``."""

    # TFP's result cache would return latents computed with the weights of an earlier step.
    _cache = _RecomputingCache()

    def __init__(self, model: "FlowModel"):
        self._model = model
        super().__init__(
            forward_min_event_ndims=len(model.data_shape),
            inverse_min_event_ndims=len(model.latent_shape),
            name=f"{model.name}_bijector",
        )
        # TFP's ``trainable_variables`` then lists the model's weights (see tfp_variables).
        expose_variables_to_tfp(self, model)

    # Results in the base distribution's dtype (the model's variable dtype), so TFP's
    # TransformedDistribution works under mixed precision.
    def _forward(self, x):
        return tf.cast(self._model.forward(x)[0], self._model.log_det_dtype)

    def _inverse(self, z):
        return tf.cast(self._model.inverse(z), self._model.log_det_dtype)

    def _forward_log_det_jacobian(self, x):
        return self._model.forward(x)[1]

    def _inverse_log_det_jacobian(self, z):
        return self._model.inverse_and_log_det(z)[1]

    def _forward_event_shape(self, shape):
        return tf.TensorShape(self._model.latent_shape)

    def _inverse_event_shape(self, shape):
        return tf.TensorShape(self._model.data_shape)

    def _forward_event_shape_tensor(self, shape):
        return tf.constant(self._model.latent_shape, tf.int32)

    def _inverse_event_shape_tensor(self, shape):
        return tf.constant(self._model.data_shape, tf.int32)


@keras.saving.register_keras_serializable(package="tfinv")
class FlowModel(keras.Model):
    """A normalizing flow: invertible layers (data -> latent) and a standard normal base.

    Args:
        layers: the `InvertibleLayer`s applied in order in the forward direction.
        input_shape: shape of one data example, e.g. ``(8, 8, 1)``. The model is built eagerly
            from it (Keras's symbolic auto-build is avoided on purpose).
        base: base distribution of the latents; ``"normal"`` (standard normal) is supported.
        validate_args: turn on every layer's input checks (finite, inside its domain:
            ``InvalidArgumentError`` naming the layer); off by default, when inputs outside a
            layer's domain give NaN silently.
        **kwargs: `keras.Model` arguments (``name``...).

    Call: ``model(x)`` returns ``(z, log_det)`` (the forward direction).

    Dtype policies: ``dtype=...`` (or the global policy) reaches every layer; inputs of another
    float dtype are cast to the compute dtype on every entry point; latents and samples are in
    the compute dtype; log-dets, ``log_prob``, the base distribution and the loss are in the
    variable dtype (float32 under ``mixed_float16``/``mixed_bfloat16``, float64 under
    ``float64``).
    """

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        propagate_dtype_policy(cls)

    def __init__(
        self,
        layers: Sequence[InvertibleLayer | dict] | None = None,
        input_shape: Sequence[int] | None = None,
        base: str = "normal",
        validate_args: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.validate_args = bool(validate_args)
        if base not in BASE_DISTRIBUTIONS:
            raise ValueError(f"FlowModel base must be one of {BASE_DISTRIBUTIONS}, got {base!r}")
        if input_shape is None:
            raise ValueError(f"{type(self).__name__} needs input_shape, the shape of one example")
        self.base = base
        self.data_shape = tuple(int(s) for s in input_shape)
        self.bits_per_dim_tracker = keras.metrics.Mean(name="bits_per_dim")
        if type(self) is FlowModel:
            if not layers:
                raise ValueError("FlowModel needs a non-empty list of InvertibleLayer `layers`")
            self.flow = InvertibleSequential(layers, event_ndims=len(self.data_shape), name="flow",
                                             validate_args=self.validate_args)
            self.build()

    # ---------------------------------------------------------------- structure
    def build(self, input_shape=None):
        """Builds every layer eagerly from the data shape (no symbolic tracing)."""
        if self.built:
            return
        self._build_flow((None,) + self.data_shape)
        if self.validate_args:
            propagate_validate_args(self)
        self.built = True

    def _build_flow(self, shape):
        self.flow.build(shape)

    def compute_latent_shape(self) -> tuple[int, ...]:
        return tuple(self.flow.compute_output_shape((1,) + self.data_shape)[1:])

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent ``z``."""
        return self.compute_latent_shape()

    @property
    def num_dims(self) -> int:
        return int(np.prod(self.data_shape))

    @property
    def log_det_dtype(self) -> tf.DType:
        """Dtype of log-dets, log-densities and the base distribution: the variable dtype."""
        return tf.as_dtype(self.variable_dtype)

    @property
    def base_distribution(self) -> tfd.Distribution:
        shape, dtype = self.latent_shape, self.log_det_dtype
        return tfd.Independent(
            tfd.Normal(tf.zeros(shape, dtype), tf.ones(shape, dtype)),
            reinterpreted_batch_ndims=len(shape),
        )

    def _base_log_prob(self, z, log_det) -> tf.Tensor:
        dtype = self.log_det_dtype
        return self.base_distribution.log_prob(tf.cast(z, dtype)) + tf.cast(log_det, dtype)

    # ---------------------------------------------------------------- checks
    def _check(self, value, expected: tuple[int, ...], what: str) -> tf.Tensor:
        value = cast_input(value, self.compute_dtype)
        if not value.dtype.is_floating:
            raise TypeError(
                f"{type(self).__name__} '{self.name}': {what} must be floating point, "
                f"got dtype {value.dtype.name}"
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
        return value

    # ---------------------------------------------------------------- directions
    def _forward_and_log_det(self, x):
        return self.flow.forward_and_log_det(x)

    def _inverse_and_log_det(self, z):
        return self.flow.inverse_and_log_det(z)

    def forward(self, x) -> tuple[tf.Tensor, tf.Tensor]:
        """Data -> latent: ``(z, log|det dz/dx|)``, the log-det of shape ``(batch,)``."""
        return self._forward_and_log_det(self._check(x, self.data_shape, "x"))

    def forward_and_log_det(self, x) -> tuple[tf.Tensor, tf.Tensor]:
        """Same as `forward` (the name shared with `InvertibleLayer`)."""
        return self.forward(x)

    def inverse_and_log_det(self, z) -> tuple[tf.Tensor, tf.Tensor]:
        """Latent -> data: ``(x, log|det dx/dz|)``."""
        return self._inverse_and_log_det(self._check(z, self.latent_shape, "z"))

    def inverse(self, z) -> tf.Tensor:
        """Latent -> data; the inverse of base noise is a sample."""
        return self.inverse_and_log_det(z)[0]

    def call(self, x, training=None):
        return self.forward(x)

    # ---------------------------------------------------------------- density
    def log_prob(self, x) -> tf.Tensor:
        """``log p(x)`` per example, shape ``(batch,)``."""
        z, log_det = self.forward(x)
        return self._base_log_prob(z, log_det)

    def bits_per_dim(self, x) -> tf.Tensor:
        """``-log p(x) / (D ln 2)`` per example."""
        return -self.log_prob(x) / (self.num_dims * math.log(2.0))

    def sample(self, n: int, temperature: float = 1.0, seed: int | None = None) -> tf.Tensor:
        """Draws ``n`` samples: ``inverse(temperature * eps)`` with ``eps ~ N(0, I)``.

        ``seed`` makes the draw reproducible (stateless RNG); ``temperature < 1`` gives the
        sharper, less diverse samples of Glow §5.
        """
        if int(n) < 1:
            raise ValueError(f"sample needs n >= 1, got {n}")
        if not float(temperature) > 0:
            raise ValueError(f"sample needs temperature > 0, got {temperature}")
        self.build()
        shape, dtype = (int(n),) + self.latent_shape, self.log_det_dtype
        if seed is None:
            eps = tf.random.normal(shape, dtype=dtype)
        else:
            eps = tf.random.stateless_normal(shape, seed=[int(seed), 0], dtype=dtype)
        return self.inverse(eps * temperature)

    def as_distribution(self) -> tfd.Distribution:
        """``TransformedDistribution(base, Invert(flow))``: a TFP distribution over data."""
        self.build()
        return tfd.TransformedDistribution(self.base_distribution, tfb.Invert(_FlowBijector(self)))

    def initialize(self, batch) -> "FlowModel":
        """Explicit data-dependent initialisation (ActNorm) on one batch; returns ``self``."""
        x = self._check(batch, self.data_shape, "initialisation batch")
        self._initialize(x)
        return self

    def _initialize(self, x):
        self.flow.initialize(x)

    # ---------------------------------------------------------------- training
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Mean per-example negative log-likelihood (nats), scaled for ``tf.distribute``."""
        z, log_det = y_pred
        nll = -self._base_log_prob(z, log_det)
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

    def get_config(self) -> dict:
        config = {"name": self.name, "input_shape": list(self.data_shape), "base": self.base}
        config["dtype"] = keras.dtype_policies.serialize(self.dtype_policy)
        config["validate_args"] = self.validate_args
        if type(self) is FlowModel:
            config["layers"] = [keras.saving.serialize_keras_object(l) for l in self.flow.steps]
        return config

    def get_build_config(self):
        return {"input_shape": list(self.data_shape)}

    def build_from_config(self, config):
        self.build()


propagate_dtype_policy(FlowModel)
