"""Checks of the serving stage's settings (servable limits, app limits, server timeouts and port):
each returns the value or raises a `ValueError` naming the setting and what it must be."""

from __future__ import annotations

from typing import Any

__all__ = ["port_number", "positive_int", "positive_seconds"]


def positive_int(what: str, value: Any) -> int:
    """``value`` if it is an int >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


def positive_seconds(what: str, value: Any) -> float:
    """``value`` if it is a finite or infinite number of seconds > 0 (not a bool, not NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    return value


def port_number(value: Any) -> int:
    """``value`` if it is a TCP port, 0 (a free port) to 65535."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"port must be an int in [0, 65535] (0: a free port), got {value!r}")
    return value
