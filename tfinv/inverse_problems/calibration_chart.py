"""A PNG-ready picture of a calibration curve, drawn with numpy (no plotting dependency): nominal
level ``q`` of the central credible interval against the empirical coverage, with the diagonal of
a calibrated posterior. Text uses `tfinv.diagnostics.plot`'s 3x5 pixel font."""

from __future__ import annotations

import numpy as np

from tfinv.diagnostics.plot import text_image

__all__ = ["calibration_chart"]

_CURVE = (40, 90, 200)
_DIAGONAL = (150, 150, 150)
_GRID = (225, 225, 225)


def _text(canvas: np.ndarray, text: str, top: int, left: int, color=(0, 0, 0)) -> None:
    mask = text_image(text, 2)
    height, width = min(mask.shape[0], canvas.shape[0] - top), min(mask.shape[1], canvas.shape[1] - left)
    if height > 0 and width > 0:
        canvas[top:top + height, left:left + width][mask[:height, :width]] = color


def _segment(canvas: np.ndarray, start, stop, color, dashed: bool = False) -> None:
    steps = int(max(abs(stop[0] - start[0]), abs(stop[1] - start[1]))) + 1
    for i, t in enumerate(np.linspace(0.0, 1.0, steps)):
        if dashed and (i // 4) % 2:
            continue
        row, col = (int(round(a + t * (b - a))) for a, b in zip(start, stop))
        canvas[max(row - 1, 0):row + 1, max(col - 1, 0):col + 1] = color


def calibration_chart(calibration: dict, title: str = "calibration", size: int = 320) -> np.ndarray:
    """An RGB ``uint8`` image ``(size + 40, size, 3)`` of ``calibration`` (the result of
    `tfinv.inverse_problems.calibration`: ``levels``, ``coverage``, ``error``): the coverage
    curve (blue, a dot per level), the diagonal (dashed grey), grid lines every 0.2, the axes'
    names, and the title with the mean calibration error."""
    levels = np.asarray(calibration["levels"], np.float64)
    coverage = np.asarray(calibration["coverage"], np.float64)
    if levels.shape != coverage.shape or levels.ndim != 1 or len(levels) == 0:
        raise ValueError(f"calibration_chart needs levels and coverage of one equal length, got {levels.shape} "
                         f"and {coverage.shape}")
    canvas = np.full((size + 40, size, 3), 255, np.uint8)
    left, right, top, bottom = 36, size - 12, 30, size + 2

    def point(q: float, c: float) -> tuple[float, float]:
        return bottom - c * (bottom - top), left + q * (right - left)

    for tick in np.linspace(0.0, 1.0, 6):
        row, col = point(tick, tick)
        canvas[int(row), left:right] = _GRID
        canvas[top:bottom, int(col)] = _GRID
        _text(canvas, f"{tick:.1f}", int(row) - 4, 4)
        _text(canvas, f"{tick:.1f}", bottom + 6, int(col) - 10)
    canvas[top:bottom + 1, left] = 0
    canvas[bottom, left:right + 1] = 0
    _segment(canvas, point(0, 0), point(1, 1), _DIAGONAL, dashed=True)
    points = [point(q, c) for q, c in zip(levels, np.clip(coverage, 0.0, 1.0))]
    for a, b in zip(points[:-1], points[1:]):
        _segment(canvas, a, b, _CURVE)
    for row, col in points:
        canvas[int(row) - 2:int(row) + 3, int(col) - 2:int(col) + 3] = _CURVE
    _text(canvas, f"{title}: error {float(calibration['error']):.3f}", 6, 4)
    _text(canvas, "coverage", top - 12 + 0, left + 4, _CURVE)
    _text(canvas, "nominal level q", bottom + 22, left + (right - left) // 2 - 60)
    return canvas
