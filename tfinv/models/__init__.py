"""Assembled models."""

from tfinv.models.glow import Glow
from tfinv.models.rev_vit import RevViT

__all__ = ["Glow", "RevViT"]
