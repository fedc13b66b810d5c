"""Context features for a conditioner: the context mapped to channels at every position."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfinv")
class ContextEncoder(keras.layers.Layer):
    """Maps a context to ``features`` channels at every position of a conditioner's input.

    * vector context (event rank 1, e.g. a one-hot label; other ranks but 3 are flattened):
      a dense layer, the same features at every position;
    * image context (event rank 3, ``(H_c, W_c, C_c)``): bilinear resizing to the conditioner
      input's ``(H, W)`` when they differ, then a 3x3 convolution.

    The map is linear; the conditioner that receives the concatenation ``[x_a, features]`` adds
    the nonlinearity. Call: ``encoder(context, like=x_a)`` returns ``(B, *like.shape[1:-1], features)``.

    Args:
        features: number of output channels.
    """

    def __init__(self, features: int = 16, **kwargs):
        super().__init__(**kwargs)
        if int(features) < 1:
            raise ValueError(f"ContextEncoder features must be >= 1, got {features}")
        self.features = int(features)

    def build(self, context_shape):
        event = tuple(context_shape[1:])
        self._image = len(event) == 3
        if self._image:
            self.project = keras.layers.Conv2D(self.features, 3, padding="same", name="project")
            self.project.build((None,) + event)
        else:
            self.project = keras.layers.Dense(self.features, name="project")
            self.project.build((None, int(np.prod(event))))

    def call(self, context, like):
        target_rank = len(like.shape)
        if self._image:
            if target_rank != 4:
                raise ValueError(
                    f"ContextEncoder '{self.name}': an image context needs an image conditioner "
                    f"input (B, H, W, C), got rank {target_rank}"
                )
            size = tf.shape(like)[1:3]
            if context.shape[1:3] != like.shape[1:3]:
                context = tf.image.resize(context, size, method="bilinear")
            return self.project(context)
        features = self.project(tf.reshape(context, [tf.shape(context)[0], -1]))
        shape = tf.concat([tf.shape(features)[:1], tf.ones([target_rank - 2], tf.int32), [self.features]], 0)
        target = tf.concat([tf.shape(like)[:-1], [self.features]], 0)
        return tf.broadcast_to(tf.reshape(features, shape), target)

    def compute_output_shape(self, context_shape, like_shape=None):
        return tuple(like_shape[:-1]) + (self.features,)

    def get_config(self):
        return {**super().get_config(), "features": self.features}
