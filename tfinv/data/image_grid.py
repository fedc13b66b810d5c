"""PNG grids of images (samples, data) without a plotting dependency, and without TensorFlow (the
PNG is encoded here: `tfinv query` writes grids in the lean install, which has no TensorFlow)."""

from __future__ import annotations

import math
import os
import struct
import zlib

import numpy as np

__all__ = ["encode_png", "image_grid", "save_image_grid"]


def image_grid(
    images,
    num_levels: int,
    columns: int | None = None,
    scale: int = 4,
    padding: int = 1,
    background: int = 128,
) -> np.ndarray:
    """Tiles ``(N, H, W, C)`` images with values in ``[0, num_levels]`` into one uint8 picture.

    Values are clipped to ``[0, num_levels]`` (samples may overshoot) and mapped linearly to
    ``[0, 255]``; each pixel becomes a ``scale x scale`` block (nearest neighbour), so an 8x8
    digit is viewable. Tiles are separated by ``padding`` pixels (before scaling) of ``background``.
    Images with ``C`` other than 1 or 3 are shown as their channels side by side, in grey.

    Args:
        images: ``(N, H, W)`` or ``(N, H, W, C)``: ``C`` 1 is grey, 3 is RGB; array or tensor.
        num_levels: the value that maps to white (the data's pixel levels ``L``).
        columns: tiles per row; default ``ceil(sqrt(N))``.
        scale: integer upscaling factor.
        padding: gap between tiles, in image pixels.
        background: grey level (0..255) of the gaps.

    Returns:
        uint8 ``((rows * (H + padding) + padding) * scale, (columns * (W' + padding) + padding) * scale, C')``
        with ``W' = W, C' = C`` for ``C`` in (1, 3), else ``W' = C * W, C' = 1``.
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4 or 0 in x.shape:
        raise ValueError(f"image_grid expects non-empty (N, H, W) or (N, H, W, C) images, got {x.shape}")
    if x.shape[-1] not in (1, 3):  # no colour meaning: a grey strip of the channels
        n, height, width, channels = x.shape
        x = x.transpose(0, 1, 3, 2).reshape(n, height, channels * width, 1)
    if int(scale) < 1 or int(padding) < 0:
        raise ValueError(f"image_grid needs scale >= 1 and padding >= 0, got {scale}, {padding}")
    x = np.nan_to_num(x, nan=0.0)
    x = np.round(np.clip(x / float(num_levels), 0.0, 1.0) * 255.0).astype(np.uint8)
    n, height, width, channels = x.shape
    columns = int(columns) if columns else math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.full(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels),
        background,
        dtype=np.uint8,
    )
    for i in range(n):
        top = padding + (i // columns) * (height + padding)
        left = padding + (i % columns) * (width + padding)
        grid[top : top + height, left : left + width] = x[i]
    return grid.repeat(int(scale), axis=0).repeat(int(scale), axis=1)


def save_image_grid(
    images,
    path: str | os.PathLike,
    num_levels: int,
    columns: int | None = None,
    scale: int = 4,
    padding: int = 1,
) -> np.ndarray:
    """Writes `image_grid` of ``images`` to ``path`` as a PNG (`encode_png`), whole or not at all
    (`tfinv.files.write_bytes_atomic`); creates missing folders; returns the grid."""
    from tfinv.files import write_bytes_atomic

    grid = image_grid(images, num_levels, columns=columns, scale=scale, padding=padding)
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    write_bytes_atomic(path, encode_png(grid))
    return grid


def encode_png(image: np.ndarray) -> bytes:
    """The PNG file of a uint8 ``(H, W, 1)`` (grey) or ``(H, W, 3)`` (RGB) image: 8-bit samples,
    rows unfiltered, zlib-compressed (PNG specification, ISO/IEC 15948). Decodes to ``image`` exactly."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3) or 0 in image.shape:
        raise ValueError(f"encode_png expects a non-empty uint8 (H, W, 1) or (H, W, 3) image, got "
                         f"{image.dtype} {image.shape}")
    height, width, channels = image.shape
    # Each row starts with its filter type, 0 (none).
    rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, width * channels)], axis=1)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + chunk(b"IEND", b""))
