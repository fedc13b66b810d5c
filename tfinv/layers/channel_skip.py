"""A U-Net skip connection as an invertible layer: some channels bypass an inner invertible map."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.core.invertible_sequential import reduce_to_batch


@keras.saving.register_keras_serializable(package="tfinv")
class ChannelSkip(InvertibleLayer):
    """``z = [x_s, inner(x_r)]`` for ``x = [x_s, x_r]`` split on the channels: the first
    ``skipped_channels`` channels ``x_s`` (default ``max(1, C // 2)``, iUNet's "double" slicing
    for a 2x downsampling: the others, downsampled, give twice the channels) skip ``inner``; ``inner`` must map ``x_r``'s shape onto
    itself (in an iUNet: downsample, the lower levels, upsample).

    Inverse: ``x = [z_s, inner^-1(z_r)]``.
    Log-det: ``inner``'s.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)``, ``1 <= skipped_channels < C``; log-det ``(B,)``.

    This is iUNet's channel split and re-concatenation around a lower resolution, written once
    so the whole U-shaped network is a composition of invertible layers (its inverse, log-det
    and memory-efficient backprop come from the composition).

    Args:
        inner: the `InvertibleLayer` on the remaining channels.
        skipped_channels: channels that bypass ``inner`` (``None``: ``max(1, C // 2)``).

    References: Etmann, Ke & Schönlieb, "iUNets", arXiv:2005.05220, §3.2 (channel splitting and
    concatenation); Ronneberger et al., "U-Net", arXiv:1505.04597 (skip connections).
    """

    event_ndims = 3

    def __init__(self, inner: InvertibleLayer | dict, skipped_channels: int | None = None, **kwargs):
        if isinstance(inner, dict):
            inner = keras.saving.deserialize_keras_object(inner)
        if not isinstance(inner, InvertibleLayer):
            raise TypeError(f"ChannelSkip takes an InvertibleLayer as inner, got {type(inner).__name__}")
        if skipped_channels is not None and int(skipped_channels) < 1:
            raise ValueError(f"ChannelSkip skipped_channels must be >= 1, got {skipped_channels}")
        super().__init__(**kwargs)
        self.inner = inner
        self.skipped_channels = None if skipped_channels is None else int(skipped_channels)

    def build(self, input_shape):
        channels = self.input_event_shape[-1]
        skipped = max(1, (channels or 0) // 2) if self.skipped_channels is None else self.skipped_channels
        if channels is None or not 1 <= skipped < channels:
            raise ValueError(f"ChannelSkip '{self.name}' skips {skipped} channels; it needs "
                             f"fewer than C (C >= 2), got input shape {tuple(input_shape)}")
        self._skipped = skipped
        rest = tuple(input_shape[:-1]) + (channels - skipped,)
        if not self.inner.built:
            self.inner.build(rest)
        got = tuple(self.inner.compute_output_shape(rest))
        if got[-3:] != rest[-3:]:
            raise ValueError(f"ChannelSkip '{self.name}': inner must keep the shape {rest[-3:]} of the "
                             f"remaining channels, it gives {got[-3:]}")
        super().build(input_shape)

    def _forward_and_log_det(self, x):
        s = self._skipped
        z_r, log_det = self.inner.forward_and_log_det(x[..., s:])
        return tf.concat([x[..., :s], z_r], axis=-1), reduce_to_batch(log_det)

    def _inverse_and_log_det(self, z):
        s = self._skipped
        x_r, log_det = self.inner.inverse_and_log_det(z[..., s:])
        return tf.concat([z[..., :s], x_r], axis=-1), reduce_to_batch(log_det)

    def _initialize(self, x):
        self.inner.initialize(x[..., self._skipped:])

    def get_config(self):
        return {**super().get_config(), "inner": keras.saving.serialize_keras_object(self.inner),
                "skipped_channels": self.skipped_channels}
