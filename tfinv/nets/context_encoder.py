"""Context features for a conditioner: the context mapped to channels at every position."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

#: How `ContextEncoder` brings an image context to a coarser conditioner input.
DOWNSAMPLINGS = ("bilinear", "patch")


@keras.saving.register_keras_serializable(package="tfinv")
class ContextEncoder(keras.layers.Layer):
    """Maps a context to ``features`` channels at every position of a conditioner's input.

    * vector context (event rank 1, e.g. a one-hot label; other ranks but 3 are flattened):
      a dense layer, the same features at every position;
    * image context (event rank 3, ``(H_c, W_c, C_c)``) at the conditioner input's ``(H, W)``:
      a 3x3 convolution. At another size, ``downsampling``:

      - ``"bilinear"``: bilinear resizing to ``(H, W)``, then the 3x3 convolution. Shrinking by
        ``f > 2`` this way reads only a few context pixels per output (no anti-aliasing);
      - ``"patch"``: where ``H_c = f H`` and ``W_c = f W`` for an integer ``f > 1``, a ``f x f``
        convolution with stride ``f`` (a learned linear map of each ``f x f`` patch, every context
        pixel seen): a coarse level of a multi-scale flow is conditioned on all the
        full-resolution features, as the cINN paper's conditioning network gives each scale
        features at its resolution. Other sizes (a smaller context, a non-integer ratio) are
        resized bilinearly as above.

    The map is linear; the conditioner that receives the concatenation ``[x_a, features]`` adds
    the nonlinearity. Call: ``encoder(context, like=x_a)`` returns ``(B, *like.shape[1:-1], features)``.

    Args:
        features: number of output channels.
        downsampling: ``"bilinear"`` or ``"patch"`` (image contexts larger than the input).

    References: Ardizzone et al., arXiv:1907.02392 (§3, conditioning network with one output per
    resolution; here each coupling learns its own patch map of the full-resolution features).
    """

    def __init__(self, features: int = 16, downsampling: str = "bilinear", **kwargs):
        super().__init__(**kwargs)
        if int(features) < 1:
            raise ValueError(f"ContextEncoder features must be >= 1, got {features}")
        if downsampling not in DOWNSAMPLINGS:
            raise ValueError(f"ContextEncoder downsampling must be one of {DOWNSAMPLINGS}, got {downsampling!r}")
        self.features = int(features)
        self.downsampling = downsampling

    def build(self, context_shape, like_shape=None):
        """``like_shape``: the conditioner input's shape ``(B, H, W, C)`` (needed by ``"patch"``)."""
        event = tuple(context_shape[1:])
        self._image = len(event) == 3
        self._factor = 1
        if self._image and self.downsampling == "patch" and like_shape is not None:
            height, width = (int(s) for s in like_shape[1:3])
            factor = event[0] // height if height else 0
            if factor > 1 and event[0] == factor * height and event[1] == factor * width:
                self._factor = factor
        if self._image and self._factor > 1:
            self.project = keras.layers.Conv2D(self.features, self._factor, strides=self._factor, padding="valid",
                                               name="project")
            self.project.build((None,) + event)
        elif self._image:
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
            if self._factor > 1:
                if like.shape[1] is not None and context.shape[1] != self._factor * like.shape[1]:
                    raise ValueError(f"ContextEncoder '{self.name}' was built for inputs {self._factor}x smaller "
                                     f"than the context {tuple(context.shape[1:3])}, got {tuple(like.shape[1:3])}")
                return self.project(context)
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
        config = {**super().get_config(), "features": self.features}
        if self.downsampling != "bilinear":
            config["downsampling"] = self.downsampling
        return config
