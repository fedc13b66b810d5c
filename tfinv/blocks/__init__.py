"""Compositions of invertible layers."""

from tfinv.blocks.glow_step import GlowStep
from tfinv.blocks.invertible_sequential import InvertibleSequential
from tfinv.blocks.reversible_stack import ReversibleStack

__all__ = ["GlowStep", "InvertibleSequential", "ReversibleStack"]
