"""Convolutional residual functions of reversible blocks (RevNet, i-RevNet)."""

from __future__ import annotations

import keras

__all__ = ["conv_residual"]


def conv_residual(hidden_channels: int, out_channels: int, kernel_size: int, strides: int = 1,
                  depth: int = 2, name: str | None = None) -> keras.Sequential:
    """``depth`` pre-activation convolutions ``ReLU -> Conv`` ("same" padding; the first has
    ``strides``); hidden widths ``hidden_channels``, output ``out_channels``.

    No batch normalisation (RevNet and i-RevNet use it): it couples the examples of a batch, so
    one example's output would depend on the others (no per-example inverse or log-det), and its
    moving statistics would be updated twice when reversible backprop recomputes the block.
    """
    layers = []
    for i in range(depth):
        layers.append(keras.layers.ReLU())
        layers.append(
            keras.layers.Conv2D(
                out_channels if i == depth - 1 else hidden_channels,
                kernel_size,
                strides=strides if i == 0 else 1,
                padding="same",
            )
        )
    return keras.Sequential(layers, name=name)
