"""Compositions of invertible layers."""

import tfinv.core  # noqa: F401  (first: core completes the core -> blocks -> layers import cycle)
from tfinv.blocks.convolutional_flow_step import ConvolutionalFlowStep
from tfinv.blocks.glow_step import GlowStep
from tfinv.core.invertible_sequential import InvertibleSequential
from tfinv.blocks.mixer_flow_block import MixerFlowBlock
from tfinv.blocks.reversible_stack import ReversibleStack

__all__ = ["ConvolutionalFlowStep", "GlowStep", "InvertibleSequential", "MixerFlowBlock", "ReversibleStack"]
