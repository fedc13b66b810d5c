"""Point-estimate baselines for the inverse problems, trained by the caller with MSE on ``(y, x)``
pairs: a plain CNN regressor ``y -> x`` and a small U-Net post-processing network (FBPConvNet-style)."""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np


def _observation_images(observation_shape, image_shape, preprocessing, who: str):
    """The regressors' input ``y`` and the image-shaped tensor they start from: ``p(y)``
    (``preprocessing``, if given), resized bilinearly to the images' ``(H, W)`` when its size differs."""
    height, width_px = (int(s) for s in image_shape[:2])
    inputs = keras.Input(tuple(int(s) for s in observation_shape), name="observation")
    h = preprocessing(inputs) if preprocessing is not None else inputs
    if len(h.shape) != 4:
        raise ValueError(f"{who} needs image-shaped (H, W, C) input after preprocessing, got {h.shape[1:]}")
    if tuple(h.shape[1:3]) != (height, width_px):
        h = keras.layers.Resizing(height, width_px, interpolation="bilinear", name="resize")(h)
    return inputs, h


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
    channels = int(image_shape[-1])
    inputs, h = _observation_images(observation_shape, image_shape, preprocessing, "cnn_regressor")
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

def unet_regressor(observation_shape: Sequence[int], image_shape: Sequence[int], width: int = 16, depth: int = 2,
                   preprocessing: keras.layers.Layer | None = None, name: str = "unet_regressor") -> keras.Model:
    """A small U-Net post-processing network ``x_hat = p(y) + U(p(y))`` (learned residual on the
    preprocessed observation ``p(y)``, e.g. the filtered back-projection).

    ``p(y)`` (resized bilinearly to the images' ``(H, W)`` if needed) goes down ``depth`` times
    (two 3x3 convolutions + ReLU, then 2x2 max pooling; ``width * 2**level`` channels), through two
    3x3 convolutions at the bottom, and up again (2x2 transposed convolution with stride 2,
    concatenation with the skip connection of that level, two 3x3 convolutions); a 1x1
    convolution gives the ``C`` channels of the residual. Shapes: ``(B,) + observation_shape ->
    (B, H, W, C)``; ``H`` and ``W`` divisible by ``2**depth``.

    References: Jin et al., "Deep Convolutional Neural Network for Inverse Problems in Imaging"
    (FBPConvNet), arXiv:1611.03679 (theirs: 5 levels, 64 to 1024 channels, batch norm; this is a
    small one without normalisation); Ronneberger et al., "U-Net", arXiv:1505.04597.
    """
    if depth < 1 or width < 1:
        raise ValueError(f"unet_regressor needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
    height, width_px, channels = (int(s) for s in image_shape)
    if height % 2**depth or width_px % 2**depth:
        raise ValueError(f"unet_regressor with depth {depth} needs H and W divisible by {2**depth}, "
                         f"got {(height, width_px)}")
    inputs, h = _observation_images(observation_shape, image_shape, preprocessing, "unet_regressor")
    start = h

    def block(t, filters, tag):
        t = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{tag}_a")(t)
        return keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{tag}_b")(t)

    skips = []
    for level in range(depth):
        h = block(h, width * 2**level, f"down_{level}")
        skips.append(h)
        h = keras.layers.MaxPooling2D(2, name=f"pool_{level}")(h)
    h = block(h, width * 2**depth, "bottom")
    for level in reversed(range(depth)):
        h = keras.layers.Conv2DTranspose(width * 2**level, 2, strides=2, name=f"upsample_{level}")(h)
        h = keras.layers.Concatenate(name=f"skip_{level}")([h, skips[level]])
        h = block(h, width * 2**level, f"up_{level}")
    residual = keras.layers.Conv2D(channels, 1, name="residual")(h)
    if start.shape[-1] != channels:
        start = keras.layers.Conv2D(channels, 1, name="match_channels")(start)
    outputs = keras.layers.Add(name="estimate")([start, residual])
    return keras.Model(inputs, outputs, name=name)


def matched_unet_regressor(observation_shape, image_shape, parameters: int, depth: int = 2,
                           preprocessing: keras.layers.Layer | None = None) -> keras.Model:
    """`unet_regressor` with the largest ``width`` whose trainable parameter count is at most
    ``parameters`` (e.g. the conditional flow's), for a comparison at equal size."""

    def build(width: int) -> keras.Model:
        return unet_regressor(observation_shape, image_shape, width, depth, preprocessing)

    def count(model: keras.Model) -> int:
        return sum(int(np.prod(w.shape)) for w in model.trainable_weights)

    low, high = 0, 1
    while count(build(high)) <= parameters:  # the count grows with the width: bracket, then bisect
        low, high = high, 2 * high
        if high > 4096:
            break
    if low == 0:
        raise ValueError(f"no unet_regressor of depth {depth} has <= {parameters} parameters")
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if count(build(middle)) <= parameters else (low, middle)
    return build(low)


__all__ = ["cnn_regressor", "matched_cnn_regressor", "matched_unet_regressor", "unet_regressor"]
