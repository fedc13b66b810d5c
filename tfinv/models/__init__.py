"""Assembled models."""

from tfinv.models.flow_gmm import FlowGMM
from tfinv.models.glow import Glow
from tfinv.models.invertible_cnn import InvertibleCNN
from tfinv.models.mixer_flow import MixerFlow
from tfinv.models.rev_vit import RevViT

__all__ = ["FlowGMM", "Glow", "InvertibleCNN", "MixerFlow", "RevViT"]
