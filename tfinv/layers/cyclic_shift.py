"""Cyclic shift of an image along height and width (MixerFlow's shift between blocks)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det


def _roll(x, shift: int, axis: int):
    """``tf.roll`` as a split and a concat (standard ONNX ``Split``/``Concat``; no ``Roll`` op needed)."""
    size = x.shape[axis]
    shift %= size
    if shift == 0:
        return x
    rest, last = tf.split(x, [size - shift, shift], axis=axis)
    return tf.concat([last, rest], axis=axis)


@keras.saving.register_keras_serializable(package="tfinv")
class CyclicShift(InvertibleLayer):
    """``z[b, i, j, c] = x[b, (i - s) mod H, (j - s) mod W, c]``: the image rolled by ``s`` pixels
    down and right (``tf.roll``).

    Inverse: the roll by ``-s``. Log-det: 0 (a permutation of entries).
    Shapes: ``(B, H, W, C) -> (B, H, W, C)``.

    Between MixerFlow blocks a shift by half a patch moves the patch borders, so pixels on both
    sides of a border fall in one patch and are mixed by the next block's channel-mixing flow
    (as Swin's shifted windows do for attention).

    Args:
        shift: pixels to roll along height and width (any integer; taken modulo H and W).

    References: English et al., "MixerFlow", arXiv:2310.16777 (shift layer);
    Liu et al., "Swin Transformer", arXiv:2103.14030, §3.2.
    """

    event_ndims = 3

    def __init__(self, shift: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.shift = int(shift)

    def build(self, input_shape):
        if None in self.input_event_shape[:2]:
            raise ValueError(f"CyclicShift '{self.name}' needs a static (H, W), got {self.input_event_shape}")
        super().build(input_shape)

    def _roll2d(self, x, shift):
        return _roll(_roll(x, shift, axis=-3), shift, axis=-2)

    def _forward_and_log_det(self, x):
        return self._roll2d(x, self.shift), batch_log_det(0.0, x, self.event_ndims)

    def _inverse_and_log_det(self, z):
        return self._roll2d(z, -self.shift), batch_log_det(0.0, z, self.event_ndims)

    def get_config(self):
        return {**super().get_config(), "shift": self.shift}
