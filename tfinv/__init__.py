"""tfinv: invertible neural networks as Keras 3 layers that are also TFP bijectors.

Direction convention: ``forward`` maps data ``x`` to latents ``z`` (the network direction);
``inverse`` maps ``z`` to ``x`` (sampling, for a flow).
"""

__version__ = "0.1.0"

# TensorFlow, TFP and Keras load on first use of an attribute (`from tfinv import layers`,
# `tfinv.FlowModel`), not at `import tfinv`: the ONNX server (tfinv.serving) imports this package
# and must run without them. The `tfinv` console command imports TensorFlow in `tfinv.cli.main`
# (with its start-up logging held back) unless the command needs none (`tfinv serve`).

_LAZY = {"FlowModel": "tfinv.core", "InvertibleLayer": "tfinv.core", "load_model": "tfinv.io"}

__all__ = ["FlowModel", "InvertibleLayer", "data", "layers", "load_model", "models", "__version__"]


def __getattr__(name: str):
    import importlib
    import importlib.util

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif not name.startswith("_") and name not in ("export", "serving") \
            and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
