"""The conditioning network of a conditional flow for inverse problems (cINN): ``y -> h(y)``.

A model mixing in `ConditioningNetworkMixin` takes the observation ``y`` as its context: it
checks ``y`` against ``observation_shape`` (``model.context_shape``), maps it through the
conditioning network and hands the features ``h(y)`` to its conditional layers. The network is a
sub-model, so ``fit`` trains it jointly with the flow on the one maximum-likelihood loss
(Ardizzone et al., arXiv:1907.02392, §3).
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.compiled_inference import compiled


def default_conditioning_network(observation_shape: Sequence[int], features: int,
                                 image_size: Sequence[int] | None = None, hidden: int = 64) -> keras.Model:
    """The default conditioning network for a kind of observation.

    * image ``y`` (rank 3, ``(H_y, W_y, C_y)``): bilinear resizing to ``image_size`` (the data's
      ``(H, W)``) when it differs, then ``Conv3x3(hidden) -> ReLU -> Conv3x3(hidden) -> ReLU ->
      Conv3x3(features)``: features ``(H, W, features)`` at the data's resolution;
    * any other ``y`` (flattened): ``Dense(hidden) -> ReLU -> Dense(hidden) -> ReLU -> Dense(features)``.
    """
    shape = tuple(int(s) for s in observation_shape)
    inputs = keras.Input(shape, name="observation")
    if len(shape) == 3:
        h = inputs
        if image_size is not None and tuple(image_size) != shape[:2]:
            h = keras.layers.Resizing(int(image_size[0]), int(image_size[1]), interpolation="bilinear",
                                      name="resize")(h)
        h = keras.layers.Conv2D(hidden, 3, padding="same", activation="relu", name="conv_0")(h)
        h = keras.layers.Conv2D(hidden, 3, padding="same", activation="relu", name="conv_1")(h)
        out = keras.layers.Conv2D(int(features), 3, padding="same", name="features")(h)
    else:
        h = keras.layers.Flatten(name="flatten")(inputs) if len(shape) != 1 else inputs
        h = keras.layers.Dense(hidden, activation="relu", name="dense_0")(h)
        h = keras.layers.Dense(hidden, activation="relu", name="dense_1")(h)
        out = keras.layers.Dense(int(features), name="features")(h)
    return keras.Model(inputs, out, name="conditioning_network")


def resolve_conditioning_network(network, observation_shape, features, image_size=None):
    """``(network, feature_shape)``: the given network (or config, or the default) built on ``y``."""
    observation_shape = tuple(int(s) for s in observation_shape)
    if isinstance(network, dict):
        network = keras.saving.deserialize_keras_object(network)
    if network is None:
        network = default_conditioning_network(observation_shape, features, image_size)
    if not isinstance(network, keras.layers.Layer):
        raise ValueError(f"conditioning_network must be a Keras model or layer, got {type(network).__name__}")
    if not network.built:
        network.build((None,) + observation_shape)
    feature_shape = tuple(network.compute_output_shape((None,) + observation_shape)[1:])
    if any(s is None for s in feature_shape):
        raise ValueError(f"the conditioning network must give features of a static shape, got {feature_shape}")
    return network, tuple(int(s) for s in feature_shape)


class ConditioningNetworkMixin:
    """`FlowModel` directions with the context ``y`` mapped through ``self.conditioning_network``
    (set by the subclass after ``FlowModel.__init__``; ``self.context_shape`` is ``y``'s shape)."""

    def build(self, input_shape=None):
        pending = self.__dict__.pop("_pending_conditioning_network", None)
        if pending is not None:
            self.conditioning_network = pending
        super().build(input_shape)

    def _features(self, context, value):
        context = self._check_context(context, value)
        if context.shape[0] == 0:  # an empty batch: the flow's layers return empty results
            return tf.zeros((0,) + tuple(self.feature_shape), context.dtype)
        return self.conditioning_network(context)

    @compiled(xla_on_cpu=False)
    def forward(self, x, context=None):
        x = self._check(x, self.data_shape, "x")
        return self.flow.forward_and_log_det(x, self._features(context, x))

    @compiled
    def inverse_and_log_det(self, z, context=None):
        z = self._check(z, self.latent_shape, "z")
        return self.flow.inverse_and_log_det(z, self._features(context, z))

    def initialize(self, batch, context=None):
        if context is None and isinstance(batch, (tuple, list)):
            batch, context = batch
        x = self._check(batch, self.data_shape, "initialisation batch")
        self.flow.initialize(x, self._features(context, x))
        return self

    def posterior_samples(self, y, k: int, temperature: float = 1.0, seed: int | None = None) -> np.ndarray:
        """``k`` posterior samples for each observation of ``y`` (shape ``(N,) + observation_shape``):
        an array ``(k, N) + data_shape``, drawn in one call,
        ``sample(k * N, temperature, seed, context=y tiled k times)``."""
        y = np.asarray(y, dtype=np.float32)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"posterior_samples needs k >= 1 as an int, got {k!r}")
        n = len(y)
        context = np.tile(y, (int(k),) + (1,) * (y.ndim - 1))
        draws = self.sample(int(k) * n, temperature=temperature, seed=seed, context=context)
        return np.asarray(draws).reshape((int(k), n) + tuple(self.data_shape))


def pop_observation_shape(kwargs: dict, observation_shape) -> tuple[int, ...]:
    """``observation_shape`` (the model's ``context_shape`` in a saved config must agree)."""
    saved = kwargs.pop("context_shape", None)
    if observation_shape is None:
        observation_shape = saved
    if observation_shape is None:
        raise ValueError("a conditional model for inverse problems needs observation_shape, the shape of one y")
    shape = tuple(int(s) for s in observation_shape)
    if saved is not None and tuple(int(s) for s in saved) != shape:
        raise ValueError(f"context_shape {tuple(saved)} differs from observation_shape {shape}")
    return shape


__all__ = ["ConditioningNetworkMixin", "default_conditioning_network", "resolve_conditioning_network"]
