"""i-RevNet's injective input stage: zero channels put before the input's channels."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tfinv")
class InjectivePadding(keras.layers.Layer):
    """``y = [0, x]``: ``channels - C`` zero channels followed by ``x (B, H, W, C)``.

    Left inverse (`left_inverse`): ``x = y[..., -C:]``, exact on the image of the map. The map is
    injective, not bijective (the output has more entries than the input), so it is a plain
    Keras layer and not an `InvertibleLayer`: a density model would have no log-det for it. It
    lets an i-RevNet widen its first stage beyond ``C`` channels and stay invertible on its image.

    The zeros come first, where this differs from the paper (which appends them): an
    `IRevNetBlock` computes ``[a, b] -> [S(b), S(a) + F(b)]`` from the channel halves, so with
    ``channels >= 2C`` appended zeros fill the whole second half ``b`` and the first block's
    residual ``F`` reads only zeros (a constant: a wasted block); put first, they fill ``a`` and
    ``F`` reads the data.

    Shapes: ``(B, H, W, C) -> (B, H, W, channels)``, ``channels >= C``.

    Args:
        channels: output channels.

    References: Jacobsen, Smeulders & Oyallon, "i-RevNet", arXiv:1802.07088, §3.1 (the injective
    i-RevNet's zero padding of the input's channels).
    """

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        if int(channels) < 1:
            raise ValueError(f"InjectivePadding needs channels >= 1, got {channels}")
        self.channels = int(channels)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels > self.channels:
            raise ValueError(f"InjectivePadding '{self.name}' pads to {self.channels} channels; "
                             f"the input must have at most that many, got shape {tuple(input_shape)}")
        self.input_channels = int(channels)

    def call(self, x):
        pad = self.channels - self.input_channels
        if pad == 0:
            return x
        return tf.pad(x, [[0, 0]] * (len(x.shape) - 1) + [[pad, 0]])

    def left_inverse(self, y: tf.Tensor) -> tf.Tensor:
        """``y[..., -C:]``: the input, for ``y`` in the map's image."""
        return y[..., self.channels - self.input_channels :]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.channels,)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}
