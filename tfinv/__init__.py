"""tfinv: invertible neural networks as Keras 3 layers that are also TFP bijectors.

Direction convention: ``forward`` maps data ``x`` to latents ``z`` (the network direction);
``inverse`` maps ``z`` to ``x`` (sampling, for a flow).
"""

__version__ = "0.1.0"

from tfinv import _startup  # noqa: E402  (stdlib only: runs before TensorFlow is imported)

_startup.import_tensorflow(quiet=_startup.is_quiet_command())

from tfinv.core import FlowModel, InvertibleLayer  # noqa: E402
from tfinv import data, layers, models  # noqa: E402
from tfinv.io import load_model  # noqa: E402

__all__ = ["FlowModel", "InvertibleLayer", "data", "layers", "load_model", "models", "__version__"]
