"""`InvertibleSequential`: the composition primitive of the contract, itself an invertible layer."""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer

__all__ = ["InvertibleSequential", "common_context_shape", "reduce_to_batch"]


def reduce_to_batch(log_det: tf.Tensor) -> tf.Tensor:
    """Sums a layer's log-det over every axis after the first (the batch axis)."""
    rank = len(log_det.shape)
    return log_det if rank <= 1 else tf.reduce_sum(log_det, axis=list(range(1, rank)))


def common_context_shape(layers: Sequence[InvertibleLayer], owner: str) -> tuple[int, ...] | None:
    """The context shape shared by the conditional ``layers`` (``None`` if none is conditional)."""
    shapes = {tuple(l.context_shape) for l in layers if l.context_shape is not None}
    if len(shapes) > 1:
        raise ValueError(f"{owner}: the conditional layers expect different context shapes {sorted(shapes)}")
    return shapes.pop() if shapes else None


@keras.saving.register_keras_serializable(package="tfinv")
class InvertibleSequential(InvertibleLayer):
    """``z = f_n(... f_1(x))``.

    Inverse: ``x = f_1^-1(... f_n^-1(z))``. Log-det: the sum of the layers' log-dets, each
    reduced to the batch axis (so layers with different ``event_ndims`` compose).
    Shapes: as the layers; the input must have one batch axis. A rank-changing layer
    (`Patchify`: image -> patches, `FactorOut`: image -> vector) changes the event rank of the
    output by its own difference.
    Context: the same ``context`` is handed to every layer (unconditional layers ignore it); the
    container is conditional when any layer is, and all conditional layers must share one
    ``context_shape``.

    Args:
        layers: the `InvertibleLayer`s, applied in order in the forward direction.
        event_ndims: rank of one event of the input (3 for images).
    """

    event_ndims = 3

    def __init__(self, layers: Sequence[InvertibleLayer | dict], event_ndims: int = 3, **kwargs):
        steps = [keras.saving.deserialize_keras_object(l) if isinstance(l, dict) else l for l in layers]
        for layer in steps:
            if not isinstance(layer, InvertibleLayer):
                raise TypeError(
                    f"InvertibleSequential '{kwargs.get('name')}' takes InvertibleLayer instances, "
                    f"got {type(layer).__name__}"
                )
        # Instance overrides, set before the bijector is set up.
        self.event_ndims = int(event_ndims)
        rank_change = sum(l._event_ndims_of("inverse") - l.event_ndims for l in steps)
        if rank_change:
            self.output_event_ndims = self.event_ndims + rank_change
        super().__init__(**kwargs)
        self.steps = steps
        self.context_shape = common_context_shape(steps, f"InvertibleSequential '{self.name}'")

    def _check(self, x, expected_event_shape, direction):
        try:
            return super()._check(x, expected_event_shape, direction)
        except ValueError as err:
            if "expects inputs of rank" not in str(err):
                raise
            # The usual cause: vector layers composed with the default image rank.
            raise ValueError(f"{err}; give InvertibleSequential event_ndims, the rank of one example "
                             f"(1 for vectors, 3 for images; default 3)") from None

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.steps:
            if not layer.built:
                layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.steps:
            shape = tuple(layer.compute_output_shape(shape))
        return shape

    def compute_input_shape(self, output_shape):
        shape = tuple(output_shape)
        for layer in reversed(self.steps):
            shape = tuple(layer.compute_input_shape(shape))
        return shape

    def _forward_and_log_det(self, x, context=None):
        total = tf.zeros(tf.shape(x)[:1], self.log_det_dtype)
        for layer in self.steps:
            x, log_det = layer.forward_and_log_det(x, context)
            total += tf.cast(reduce_to_batch(log_det), total.dtype)
        return x, total

    def _inverse_and_log_det(self, z, context=None):
        total = tf.zeros(tf.shape(z)[:1], self.log_det_dtype)
        for layer in reversed(self.steps):
            z, log_det = layer.inverse_and_log_det(z, context)
            total += tf.cast(reduce_to_batch(log_det), total.dtype)
        return z, total

    def _initialize(self, x, context=None):
        for layer in self.steps:
            x = layer.initialize(x, context)

    def get_config(self):
        return {
            **super().get_config(),
            "event_ndims": self.event_ndims,
            "layers": [keras.saving.serialize_keras_object(l) for l in self.steps],
        }
