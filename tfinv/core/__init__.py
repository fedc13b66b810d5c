"""The layer contract (`InvertibleLayer`) and the flow model (`FlowModel`)."""

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.core.flow_model import FlowModel
from tfinv.core.export_mode import exporting, is_exporting

__all__ = ["FlowModel", "InvertibleLayer", "batch_log_det", "exporting", "is_exporting"]
