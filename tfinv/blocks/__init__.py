"""Compositions of invertible layers."""

from tfinv.blocks.glow_step import GlowStep
from tfinv.blocks.invertible_sequential import InvertibleSequential

__all__ = ["GlowStep", "InvertibleSequential"]
