"""Loading tfinv models from ``.keras`` files, with a clear error for anything else."""

from __future__ import annotations

import os
import zipfile

import keras

from tfinv.core.flow_model import FlowModel


def load_model(path: str | os.PathLike) -> FlowModel:
    """Loads a `FlowModel` saved with ``model.save(path)`` (``safe_mode=True``: no code runs).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is not a ``.keras`` archive or holds something other than a
            tfinv `FlowModel`.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    if not path.endswith(".keras") or not zipfile.is_zipfile(path):
        raise ValueError(f"{path!r} is not a .keras model archive (expected a file saved by model.save)")
    import tfinv.layers, tfinv.models, tfinv.blocks, tfinv.nets, tfinv.inverse_problems  # noqa: F401, E401  (register classes)

    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as err:  # Keras raises many types for foreign or corrupt archives
        raise ValueError(f"{path!r} is not a loadable tfinv model: {err}") from err
    if not isinstance(model, FlowModel):
        raise ValueError(
            f"{path!r} holds a {type(model).__name__}, not a tfinv FlowModel (e.g. tfinv.models.Glow)"
        )
    return model
