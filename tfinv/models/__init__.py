"""Assembled models."""

import tfinv.core  # noqa: F401  (first: core completes the core -> blocks -> layers import cycle)
from tfinv.models.glow import Glow
from tfinv.models.invertible_cnn import InvertibleCNN
from tfinv.models.mixer_flow import MixerFlow
from tfinv.models.rev_vit import RevViT

__all__ = ["Glow", "InvertibleCNN", "MixerFlow", "RevViT"]
