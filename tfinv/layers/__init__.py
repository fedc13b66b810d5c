"""Invertible layers: each is a Keras layer (``call`` = forward) and a TFP bijector."""

from tfinv.layers.act_norm import ActNorm
from tfinv.layers.additive_coupling import AdditiveCoupling
from tfinv.layers.affine_coupling import AffineCoupling
from tfinv.layers.inv_conv1x1 import InvConv1x1
from tfinv.layers.logit_preprocess import LogitPreprocess
from tfinv.layers.permute import Permute
from tfinv.layers.reverse import Reverse
from tfinv.layers.squeeze import Squeeze

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "InvConv1x1",
    "LogitPreprocess",
    "Permute",
    "Reverse",
    "Squeeze",
]
