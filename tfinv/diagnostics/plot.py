"""PNG plots of the diagnostics drawn with numpy (no plotting dependency is installed):
histograms with a 3x5 pixel font for titles and axis labels, encoded by ``tf.io.encode_png``."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["bar_chart", "histogram_panel", "stack_panels", "text_image"]

# 3x5 glyphs, one string of five rows each ("#" = ink). Lower case is drawn as upper case.
_GLYPH_ROWS = {
    'A': '.#. #.# ### #.# #.#',
    'B': '##. #.# ##. #.# ##.',
    'C': '.## #.. #.. #.. .##',
    'D': '##. #.# #.# #.# ##.',
    'E': '### #.. ##. #.. ###',
    'F': '### #.. ##. #.. #..',
    'G': '.## #.. #.# #.# .##',
    'H': '#.# #.# ### #.# #.#',
    'I': '### .#. .#. .#. ###',
    'J': '..# ..# ..# #.# .#.',
    'K': '#.# #.# ##. #.# #.#',
    'L': '#.. #.. #.. #.. ###',
    'M': '#.# ### ### #.# #.#',
    'N': '##. #.# #.# #.# #.#',
    'O': '.#. #.# #.# #.# .#.',
    'P': '##. #.# ##. #.. #..',
    'Q': '.#. #.# #.# ##. .##',
    'R': '##. #.# ##. #.# #.#',
    'S': '.## #.. .#. ..# ##.',
    'T': '### .#. .#. .#. .#.',
    'U': '#.# #.# #.# #.# ###',
    'V': '#.# #.# #.# #.# .#.',
    'W': '#.# #.# ### ### #.#',
    'X': '#.# #.# .#. #.# #.#',
    'Y': '#.# #.# .#. .#. .#.',
    'Z': '### ..# .#. #.. ###',
    '0': '### #.# #.# #.# ###',
    '1': '.#. ##. .#. .#. ###',
    '2': '##. ..# .#. #.. ###',
    '3': '##. ..# .#. ..# ##.',
    '4': '#.# #.# ### ..# ..#',
    '5': '### #.. ##. ..# ##.',
    '6': '.## #.. ### #.# ###',
    '7': '### ..# .#. .#. .#.',
    '8': '### #.# ### #.# ###',
    '9': '### #.# ### ..# ##.',
    '.': '... ... ... ... .#.',
    '-': '... ... ### ... ...',
    '+': '... .#. ### .#. ...',
    '_': '... ... ... ... ###',
    '/': '..# ..# .#. #.. #..',
    ':': '... .#. ... .#. ...',
    '=': '... ### ... ### ...',
    '(': '.#. #.. #.. #.. .#.',
    ')': '.#. ..# ..# ..# .#.',
    ',': '... ... ... .#. #..',
    '<': '..# .#. #.. .#. ..#',
    '>': '#.. .#. ..# .#. #..',
    '|': '.#. .#. .#. .#. .#.',
    '^': '.#. #.# ... ... ...',
    ' ': '... ... ... ... ...',
}
_GLYPHS = {char: rows.replace(' ', '') for char, rows in _GLYPH_ROWS.items()}


def _glyph(char: str) -> np.ndarray:
    pattern = _GLYPHS.get(char.upper(), _GLYPHS["_"])
    return np.array([c == "#" for c in pattern], bool).reshape(5, 3)


def text_image(text: str, scale: int = 2) -> np.ndarray:
    """A boolean ink mask of ``text`` in the 3x5 font (1 pixel between glyphs), scaled."""
    if not text:
        return np.zeros((5 * scale, scale), bool)
    columns = []
    for char in text:
        columns += [_glyph(char), np.zeros((5, 1), bool)]
    mask = np.concatenate(columns, axis=1)
    return mask.repeat(scale, 0).repeat(scale, 1)


def _draw_text(canvas: np.ndarray, text: str, top: int, left: int, color=(0, 0, 0), scale: int = 2) -> None:
    mask = text_image(text, scale)
    height, width = mask.shape
    height = min(height, canvas.shape[0] - top)
    width = min(width, canvas.shape[1] - left)
    if height <= 0 or width <= 0:
        return
    region = canvas[top:top + height, left:left + width]
    region[mask[:height, :width]] = color


def _format(value: float) -> str:
    if not math.isfinite(value):
        return "inf" if value > 0 else "nan"
    return f"{value:.3g}"


def histogram_panel(values: Sequence[float], title: str, width: int = 300, height: int = 200,
                    bins: int = 20, color=(40, 90, 200), marker: float | None = None) -> np.ndarray:
    """An RGB uint8 panel: a histogram of the finite ``values`` with the title, the x range and the
    count of the tallest bin; ``marker`` draws a red vertical line at that x (e.g. a threshold)."""
    canvas = np.full((height, width, 3), 255, np.uint8)
    _draw_text(canvas, title, 4, 4)
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    plot_top, plot_bottom, plot_left, plot_right = 20, height - 18, 6, width - 6
    canvas[plot_bottom, plot_left:plot_right] = 0
    if finite.size == 0:
        _draw_text(canvas, "no finite values", plot_top + 20, plot_left + 10, (200, 0, 0))
        return canvas
    low, high = float(finite.min()), float(finite.max())
    if marker is not None and math.isfinite(marker):
        low, high = min(low, marker), max(high, marker)
    if high - low < 1e-12 * max(1.0, abs(high)):
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(finite, bins=bins, range=(low, high))
    span = plot_right - plot_left
    tallest = max(int(counts.max()), 1)
    for count, start, stop in zip(counts, edges[:-1], edges[1:]):
        x0 = plot_left + int((start - low) / (high - low) * span)
        x1 = max(x0 + 1, plot_left + int((stop - low) / (high - low) * span) - 1)
        bar = int(count / tallest * (plot_bottom - plot_top - 12))
        canvas[plot_bottom - bar:plot_bottom, x0:x1] = color
    if marker is not None and math.isfinite(marker):
        x = plot_left + int((marker - low) / (high - low) * span)
        canvas[plot_top:plot_bottom, max(plot_left, min(x, plot_right - 1))] = (220, 0, 0)
    _draw_text(canvas, _format(low), height - 14, plot_left)
    label = _format(high)
    _draw_text(canvas, label, height - 14, plot_right - 8 * len(label))
    _draw_text(canvas, f"max count {tallest}", plot_top, plot_right - 8 * len(f"max count {tallest}"))
    if finite.size < values.size:
        _draw_text(canvas, f"{values.size - finite.size} non-finite", plot_top + 12, plot_left + 4, (200, 0, 0))
    return canvas


def bar_chart(labels: Sequence[str], values: Sequence[float], title: str, threshold: float | None = None,
              width: int = 640, row_height: int = 14) -> np.ndarray:
    """Horizontal bars, one per label (non-finite values drawn red at full length), a threshold line."""
    values = np.asarray(values, np.float64)
    label_width = 8 * max([len(l) for l in labels] + [1]) + 8
    height = 24 + row_height * len(labels) + 18
    canvas = np.full((height, max(width, label_width + 200), 3), 255, np.uint8)
    _draw_text(canvas, title, 4, 4)
    finite = values[np.isfinite(values)]
    high = max([float(finite.max()) if finite.size else 1.0, threshold or 0.0, 1e-12])
    low = min([0.0] + ([float(finite.min())] if finite.size else []))
    left, right = label_width, canvas.shape[1] - 80
    for row, (label, value) in enumerate(zip(labels, values)):
        top = 24 + row * row_height
        _draw_text(canvas, label, top + 2, 4)
        if math.isfinite(value):
            x0 = left + int((0.0 - low) / (high - low) * (right - left))
            x1 = left + int((value - low) / (high - low) * (right - left))
            canvas[top + 2:top + row_height - 2, min(x0, x1):max(x0, x1) + 1] = (40, 90, 200)
        else:
            canvas[top + 2:top + row_height - 2, left:right] = (220, 0, 0)
        _draw_text(canvas, _format(value), top + 2, right + 4)
    if threshold is not None:
        x = left + int((threshold - low) / (high - low) * (right - left))
        canvas[20:height - 16, x] = (220, 0, 0)
        _draw_text(canvas, f"threshold {_format(threshold)}", height - 14, left)
    return canvas


def stack_panels(panels: Sequence[np.ndarray], title: str | None = None) -> np.ndarray:
    """Panels side by side (padded to the tallest), with an optional title row above."""
    height = max(p.shape[0] for p in panels)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0)), constant_values=255) for p in panels]
    row = np.concatenate(padded, axis=1)
    if title is None:
        return row
    header = np.full((18, row.shape[1], 3), 255, np.uint8)
    _draw_text(header, title, 4, 4)
    return np.concatenate([header, row], axis=0)
