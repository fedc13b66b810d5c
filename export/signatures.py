"""The deployment contract of an exported flow: signature names, inputs, outputs, dtypes, shapes.

Defined once here and used by every part of the deployment: the SavedModel export
(`tfinv.export.saved_model`), the ONNX graphs and their manifest (`tfinv.export.onnx`,
`tfinv.export.manifest`), the ONNX server and the client (`tfinv.serving`). This module imports
neither TensorFlow nor NumPy, so the lean ONNX server can use it.

==================== ============================================ ===============================
signature            inputs                                       outputs (in this order)
==================== ============================================ ===============================
``forward``          ``x`` float32 ``[-1, *data_shape]``          ``z``, ``log_det``
``inverse``          ``z`` float32 ``[-1, *latent_shape]``        ``x``, ``log_det``
``sample``           ``n`` int32 ``[]``, ``seed`` int32 ``[]``,    ``x``, ``z``
                     ``temperature`` float32 ``[]``
``log_prob``         ``x`` float32 ``[-1, *data_shape]``          ``log_prob``
``serving_default``  same as ``log_prob``                         ``log_prob``
==================== ============================================ ===============================

``-1`` is the (dynamic) batch axis. A conditional model (``context_shape`` given) takes one more
input, ``context`` float32 ``[-1, *context_shape]`` (``sample``: ``[n, *context_shape]``), after
the others; an unconditional model's signatures are exactly the table above.

The ONNX export writes the two *graph* signatures (`GRAPHS`: ``forward`` and ``inverse``) as
``forward.onnx`` / ``inverse.onnx`` with these input and output names, outputs in this order (the
data output first). ``log_det`` is ``log|det dz/dx|`` for ``forward`` and ``log|det dx/dz|`` for
``inverse``, one value per example. Code that reads outputs picks them by name.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

__all__ = [
    "DT_NAMES",
    "MODEL_NAME",
    "BASE_GRAPHS",
    "GRAPHS",
    "SIGNATURE_NAMES",
    "Signature",
    "TensorSpec",
    "check_model_name",
    "check_version",
    "graph_signatures",
    "io_names",
    "signatures",
]

#: Every signature an exported flow has, in a stable order.
SIGNATURE_NAMES: tuple[str, ...] = ("forward", "inverse", "sample", "log_prob", "serving_default")

#: The signatures exported as ONNX graphs (the sampling graph is ``inverse``: the noise is an input).
GRAPHS: tuple[str, ...] = ("forward", "inverse")

#: Extra ONNX graphs of a flow whose base distribution is not the standard normal (learned
#: diagonal Gaussian, mixture, radial, ...): ``sample`` maps standard normal noise ``eps`` (shape
#: ``noise_shape``) and ``temperature`` through the base and the inverse flow to ``x, z``;
#: ``log_prob`` is the model's density. With the standard normal base the server computes both
#: from ``inverse``/``forward`` (``z = temperature * eps``; ``log N(z; 0, I) + log_det``).
BASE_GRAPHS: tuple[str, ...] = ("sample", "log_prob")

#: A served model name: it becomes a directory (``<base>/<name>/<version>``) and a URL segment
#: (``/v1/models/<name>``), so letters, digits, ``.``, ``_`` and ``-`` only.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

#: TensorFlow's ``DataType`` enum name of each dtype used here (TF Serving's metadata JSON).
DT_NAMES: dict[str, str] = {"float32": "DT_FLOAT", "int32": "DT_INT32"}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One named tensor of a signature: dtype (``"float32"``/``"int32"``) and shape (``-1`` =
    batch; ``()`` = scalar)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def batched(self) -> bool:
        return self.shape[:1] == (-1,)

    def as_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape)}


@dataclasses.dataclass(frozen=True)
class Signature:
    """A signature: its key and its named inputs and outputs (outputs in the contract's order)."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def batched(self) -> bool:
        """True when every input has a batch axis (row format allowed); ``sample`` takes scalars."""
        return all(spec.batched for spec in self.inputs)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.outputs)

    def input(self, name: str) -> TensorSpec:
        return next(s for s in self.inputs if s.name == name)

    def as_dict(self) -> dict[str, Any]:
        """JSON form (the manifest's ``signatures``): ``{"inputs": {name: {dtype, shape}}, "outputs": ...}``."""
        return {"inputs": {s.name: s.as_dict() for s in self.inputs},
                "outputs": {s.name: s.as_dict() for s in self.outputs}}


def check_model_name(name: object) -> str:
    """Returns ``name`` if it is a valid served model name (`MODEL_NAME`), else raises ValueError."""
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        raise ValueError("model name must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or "
                         f"digit (it becomes a directory and /v1/models/<name> in URLs), got {name!r}")
    return name


def check_version(version: object) -> int:
    """Returns ``version`` if it is a positive int (a SavedModel version directory), else raises."""
    if isinstance(version, bool) or not isinstance(version, int):
        raise TypeError(f"version must be a positive int, got {version!r} ({type(version).__name__})")
    if version < 1:
        raise ValueError(f"version must be a positive int, got {version}")
    return version


def _shape(what: str, shape: Sequence[int]) -> tuple[int, ...]:
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a sequence of positive ints, got {shape!r}") from None
    if any(d < 1 for d in dims) or any(isinstance(s, bool) for s in shape):
        raise ValueError(f"{what} must be a sequence of positive ints, got {list(shape)!r}")
    return dims


def signatures(data_shape: Sequence[int], latent_shape: Sequence[int],
               context_shape: Sequence[int] | None = None) -> dict[str, Signature]:
    """The signatures of a flow with these event shapes (no batch axis), keyed by `SIGNATURE_NAMES`.

    Args:
        data_shape: the shape of one example ``x``, e.g. ``(8, 8, 1)``.
        latent_shape: the shape of one latent ``z``, e.g. ``(64,)``.
        context_shape: the shape of one conditioning input, or ``None`` for an unconditional flow.

    Raises:
        ValueError: a shape is not a sequence of positive ints.
    """
    data = _shape("data_shape", data_shape)
    latent = _shape("latent_shape", latent_shape)
    x = TensorSpec("x", "float32", (-1, *data))
    z = TensorSpec("z", "float32", (-1, *latent))
    log_det = TensorSpec("log_det", "float32", (-1,))
    log_prob_out = TensorSpec("log_prob", "float32", (-1,))
    scalars = (TensorSpec("n", "int32", ()), TensorSpec("seed", "int32", ()), TensorSpec("temperature", "float32", ()))
    context: tuple[TensorSpec, ...] = ()
    if context_shape is not None:
        context = (TensorSpec("context", "float32", (-1, *_shape("context_shape", context_shape))),)
    table = {
        "forward": ((x,), (z, log_det)),
        "inverse": ((z,), (x, log_det)),
        "sample": (scalars, (x, z)),
        "log_prob": ((x,), (log_prob_out,)),
        "serving_default": ((x,), (log_prob_out,)),
    }
    return {key: Signature(key, inputs + context, outputs) for key, (inputs, outputs) in table.items()}


def io_names(conditional: bool = False) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """``{signature: (input names, output names)}``, for code that does not know the shapes (the
    client)."""
    return {key: (sig.input_names, sig.output_names)
            for key, sig in signatures((1,), (1,), (1,) if conditional else None).items()}


def graph_signatures(data_shape: Sequence[int], latent_shape: Sequence[int],
                     context_shape: Sequence[int] | None = None,
                     noise_shape: Sequence[int] | None = None) -> dict[str, Signature]:
    """The inputs and outputs of the ONNX graphs: `GRAPHS` (as the signatures of those names) and
    `BASE_GRAPHS`: ``sample`` takes ``eps`` float32 ``[-1, *noise_shape]`` (default: the latent
    shape), ``temperature`` float32 ``[]`` (and ``context``) and gives ``x``, ``z``; ``log_prob``
    is the signature of that name."""
    sigs = signatures(data_shape, latent_shape, context_shape)
    noise = _shape("noise_shape", latent_shape if noise_shape is None else noise_shape)
    context = tuple(s for s in sigs["forward"].inputs if s.name == "context")
    sample = Signature("sample", (TensorSpec("eps", "float32", (-1, *noise)), TensorSpec("temperature", "float32", ()))
                       + context, sigs["sample"].outputs)
    return {"forward": sigs["forward"], "inverse": sigs["inverse"], "sample": sample, "log_prob": sigs["log_prob"]}
