"""Plain Keras networks: coupling conditioners and the Lipschitz-constrained residual branches."""

from tfinv.nets.bottleneck_conv_net import BottleneckConvNet
from tfinv.nets.c_lip_swish import CLipSwish
from tfinv.nets.c_pila import CPila
from tfinv.nets.context_encoder import ContextEncoder
from tfinv.nets.dense_lipschitz_net import DenseLipschitzNet
from tfinv.nets.glow_conv_net import ConditionerActNorm, GlowConvNet, ZeroConv2D
from tfinv.nets.injective_padding import InjectivePadding
from tfinv.nets.lip_swish import LipSwish
from tfinv.nets.lipschitz_net import LipschitzNet
from tfinv.nets.mlp import MLP
from tfinv.nets.spectral_norm_conv2d import SpectralNormConv2D
from tfinv.nets.spectral_norm_dense import SpectralNormDense

__all__ = ["BottleneckConvNet", "CLipSwish", "CPila", "ConditionerActNorm", "ContextEncoder", "DenseLipschitzNet",
           "GlowConvNet", "InjectivePadding", "LipSwish", "LipschitzNet", "MLP", "SpectralNormConv2D",
           "SpectralNormDense", "ZeroConv2D"]
