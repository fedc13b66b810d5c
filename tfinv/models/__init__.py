"""Assembled models."""

from tfinv.models.glow import Glow

__all__ = ["Glow"]
