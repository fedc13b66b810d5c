"""Shape arithmetic of space-to-depth (``(H, W, C) -> (H/f, W/f, f^2 C)``) and its inverse,
shared by every layer that trades resolution for channels (`Squeeze`, `HaarDownsampling`,
`OrthogonalDownsampling`, `InvertibleDownsampling`, `IRevNetBlock`), and the check that a factor
divides H and W. Unknown (``None``) sizes stay unknown and pass the check."""

from __future__ import annotations

from typing import Sequence


def _scale(size: int | None, numerator: int, denominator: int = 1) -> int | None:
    return None if size is None else size * numerator // denominator


def check_divisible(who: str, height: int | None, width: int | None, factor: int) -> None:
    """A `ValueError` naming ``who`` unless ``factor`` divides the known ``height`` and ``width``."""
    if (height is not None and height % factor) or (width is not None and width % factor):
        raise ValueError(f"{who} needs H and W divisible by {factor}, got (H, W) = ({height}, {width})")


def space_to_depth_shape(shape: Sequence[int | None], factor: int) -> tuple:
    """``(..., H, W, C) -> (..., H/f, W/f, f*f*C)``."""
    *batch, h, w, c = shape
    return (*batch, _scale(h, 1, factor), _scale(w, 1, factor), _scale(c, factor * factor))


def depth_to_space_shape(shape: Sequence[int | None], factor: int) -> tuple:
    """``(..., H, W, C) -> (..., H*f, W*f, C/(f*f))``."""
    *batch, h, w, c = shape
    return (*batch, _scale(h, factor), _scale(w, factor), _scale(c, 1, factor * factor))
