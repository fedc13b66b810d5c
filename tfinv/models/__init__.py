"""Assembled models."""

from tfinv.models.conditional_glow import ConditionalGlow
from tfinv.models.conditional_vector_flow import ConditionalVectorFlow
from tfinv.models.glow import Glow
from tfinv.models.invertible_cnn import InvertibleCNN
from tfinv.models.mixer_flow import MixerFlow
from tfinv.models.rev_vit import RevViT

__all__ = ["ConditionalGlow", "ConditionalVectorFlow", "Glow", "InvertibleCNN", "MixerFlow", "RevViT"]
