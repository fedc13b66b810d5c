"""The contract: the layer (`InvertibleLayer`), composition (`InvertibleSequential`), the flow
model (`FlowModel`) and its base distributions (`tfinv.core.distributions`)."""

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.core.invertible_sequential import InvertibleSequential
from tfinv.core import distributions
from tfinv.core.distributions import BaseDistribution, DiagonalGaussian, GaussianMixture, Radial, StandardNormal
from tfinv.core.flow_model import FlowModel
from tfinv.core.export_mode import exporting, is_exporting

__all__ = [
    "BaseDistribution",
    "DiagonalGaussian",
    "FlowModel",
    "GaussianMixture",
    "InvertibleLayer",
    "InvertibleSequential",
    "Radial",
    "StandardNormal",
    "batch_log_det",
    "distributions",
    "exporting",
    "is_exporting",
]
