"""Point-estimate baselines for the inverse problems: a plain CNN regressor ``y -> x`` trained with MSE."""

from __future__ import annotations

from typing import Sequence

import keras


def cnn_regressor(observation_shape: Sequence[int], image_shape: Sequence[int], width: int = 64, depth: int = 4,
                  preprocessing: keras.layers.Layer | None = None, name: str = "cnn_regressor") -> keras.Model:
    """A plain CNN point estimate ``x_hat = g(y)`` (trained by the caller with MSE on ``(y, x)`` pairs).

    ``y`` (shape ``observation_shape``) goes through ``preprocessing`` (e.g. a fixed filtered
    back-projection, `tfinv.inverse_problems.FilteredBackProjection`) if given, is resized
    bilinearly to the images' ``(H, W)`` when its own size differs, then ``depth`` 3x3
    convolutions (``width`` channels, ReLU between, linear last layer with ``C`` channels).
    Shapes: ``(B,) + observation_shape -> (B, H, W, C)``.
    """
    if depth < 2 or width < 1:
        raise ValueError(f"cnn_regressor needs depth >= 2 and width >= 1, got depth={depth}, width={width}")
    height, width_px, channels = (int(s) for s in image_shape)
    inputs = keras.Input(tuple(int(s) for s in observation_shape), name="observation")
    h = preprocessing(inputs) if preprocessing is not None else inputs
    if len(h.shape) != 4:
        raise ValueError(f"cnn_regressor needs image-shaped (H, W, C) input after preprocessing, got {h.shape[1:]}")
    if tuple(h.shape[1:3]) != (height, width_px):
        h = keras.layers.Resizing(height, width_px, interpolation="bilinear", name="resize")(h)
    for i in range(depth - 1):
        h = keras.layers.Conv2D(int(width), 3, padding="same", activation="relu", name=f"conv_{i}")(h)
    outputs = keras.layers.Conv2D(channels, 3, padding="same", name="estimate")(h)
    return keras.Model(inputs, outputs, name=name)


def matched_cnn_regressor(observation_shape, image_shape, parameters: int, depth: int = 4,
                          preprocessing: keras.layers.Layer | None = None) -> keras.Model:
    """`cnn_regressor` with the largest ``width`` whose trainable parameter count is at most
    ``parameters`` (e.g. the conditional flow's), for a comparison at equal size."""
    probe = cnn_regressor(observation_shape, image_shape, 4, depth, preprocessing)
    c_in = int(probe.get_layer("conv_0").input.shape[-1])
    channels = int(image_shape[-1])

    def count(width: int) -> int:  # conv_0, (depth - 2) hidden convolutions, the output convolution
        return (9 * c_in + 1) * width + (depth - 2) * (9 * width + 1) * width + (9 * width + 1) * channels

    widths = [w for w in range(1, 4097) if count(w) <= parameters]
    if not widths:
        raise ValueError(f"no cnn_regressor of depth {depth} has <= {parameters} parameters")
    return cnn_regressor(observation_shape, image_shape, widths[-1], depth, preprocessing)

__all__ = ["cnn_regressor", "matched_cnn_regressor"]
