"""Export of invertible layers and flow models to standard ONNX graphs, forward and inverse.

Pipeline: trace the direction as a ``tf.function`` with a dynamic batch axis (inside
`tfinv.core.exporting()`, so layers can pick export-friendly forms) -> tf2onnx freezes variables
into constants and constant-folds parameter-only work (the 1x1 convolution's ``W^-1`` becomes a
constant: no solver reaches the graph) -> validation, *before any file is written*:

1. ``onnx.checker.check_model(full_check=True)``;
2. every node must be a standard ``ai.onnx`` op with a schema at the chosen opset (tf2onnx
   silently leaves unsupported TensorFlow ops in the graph; they are caught here and reported
   with the layer that emitted them, read from the node's name scope);
3. onnxruntime (CUDA provider when present, CPU otherwise) runs the graph on a test input and
   must match TensorFlow within ``tolerance`` (relative: ``max|a-b| / max(max|b|, 1)``).

Only then is the file written (to a temporary name, then renamed: nothing half-written).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from tfinv.core import FlowModel, InvertibleLayer, exporting
from tfinv.export.errors import ExportError
from tfinv.export.files import atomic_write, check_destination
from tfinv.export.runtime import inference_session
from tfinv.export.signatures import BASE_GRAPHS, GRAPHS, graph_signatures, signatures

SUPPORTED_OPSETS = (17, 18)  # tf2onnx 1.17 supports opsets <= 18; DFT needs >= 17
DIRECTIONS = GRAPHS
_STANDARD_DOMAINS = ("", "ai.onnx")


@dataclasses.dataclass
class OnnxExport:
    """What `to_onnx` wrote and measured."""

    path: pathlib.Path
    direction: str
    opset: int
    input_name: str
    inputs: list[str]
    input_shape: list[int | None]
    outputs: dict[str, list[int | None]]
    max_relative_error: float
    provider: str
    op_types: list[str]
    context_shape: list[int] | None = None  # a conditional subject's second input, "context"

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["path"] = self.path.name
        if d["context_shape"] is None:  # an unconditional export's manifest is as before
            del d["context_shape"]
        return d


# --------------------------------------------------------------------------- subject helpers
def _subject_name(subject) -> str:
    return f"{type(subject).__name__} '{getattr(subject, 'name', '?')}'"


def _io_names(direction: str) -> tuple[str, tuple[str, str]]:
    """The graph's input name and its output names, data output first (the deployment contract)."""
    sig = signatures((1,), (1,))[direction]
    return sig.input_names[0], sig.output_names  # type: ignore[return-value]


def _event_shape(subject, direction: str, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    if input_shape is not None:
        return tuple(int(s) for s in input_shape)
    if isinstance(subject, FlowModel):
        return subject.data_shape if direction == "forward" else subject.latent_shape
    full = subject.built_input_shape
    if full is not None and direction == "inverse":
        full = subject.compute_output_shape(full)
    shape = None if full is None else tuple(full[1:])
    if shape is None or any(s is None for s in shape):
        raise ExportError(f"{_subject_name(subject)}: pass input_shape (event shape without batch)")
    return tuple(shape)


def _direction_fn(subject, direction: str):
    return subject.forward_and_log_det if direction == "forward" else subject.inverse_and_log_det


def _context_shape(subject) -> tuple[int, ...] | None:
    """Event shape of a conditional subject's context (its graphs take ``(value, context)``)."""
    shape = getattr(subject, "context_shape", None)
    return None if shape is None else tuple(int(s) for s in shape)


def default_test_context(subject, batch: int = 3) -> np.ndarray | None:
    """A context for the parity check of a conditional subject (standard normal), else ``None``."""
    shape = _context_shape(subject)
    if shape is None:
        return None
    return np.random.default_rng(1).standard_normal((batch,) + shape).astype(np.float32)


def default_test_input(subject, direction: str, shape: tuple[int, ...], batch: int = 3,
                       context: np.ndarray | None = None) -> np.ndarray:
    """A valid input for the parity check: model samples for a flow's forward (data must lie in
    the data domain), standard normal otherwise."""
    if isinstance(subject, FlowModel) and direction == "forward":
        return np.asarray(subject.sample(batch, temperature=0.7, seed=0, context=context), np.float32)
    rng = np.random.default_rng(0)
    return rng.standard_normal((batch,) + shape).astype(np.float32)


def _check_subject(subject, direction: str, opset: int) -> None:
    if not isinstance(subject, (InvertibleLayer, FlowModel)):
        raise ExportError(
            f"to_onnx exports a tfinv InvertibleLayer or FlowModel, got {type(subject).__name__}"
        )
    if direction not in DIRECTIONS:
        raise ExportError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(
            f"opset {opset} is not supported: tf2onnx 1.17 converts opsets <= 18 and the "
            f"standard DFT op needs >= 17; use one of {SUPPORTED_OPSETS}"
        )
    if not subject.built:
        raise ExportError(f"{_subject_name(subject)} is not built: build or call it before exporting")


# --------------------------------------------------------------------------- conversion
def _layer_of(node_name: str) -> str:
    """The layer scope of a converted node (``level_0/step_1/coupling/Log1p`` -> its prefix)."""
    parts = [p for p in node_name.split("/") if p]
    return "/".join(parts[:-1]) or node_name


def _nonstandard_nodes(model_proto, opset: int) -> list[tuple[str, str, str]]:
    import onnx

    bad = []
    for node in model_proto.graph.node:
        domain = node.domain or ""
        standard = domain in _STANDARD_DOMAINS and onnx.defs.has(node.op_type, opset, domain)
        if not standard:
            bad.append((node.name, domain or "ai.onnx", node.op_type))
    return bad


def _order_outputs(model_proto, names: Sequence[str]) -> None:
    """Puts the graph outputs in the contract's order (tf2onnx sorts them by name: ``log_det``
    first); renaming nothing, so readers that select outputs by name are unaffected."""
    outputs = {o.name: o for o in model_proto.graph.output}
    if set(outputs) != set(names):
        raise ExportError(f"the converted graph has outputs {sorted(outputs)}, expected {list(names)}")
    ordered = [type(outputs[n])() for n in names]
    for copy, name in zip(ordered, names):
        copy.CopyFrom(outputs[name])
    del model_proto.graph.output[:]
    model_proto.graph.output.extend(ordered)


def convert(subject, direction: str = "forward", input_shape: Sequence[int] | None = None,
            opset: int = 17):
    """Converts one direction to an in-memory, validated-standard ONNX ``ModelProto``.

    Raises `ExportError` naming the layer and op if the graph holds anything but standard ONNX.
    """
    _check_subject(subject, direction, opset)
    shape = _event_shape(subject, direction, input_shape)
    in_name, out_names = _io_names(direction)
    spec = [tf.TensorSpec((None,) + shape, tf.float32, name=in_name)]
    fn = _direction_fn(subject, direction)
    context_shape = _context_shape(subject)
    if context_shape is not None:
        spec.append(tf.TensorSpec((None,) + context_shape, tf.float32, name="context"))

    @tf.function(input_signature=spec)
    def graph(value, context=None):
        out, log_det = fn(value) if context is None else fn(value, context)
        return {out_names[0]: tf.identity(out), out_names[1]: tf.identity(log_det)}

    return _to_onnx(graph, spec, out_names, opset, f"{_subject_name(subject)} ({direction})")


def _to_onnx(graph, spec, out_names: Sequence[str], opset: int, what: str):
    """tf2onnx on a ``tf.function`` (inside `exporting()`), outputs in the contract's order, then the
    standard-ops check and ``onnx.checker``; `ExportError` naming ``what`` otherwise."""
    import onnx
    import tf2onnx

    with exporting():
        concrete = graph.get_concrete_function()
        try:
            model_proto, _ = tf2onnx.convert.from_function(graph, input_signature=spec, opset=opset)
        except Exception as err:  # tf2onnx raises bare exceptions for unconvertible graphs
            raise ExportError(f"{what}: tf2onnx failed: {err}") from err
    del concrete
    _order_outputs(model_proto, out_names)
    bad = _nonstandard_nodes(model_proto, opset)
    if bad:
        details = "; ".join(f"layer '{_layer_of(n)}' op {d}:{t}" for n, d, t in bad[:8])
        raise ExportError(f"{what} does not convert to standard ONNX at opset {opset}: {details}")
    try:
        onnx.checker.check_model(model_proto, full_check=True)
    except Exception as err:
        raise ExportError(f"{what}: ONNX checker failed: {err}") from err
    return model_proto


def _specs(sig) -> list:
    return [tf.TensorSpec([None if d == -1 else d for d in s.shape], s.dtype, name=s.name) for s in sig.inputs]


def prepare_base_graph(model: FlowModel, kind: str, opset: int = 17, tolerance: float = 1e-4):
    """The ``sample`` or ``log_prob`` graph of a flow whose base is not the standard normal (see
    `tfinv.export.signatures.BASE_GRAPHS`), converted and checked against TF in memory:
    ``(model_proto, info dict)``."""
    context_shape = _context_shape(model)
    sig = graph_signatures(model.data_shape, model.latent_shape, context_shape, model.base.noise_shape)[kind]
    spec = _specs(sig)
    what = f"{_subject_name(model)} ({kind} graph, base {type(model.base).__name__})"

    def with_context(call, *args, context=None):
        return call(*args) if context is None else call(*args, context)

    if kind == "sample":
        def fn(eps, temperature, context=None):
            z = model.base.sample_latent(eps, temperature)
            return {"x": tf.identity(with_context(model.inverse, z, context=context)), "z": tf.identity(z)}
    elif kind == "log_prob":
        def fn(x, context=None):
            return {"log_prob": tf.identity(with_context(model.log_prob, x, context=context))}
    else:
        raise ExportError(f"unknown base graph {kind!r}; expected one of {BASE_GRAPHS}")
    model_proto = _to_onnx(tf.function(fn, input_signature=spec), spec, sig.output_names, opset, what)

    context = default_test_context(model)
    rng = np.random.default_rng(2)
    if kind == "sample":
        feeds = {"eps": rng.standard_normal((3, *model.base.noise_shape)).astype(np.float32),
                 "temperature": np.asarray(0.7, np.float32)}
    else:
        feeds = {"x": default_test_input(model, "forward", tuple(model.data_shape), context=context)}
    if context is not None:
        feeds["context"] = context
    expected = {k: np.asarray(v) for k, v in fn(**{k: tf.constant(v) for k, v in feeds.items()}).items()}
    session, provider = inference_session(model_proto.SerializeToString())
    got = dict(zip(sig.output_names, session.run(list(sig.output_names), feeds)))
    errors = {k: _relative_error(got[k], v) for k, v in expected.items()}
    worst = max(errors.values())
    if not worst <= tolerance:
        raise ExportError(f"{what}: onnxruntime ({provider}) differs from TensorFlow by {errors} (relative), "
                          f"above the tolerance {tolerance:g}")
    info = {"path": f"{kind}.onnx", "direction": kind, "opset": opset, "input_name": sig.input_names[0],
            "inputs": list(sig.input_names), "input_shapes": {s.name: list(s.shape) for s in sig.inputs},
            "outputs": {o.name: _dims(o) for o in model_proto.graph.output}, "max_relative_error": worst,
            "provider": provider, "op_types": sorted({n.op_type for n in model_proto.graph.node})}
    return model_proto, info


def _relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape or not np.all(np.isfinite(actual)):
        return float("inf")
    return float(np.max(np.abs(actual - expected), initial=0.0)) / max(
        float(np.max(np.abs(expected), initial=0.0)), 1.0)


def _dims(value_info) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def prepare(
    subject,
    direction: str = "forward",
    input_shape: Sequence[int] | None = None,
    opset: int = 17,
    test_input: np.ndarray | None = None,
    tolerance: float = 1e-4,
    test_context: np.ndarray | None = None,
):
    """Converts and validates one direction in memory: ``(model_proto, OnnxExport)``.

    The parity check runs here, so a graph that reaches the disk has already matched TF.
    A conditional subject's graph has a second input, ``context`` (``test_context``, or a
    standard normal default, feeds the check).
    """
    model_proto = convert(subject, direction, input_shape, opset)
    shape = _event_shape(subject, direction, input_shape)
    in_name, out_names = _io_names(direction)
    context_shape = _context_shape(subject)
    context = None
    if context_shape is not None:
        batch = 3 if test_input is None else int(np.shape(test_input)[0])
        context = (default_test_context(subject, batch) if test_context is None
                   else np.asarray(test_context, np.float32))
    if test_input is None:
        value = default_test_input(subject, direction, shape, context=context)
    else:
        value = np.asarray(test_input, np.float32)
    fn = _direction_fn(subject, direction)
    out, log_det = fn(tf.constant(value)) if context is None else fn(tf.constant(value), tf.constant(context))
    expected = {out_names[0]: np.asarray(out), out_names[1]: np.asarray(log_det)}
    session, provider = inference_session(model_proto.SerializeToString())
    feeds = {in_name: value} if context is None else {in_name: value, "context": context}
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    errors = {k: _relative_error(got.get(k), v) for k, v in expected.items()}
    worst = max(errors.values())
    if not worst <= tolerance:
        raise ExportError(
            f"{_subject_name(subject)} ({direction}): onnxruntime ({provider}) differs from "
            f"TensorFlow by {errors} (relative), above the tolerance {tolerance:g}"
        )
    info = OnnxExport(
        path=pathlib.Path(f"{direction}.onnx"),
        direction=direction,
        opset=opset,
        input_name=in_name,
        inputs=[in_name] + ([] if context_shape is None else ["context"]),
        input_shape=[None, *shape],
        outputs={o.name: _dims(o) for o in model_proto.graph.output},
        max_relative_error=worst,
        provider=provider,
        op_types=sorted({n.op_type for n in model_proto.graph.node}),
        context_shape=None if context_shape is None else list(context_shape),
    )
    return model_proto, info


def to_onnx(
    subject,
    path: str | os.PathLike,
    direction: str = "forward",
    input_shape: Sequence[int] | None = None,
    opset: int = 17,
    test_input: np.ndarray | None = None,
    tolerance: float = 1e-4,
    overwrite: bool = False,
) -> OnnxExport:
    """Writes one direction of a tfinv layer or flow model as a standard ONNX graph.

    Args:
        subject: a built `InvertibleLayer` or `FlowModel`.
        path: the ``.onnx`` file to write.
        direction: ``"forward"`` (x -> z, log_det) or ``"inverse"`` (z -> x, log_det; for a flow
            this is sampling with the noise ``z`` as input, since ONNX RNG takes no seed input).
        input_shape: event shape of the input (no batch axis); defaults to the subject's.
        opset: 17 or 18.
        test_input: input of the parity check (batch first); a valid default is drawn.
        tolerance: largest accepted relative error between onnxruntime and TensorFlow.
        overwrite: replace an existing file.

    Returns: an `OnnxExport` with the measured parity and the provider that ran it.
    Raises: `ExportError` (nothing is written) for anything that keeps the export from being a
        standard, correct graph; `FileExistsError` if ``path`` exists and not ``overwrite``.
    """
    path = pathlib.Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    check_destination(path.parent, [path.name], overwrite)
    model_proto, info = prepare(subject, direction, input_shape, opset, test_input, tolerance)
    atomic_write(path, model_proto.SerializeToString())
    info.path = path
    return info
