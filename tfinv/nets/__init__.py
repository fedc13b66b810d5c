"""Plain Keras conditioner networks used inside coupling layers."""

from tfinv.nets.context_encoder import ContextEncoder
from tfinv.nets.glow_conv_net import GlowConvNet, ZeroConv2D
from tfinv.nets.mlp import MLP

__all__ = ["ContextEncoder", "GlowConvNet", "MLP", "ZeroConv2D"]
