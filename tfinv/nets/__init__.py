"""Plain Keras conditioner networks used inside coupling layers."""

from tfinv.nets.glow_conv_net import GlowConvNet, ZeroConv2D

__all__ = ["GlowConvNet", "ZeroConv2D"]
