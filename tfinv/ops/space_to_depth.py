"""Shape arithmetic of space-to-depth (``(H, W, C) -> (H/f, W/f, f^2 C)``) and its inverse,
shared by every layer that trades resolution for channels (`Squeeze`, `HaarDownsampling`,
`OrthogonalDownsampling`, `IRevNetBlock`). Unknown (``None``) sizes stay unknown."""

from __future__ import annotations

from typing import Sequence


def _scale(size: int | None, numerator: int, denominator: int = 1) -> int | None:
    return None if size is None else size * numerator // denominator


def space_to_depth_shape(shape: Sequence[int | None], factor: int) -> tuple:
    """``(..., H, W, C) -> (..., H/f, W/f, f*f*C)``."""
    *batch, h, w, c = shape
    return (*batch, _scale(h, 1, factor), _scale(w, 1, factor), _scale(c, factor * factor))


def depth_to_space_shape(shape: Sequence[int | None], factor: int) -> tuple:
    """``(..., H, W, C) -> (..., H*f, W*f, C/(f*f))``."""
    *batch, h, w, c = shape
    return (*batch, _scale(h, factor), _scale(w, factor), _scale(c, 1, factor * factor))
