"""Any invertible layer run backwards, as a layer (e.g. un-patchify = inverted `Patchify`)."""

from __future__ import annotations

from typing import Sequence

import keras

from tfinv.core.invertible_layer import InvertibleLayer


@keras.saving.register_keras_serializable(package="tfinv")
class Inverted(InvertibleLayer):
    """``z = f^-1(x)`` for a wrapped invertible layer ``f``.

    Inverse: ``x = f(z)``. Log-det: ``log|det df^-1/dx|`` (``f``'s inverse log-det).
    Shapes: ``f``'s output shape to its input shape; the event ranks swap.

    Unlike ``tfp.bijectors.Invert`` this is a tfinv layer (Keras-serialisable, composable in
    `InvertibleSequential`). To build ``f`` from the shape of its *output*, a layer whose input
    shape does not follow from its output shape (`Patchify`: the patch grid's aspect ratio is
    lost) needs ``layer_input_shape``.

    Args:
        layer: the `InvertibleLayer` ``f``.
        layer_input_shape: event shape of ``f``'s input (this layer's output), needed when ``f``
            is not built yet and its input shape does not follow from its output shape.
    """

    def __init__(self, layer: InvertibleLayer | dict, layer_input_shape: Sequence[int] | None = None, **kwargs):
        if isinstance(layer, dict):
            layer = keras.saving.deserialize_keras_object(layer)
        if not isinstance(layer, InvertibleLayer):
            raise TypeError(f"Inverted takes an InvertibleLayer, got {type(layer).__name__}")
        # Instance overrides, before the bijector is set up: this layer's input is f's output.
        self.event_ndims = layer._event_ndims_of("inverse")
        self.output_event_ndims = int(layer.event_ndims)
        super().__init__(**kwargs)
        self.layer = layer
        self.layer_input_shape = None if layer_input_shape is None else tuple(int(s) for s in layer_input_shape)
        self.context_shape = layer.context_shape

    def build(self, input_shape):
        if not self.layer.built:
            batch = tuple(input_shape[: len(input_shape) - self.event_ndims])
            if self.layer_input_shape is not None:
                self.layer.build(batch + self.layer_input_shape)
            else:
                try:  # shape-preserving layers know their input shape from their output shape
                    layer_input = tuple(self.layer.compute_input_shape(tuple(input_shape)))
                except (TypeError, ValueError) as err:
                    raise ValueError(
                        f"Inverted '{self.name}': pass layer_input_shape (the event shape of "
                        f"{type(self.layer).__name__}'s input) or build the wrapped layer first"
                    ) from err
                self.layer.build(layer_input)
        expected = self.layer.output_event_shape
        if tuple(self.input_event_shape) != tuple(expected):
            raise ValueError(
                f"Inverted '{self.name}' expects the event shape {tuple(expected)} of "
                f"{type(self.layer).__name__}'s output, got {tuple(self.input_event_shape)}"
            )
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_input_shape(input_shape)

    def compute_input_shape(self, output_shape):
        return self.layer.compute_output_shape(output_shape)

    def _forward_and_log_det(self, x, context=None):
        return self.layer.inverse_and_log_det(x, context)

    def _inverse_and_log_det(self, z, context=None):
        return self.layer.forward_and_log_det(z, context)

    def get_config(self):
        return {
            **super().get_config(),
            "layer": keras.saving.serialize_keras_object(self.layer),
            "layer_input_shape": None if self.layer_input_shape is None else list(self.layer_input_shape),
        }
