"""Base distributions of a `FlowModel`: Keras layers (their parameters train and serialise with
the model) that give ``log_prob`` of latents, a TFP distribution, and a reparameterisation of
standard normal noise.

Sampling and export: every base draws through ``sample_latent(eps, temperature)``, a
deterministic map from standard normal noise ``eps`` of shape ``(n,) + noise_shape`` to latents
``z`` of shape ``(n,) + event_shape``; ``FlowModel.sample`` is ``inverse(sample_latent(eps, T))``
with ``eps`` drawn by ``tf.random.stateless_normal((n,) + noise_shape, seed=[seed, 0])``. An
exported sampling path therefore takes ``eps`` as its input and runs ``sample_latent`` then the
inverse flow; the map uses only standard ONNX ops (Erf, CumSum, Gather, ReduceSum).

* `StandardNormal`: ``z = T * eps`` (``noise_shape = event_shape``): the inverse graph can take
  ``T * eps`` directly.
* `DiagonalGaussian`: ``z = loc + T * exp(log_scale) * eps`` (``noise_shape = event_shape``).
* `GaussianMixture`: ``noise_shape = (D + 1,)``; the first ``D`` values are the Gaussian noise, the
  last one picks the component by inverse-CDF sampling of the mixture weights
  (``u = Phi(eps_D)``), then ``z = loc_k + T * exp(log_scale_k) * eps``. ``component=`` fixes it.
* `Radial`: ``noise_shape = (D + 1,)``; ``z = T * |eps_D| * eps_{:D} / ||eps_{:D}||``.

``temperature`` scales the spread around the centre (the mean, or the component's mean); the
component choice of a mixture does not depend on it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

__all__ = [
    "BaseDistribution",
    "DiagonalGaussian",
    "GaussianMixture",
    "Radial",
    "StandardNormal",
    "get",
]


class BaseDistribution(keras.layers.Layer):
    """A distribution over latents of shape ``event_shape``, built from ``(batch,) + event_shape``.

    Subclasses give ``log_prob``, ``sample_latent``, ``distribution`` and, if not the event
    shape, ``noise_shape``. ``call(z)`` is ``log_prob(z)``.
    """

    def build(self, input_shape: Sequence[int | None]) -> None:
        shape = tuple(input_shape)[1:]
        if not shape or any(s is None for s in shape):
            raise ValueError(f"{type(self).__name__} needs a static latent event shape, got {shape}")
        self.event_shape = tuple(int(s) for s in shape)
        self._build_parameters()
        super().build(input_shape)

    def _build_parameters(self) -> None:
        pass

    @property
    def event_ndims(self) -> int:
        return len(self.event_shape)

    @property
    def num_dims(self) -> int:
        return int(np.prod(self.event_shape))

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """Shape of the standard normal noise (no batch axis) that ``sample_latent`` maps."""
        return self.event_shape

    def log_prob(self, z: tf.Tensor) -> tf.Tensor:
        """``log p(z)`` per example, shape ``(batch,)``."""
        return self.distribution().log_prob(z)

    def sample_latent(self, eps: tf.Tensor, temperature: float | tf.Tensor = 1.0) -> tf.Tensor:
        """Maps standard normal noise of shape ``(n,) + noise_shape`` to latents ``(n,) + event_shape``."""
        raise NotImplementedError

    def distribution(self) -> tfd.Distribution:
        """The base as a TFP distribution (event shape ``event_shape``, scalar batch)."""
        raise NotImplementedError

    def call(self, z):
        return self.log_prob(z)

    def _flat(self, eps):
        return tf.reshape(eps, [tf.shape(eps)[0], -1])

    def _event(self, flat):
        return tf.reshape(flat, tf.concat([tf.shape(flat)[:1], self.event_shape], 0))


@keras.saving.register_keras_serializable(package="tfinv")
class StandardNormal(BaseDistribution):
    """``z ~ N(0, I)`` (the default base). Sampling: ``z = T * eps``."""

    def distribution(self):
        zeros = tf.zeros(self.event_shape, self.variable_dtype)
        return tfd.Independent(tfd.Normal(zeros, tf.ones_like(zeros)), reinterpreted_batch_ndims=self.event_ndims)

    def sample_latent(self, eps, temperature=1.0):
        return eps * tf.cast(temperature, eps.dtype)


@keras.saving.register_keras_serializable(package="tfinv")
class DiagonalGaussian(BaseDistribution):
    """``z ~ N(loc, diag(exp(2 log_scale)))`` with learned ``loc`` and ``log_scale`` (zero init:
    it starts as the standard normal). Sampling: ``z = loc + T * exp(log_scale) * eps``."""

    def _build_parameters(self):
        self.loc = self.add_weight(name="loc", shape=self.event_shape, initializer="zeros")
        self.log_scale = self.add_weight(name="log_scale", shape=self.event_shape, initializer="zeros")

    def distribution(self):
        loc = tf.convert_to_tensor(self.loc)
        return tfd.Independent(tfd.Normal(loc, tf.exp(self.log_scale)), reinterpreted_batch_ndims=self.event_ndims)

    def sample_latent(self, eps, temperature=1.0):
        return self.loc + tf.cast(temperature, eps.dtype) * tf.exp(self.log_scale) * eps


@keras.saving.register_keras_serializable(package="tfinv")
class GaussianMixture(BaseDistribution):
    """``p(z) = sum_k w_k N(z; loc_k, diag(exp(2 log_scale_k)))``.

    Means start at ``mean_scale * N(0, 1)`` draws (seeded), log-scales at 0, weights uniform.
    ``component_log_prob(z)`` gives ``log N(z; loc_k, sigma_k)`` for every ``k`` (shape
    ``(batch, K)``), what FlowGMM's class posteriors and per-class likelihoods need;
    ``log_weights`` gives ``log w_k``.

    Sampling: ``noise_shape = (D + 1,)``; ``u = Phi(eps_D)`` picks the component ``k`` with
    ``W_{k-1} < u <= W_k`` (``W`` the cumulative weights), then ``z = loc_k + T sigma_k eps_{:D}``.

    Args:
        num_components: ``K``.
        mean_scale: standard deviation of the initial means.
        trainable_means, trainable_scales, trainable_weights: which parameters train (FlowGMM
            keeps means fixed, scales at 1 and weights uniform).
        seed: seed of the initial means.

    References: Izmailov et al., "Semi-Supervised Learning with Normalizing Flows" (FlowGMM),
    arXiv:1912.13025.
    """

    def __init__(self, num_components: int = 10, mean_scale: float = 1.0, trainable_means: bool = True,
                 trainable_scales: bool = True, trainable_weights: bool = True, seed: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        if int(num_components) < 1:
            raise ValueError(f"GaussianMixture needs num_components >= 1, got {num_components}")
        self.num_components = int(num_components)
        self.mean_scale = float(mean_scale)
        self.trainable_means = bool(trainable_means)
        self.trainable_scales = bool(trainable_scales)
        # Keras reserves ``trainable_weights``; the flag is stored under another name.
        self.learn_weights = bool(trainable_weights)
        self.seed = int(seed)

    def _build_parameters(self):
        k = self.num_components
        means = self.mean_scale * np.random.default_rng(self.seed).standard_normal((k,) + self.event_shape)
        self.loc = self.add_weight(name="loc", shape=(k,) + self.event_shape,
                                   initializer=keras.initializers.Constant(means.astype(np.float32)),
                                   trainable=self.trainable_means)
        self.log_scale = self.add_weight(name="log_scale", shape=(k,) + self.event_shape, initializer="zeros",
                                         trainable=self.trainable_scales)
        self.logits = self.add_weight(name="logits", shape=(k,), initializer="zeros", trainable=self.learn_weights)

    @property
    def noise_shape(self):
        return (self.num_dims + 1,)

    @property
    def log_weights(self) -> tf.Tensor:
        return tf.nn.log_softmax(self.logits)

    def _components(self):
        loc = tf.convert_to_tensor(self.loc)
        return tfd.Independent(tfd.Normal(loc, tf.exp(self.log_scale)), reinterpreted_batch_ndims=self.event_ndims)

    def component_log_prob(self, z: tf.Tensor) -> tf.Tensor:
        """``log N(z; loc_k, sigma_k)`` for each component, shape ``(batch, K)``."""
        return self._components().log_prob(tf.expand_dims(z, 1))

    def log_prob(self, z):
        return tf.reduce_logsumexp(self.component_log_prob(z) + self.log_weights, axis=-1)

    def distribution(self):
        return tfd.MixtureSameFamily(tfd.Categorical(logits=tf.convert_to_tensor(self.logits)), self._components())

    def sample_latent(self, eps, temperature=1.0, component: tf.Tensor | None = None):
        """See the class docstring; ``component`` (int, shape ``(n,)``) fixes the components."""
        flat = self._flat(eps)
        gauss, pick = flat[:, : self.num_dims], flat[:, self.num_dims]
        if component is None:
            u = 0.5 * (1.0 + tf.math.erf(pick / math.sqrt(2.0)))
            cumulative = tf.cumsum(tf.nn.softmax(self.logits))[:-1]
            component = tf.reduce_sum(tf.cast(u[:, None] > tf.cast(cumulative, u.dtype)[None, :], tf.int32), -1)
        loc = tf.gather(tf.reshape(self.loc, [self.num_components, -1]), component)
        scale = tf.gather(tf.reshape(tf.exp(self.log_scale), [self.num_components, -1]), component)
        return self._event(loc + tf.cast(temperature, eps.dtype) * scale * gauss)

    def get_config(self):
        return {**super().get_config(), "num_components": self.num_components, "mean_scale": self.mean_scale,
                "trainable_means": self.trainable_means, "trainable_scales": self.trainable_scales,
                "trainable_weights": self.learn_weights, "seed": self.seed}


class _RadialDistribution(tfd.Distribution):
    """TFP view of `Radial` (event shape ``shape``, scalar batch)."""

    def __init__(self, shape, dtype, name="Radial"):
        self._shape = tuple(shape)
        super().__init__(dtype=dtype, reparameterization_type=tfd.FULLY_REPARAMETERIZED,
                         validate_args=False, allow_nan_stats=True, parameters={"shape": shape, "dtype": dtype},
                         name=name)

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return {}

    def _event_shape(self):
        return tf.TensorShape(self._shape)

    def _event_shape_tensor(self):
        return tf.constant(self._shape, tf.int32)

    def _batch_shape(self):
        return tf.TensorShape([])

    def _batch_shape_tensor(self):
        return tf.constant([], tf.int32)

    def _log_prob(self, z):
        return radial_log_prob(z, len(self._shape))

    def _sample_n(self, n, seed=None):
        d = int(np.prod(self._shape))
        eps = tfp.random.split_seed(seed, 1)[0] if seed is not None else None
        noise = (tf.random.stateless_normal([n, d + 1], seed=eps, dtype=self.dtype) if eps is not None
                 else tf.random.normal([n, d + 1], dtype=self.dtype))
        return tf.reshape(radial_sample(noise, 1.0), tf.concat([[n], self._shape], 0))


def radial_log_prob(z: tf.Tensor, event_ndims: int) -> tf.Tensor:
    """``log p(z)`` of the radial distribution (see `Radial`), summed over the event axes."""
    flat = tf.reshape(z, tf.concat([tf.shape(z)[: tf.rank(z) - event_ndims], [-1]], 0))
    d = tf.cast(tf.shape(flat)[-1], z.dtype)
    r = tf.norm(flat, axis=-1)
    log_half_normal = 0.5 * math.log(2.0 / math.pi) - 0.5 * tf.square(r)
    log_sphere_area = math.log(2.0) + 0.5 * d * math.log(math.pi) - tf.math.lgamma(0.5 * d)
    return log_half_normal - log_sphere_area - tf.math.xlogy(d - 1.0, r)  # 0 log 0 = 0 for D = 1


def radial_sample(noise: tf.Tensor, temperature) -> tf.Tensor:
    """Flat radial draws ``(n, D)`` from standard normal noise ``(n, D + 1)``."""
    direction = noise[:, :-1]
    direction = direction / tf.norm(direction, axis=-1, keepdims=True)
    return direction * tf.cast(temperature, noise.dtype) * tf.abs(noise[:, -1:])


@keras.saving.register_keras_serializable(package="tfinv")
class Radial(BaseDistribution):
    """``z = r u`` with ``u`` uniform on the unit sphere ``S^{D-1}`` and ``r = |rho|``, ``rho ~ N(0, 1)``.

    Density: by the polar map ``z = r u`` (Jacobian ``dz = r^{D-1} dr du``),
    ``p(z) = p_r(r) p_u(u) / r^{D-1}`` with ``r = ||z||``, ``p_r(r) = sqrt(2/pi) exp(-r^2/2)``
    (half-normal) and ``p_u = 1/|S^{D-1}| = Gamma(D/2) / (2 pi^{D/2})``, so
    ``log p(z) = log sqrt(2/pi) - r^2/2 - log(2 pi^{D/2} / Gamma(D/2)) - (D-1) log r``.
    Unlike N(0, I), whose mass sits on the shell ``r ~ sqrt(D)``, the radial base keeps typical
    latents near the origin in high dimension.

    Sampling: ``noise_shape = (D + 1,)``; ``z = T |eps_D| eps_{:D} / ||eps_{:D}||``.

    References: Farquhar, Osborne & Gal, "Radial Bayesian Neural Networks", arXiv:1907.00865;
    Denker et al., "Conditional Invertible Neural Networks for Medical Imaging", J. Imaging 7(11)
    243 (2021), doi:10.3390/jimaging7110243 (radial base for conditional INNs).
    """

    @property
    def noise_shape(self):
        return (self.num_dims + 1,)

    def log_prob(self, z):
        return radial_log_prob(z, self.event_ndims)

    def distribution(self):
        return _RadialDistribution(self.event_shape, tf.as_dtype(self.variable_dtype))

    def sample_latent(self, eps, temperature=1.0):
        return self._event(radial_sample(self._flat(eps), temperature))


BASES = {
    "normal": StandardNormal,
    "standard_normal": StandardNormal,
    "diagonal": DiagonalGaussian,
    "mixture": GaussianMixture,
    "radial": Radial,
}


def get(base: str | dict | BaseDistribution | None) -> BaseDistribution:
    """A `BaseDistribution` from a name in `BASES`, a serialised config or an instance."""
    if base is None:
        return StandardNormal(name="base")
    if isinstance(base, BaseDistribution):
        return base
    if isinstance(base, dict):
        base = keras.saving.deserialize_keras_object(base)
        if not isinstance(base, BaseDistribution):
            raise TypeError(f"base config must describe a BaseDistribution, got {type(base).__name__}")
        return base
    if isinstance(base, str) and base in BASES:
        return BASES[base](name="base")
    raise ValueError(
        f"base must be a BaseDistribution or one of {sorted(BASES)}, got {base!r}"
    )
