"""Assembled models."""

from tfinv.models.glow import Glow
from tfinv.models.mixer_flow import MixerFlow
from tfinv.models.rev_vit import RevViT

__all__ = ["Glow", "MixerFlow", "RevViT"]
