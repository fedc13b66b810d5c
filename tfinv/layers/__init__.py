"""Invertible layers: each is a Keras layer (``call`` = forward) and a TFP bijector."""

import tfinv.core  # noqa: F401  (first: core completes the core -> blocks -> layers import cycle)
from tfinv.layers.act_norm import ActNorm
from tfinv.layers.additive_coupling import AdditiveCoupling
from tfinv.layers.affine_coupling import AffineCoupling
from tfinv.layers.butterfly_layer import ButterflyLayer
from tfinv.layers.conv_exp import ConvExp
from tfinv.layers.conv_sylvester import ConvSylvester
from tfinv.layers.c_in_c_chain_conv import CInCChainConv
from tfinv.layers.c_in_c_conv import CInCConv
from tfinv.layers.channel_skip import ChannelSkip
from tfinv.layers.cross_unit_coupling import CrossUnitCoupling
from tfinv.layers.cyclic_shift import CyclicShift
from tfinv.layers.data_adaptive_conv import DataAdaptiveConv
from tfinv.layers.eco_conv import ECOConv
from tfinv.layers.emerging_conv import EmergingConv
from tfinv.layers.entropy_weighted_shuffle import EntropyWeightedShuffle
from tfinv.layers.factor_out import FactorOut
from tfinv.layers.f_in_c_conv import FInCConv
from tfinv.layers.full_butterfly_layer import FullButterflyLayer
from tfinv.layers.flatten import Flatten
from tfinv.layers.haar_downsampling import HaarDownsampling
from tfinv.layers.i_map_attention import IMapAttention
from tfinv.layers.i_rev_net_block import IRevNetBlock
from tfinv.layers.i_trans_attention import ITransAttention
from tfinv.layers.inv_conv1x1 import InvConv1x1
from tfinv.layers.inverse_conv import InverseConv
from tfinv.layers.inverse_flow_unit import InverseFlowUnit
from tfinv.layers.inverted import Inverted
from tfinv.layers.invertible_dense import InvertibleDense
from tfinv.layers.invertible_dense_block import InvertibleDenseBlock
from tfinv.layers.invertible_downsampling import InvertibleDownsampling
from tfinv.layers.invertible_residual_block import InvertibleResidualBlock
from tfinv.layers.invertible_upsampling import InvertibleUpsampling
from tfinv.layers.learnable_leaky_relu import LearnableLeakyReLU
from tfinv.layers.learned_prior import LearnedPrior
from tfinv.layers.logit_preprocess import LogitPreprocess
from tfinv.layers.marginal_gaussianization import MarginalGaussianization
from tfinv.layers.me_woodbury import MEWoodbury
from tfinv.layers.monotone_block import MonotoneBlock
from tfinv.layers.orthogonal_downsampling import OrthogonalDownsampling
from tfinv.layers.orthonormal_conv import OrthonormalConv
from tfinv.layers.patchify import Patchify
from tfinv.layers.periodic_conv import PeriodicConv
from tfinv.layers.permute import Permute
from tfinv.layers.quad_coupling import QuadCoupling
from tfinv.layers.raster_emerging_conv import RasterEmergingConv
from tfinv.layers.real_dft import RealDFT
from tfinv.layers.rev_res_block import RevResBlock
from tfinv.layers.rev_vit_block import RevViTBlock
from tfinv.layers.reverse import Reverse
from tfinv.layers.s_log import SLog
from tfinv.layers.sequence_act_norm import SequenceActNorm
from tfinv.layers.smooth_leaky_relu import SmoothLeakyReLU
from tfinv.layers.soft_clamp_affine_coupling import SoftClampAffineCoupling
from tfinv.layers.spectral_filter_coupling import SpectralFilterCoupling
from tfinv.layers.squeeze import Squeeze
from tfinv.layers.symmetric_conv import SymmetricConv
from tfinv.layers.vector_act_norm import VectorActNorm
from tfinv.layers.vector_affine_coupling import VectorAffineCoupling
from tfinv.layers.vector_inv_linear import VectorInvLinear
from tfinv.layers.woodbury import Woodbury

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "ButterflyLayer",
    "CInCChainConv",
    "CInCConv",
    "ConvExp",
    "CrossUnitCoupling",
    "ConvSylvester",
    "CyclicShift",
    "DataAdaptiveConv",
    "ECOConv",
    "EmergingConv",
    "EntropyWeightedShuffle",
    "FInCConv",
    "FullButterflyLayer",
    "FactorOut",
    "Flatten",
    "HaarDownsampling",
    "IMapAttention",
    "IRevNetBlock",
    "ITransAttention",
    "InvConv1x1",
    "InverseConv",
    "InverseFlowUnit",
    "Inverted",
    "InvertibleDense",
    "InvertibleDenseBlock",
    "InvertibleResidualBlock",
    "LearnableLeakyReLU",
    "LearnedPrior",
    "LogitPreprocess",
    "MEWoodbury",
    "MarginalGaussianization",
    "MonotoneBlock",
    "OrthogonalDownsampling",
    "OrthonormalConv",
    "ChannelSkip",
    "InvertibleDownsampling",
    "InvertibleUpsampling",
    "Patchify",
    "PeriodicConv",
    "Permute",
    "QuadCoupling",
    "RasterEmergingConv",
    "RealDFT",
    "RevResBlock",
    "RevViTBlock",
    "Reverse",
    "SLog",
    "SequenceActNorm",
    "SmoothLeakyReLU",
    "SoftClampAffineCoupling",
    "SpectralFilterCoupling",
    "Squeeze",
    "SymmetricConv",
    "VectorActNorm",
    "VectorAffineCoupling",
    "VectorInvLinear",
    "Woodbury",
]
