"""Assembled models."""

import tfinv.core  # noqa: F401  (first: core completes the core -> blocks -> layers import cycle)
from tfinv.models.conditional_glow import ConditionalGlow
from tfinv.models.conditional_vector_flow import ConditionalVectorFlow
from tfinv.models.flow_gmm import FlowGMM
from tfinv.models.fourier_flow import FourierFlow
from tfinv.models.fully_connected_flow import FullyConnectedFlow
from tfinv.models.glow import Glow
from tfinv.models.i_dense_net import IDenseNet
from tfinv.models.i_rev_net import IRevNet
from tfinv.models.i_u_net import IUNet
from tfinv.models.invertible_cnn import InvertibleCNN
from tfinv.models.mixer_flow import MixerFlow
from tfinv.models.rbig import RBIGResult, fit_rbig, learn_orthonormal_conv
from tfinv.models.residual_flow import ResidualFlow
from tfinv.models.rev_net import RevNet
from tfinv.models.rev_vit import RevViT

__all__ = ["ConditionalGlow", "ConditionalVectorFlow", "FlowGMM", "FourierFlow", "FullyConnectedFlow", "Glow",
           "IDenseNet", "IRevNet", "IUNet", "InvertibleCNN", "MixerFlow", "RBIGResult", "ResidualFlow", "RevNet", "RevViT", "fit_rbig",
           "learn_orthonormal_conv"]
