"""The layers of a composition and the inputs each one sees on a batch.

`trace_layers` runs a layer (or a `FlowModel`'s flow) forward once, eagerly, with every nested
`InvertibleLayer`'s ``forward_and_log_det`` wrapped for the duration of the call to record its
input. It needs no knowledge of the containers (`InvertibleSequential`, `FactorOut`,
`ReversibleStack`, blocks): whatever a container hands a sub-layer is what gets recorded.
A *leaf* is a recorded layer none of whose recorded descendants ran: the finest unit the
diagnostics can see (a layer whose parent calls its math hooks directly stays inside its parent).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator

import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer

__all__ = ["LayerTrace", "trace_layers"]


@dataclasses.dataclass
class LayerTrace:
    """One call of a layer during the traced forward pass.

    Attributes:
        path: names from the root down, joined by ``/`` (``flow/level_0/step_1/actnorm``).
        layer: the layer.
        inputs: the batch it received (forward direction).
        context: the context it received (``None`` for unconditional layers).
        depth: nesting depth below the root (the root's direct children: 1).
        is_leaf: True if no layer nested in it was called.
    """

    path: str
    layer: InvertibleLayer
    inputs: tf.Tensor
    context: tf.Tensor | None
    depth: int
    is_leaf: bool = True


def _nested_paths(root: InvertibleLayer) -> dict[int, tuple[str, int]]:
    """``id(layer) -> (path, depth)`` for every InvertibleLayer nested in ``root`` (first path wins)."""
    paths: dict[int, tuple[str, int]] = {id(root): (root.name, 0)}

    def visit(layer, path: str, depth: int) -> None:
        for child in layer._flatten_layers(include_self=False, recursive=False):
            if isinstance(child, InvertibleLayer) and id(child) not in paths:
                child_path = f"{path}/{child.name}"
                paths[id(child)] = (child_path, depth + 1)
                visit(child, child_path, depth + 1)
            elif not isinstance(child, InvertibleLayer):
                visit(child, path, depth)  # a plain Keras container between invertible layers

    visit(root, root.name, 0)
    return paths


@contextlib.contextmanager
def _recording(root: InvertibleLayer, calls: list) -> Iterator[dict[int, tuple[str, int]]]:
    paths = _nested_paths(root)
    layers = [l for l in root._flatten_layers(include_self=True) if isinstance(l, InvertibleLayer)]
    patched = []
    for layer in layers:
        if id(layer) not in paths or "forward_and_log_det" in vars(layer):
            continue
        bound = layer.forward_and_log_det

        def recorder(x, context=None, *, _layer=layer, _bound=bound):
            calls.append((_layer, tf.convert_to_tensor(x), context))
            return _bound(x, context)

        object.__setattr__(layer, "forward_and_log_det", recorder)  # an instance attribute, removed below
        patched.append(layer)
    try:
        yield paths
    finally:
        for layer in patched:
            object.__delattr__(layer, "forward_and_log_det")


def trace_layers(root: InvertibleLayer, x: tf.Tensor, context: tf.Tensor | None = None) -> list[LayerTrace]:
    """Runs ``root`` forward on ``x`` and returns every nested layer's call in execution order.

    The root itself is not listed. A layer called more than once (shared weights) is listed at
    every call.

    Raises:
        TypeError: ``root`` is not an `InvertibleLayer`.
        ValueError: ``root`` is not built.
    """
    if not isinstance(root, InvertibleLayer):
        raise TypeError(f"trace_layers expects an InvertibleLayer, got {type(root).__name__}")
    if not root.built:
        raise ValueError(f"{type(root).__name__} '{root.name}' is not built: build it (or run it forward once) first")
    calls: list = []
    with _recording(root, calls) as paths:
        root.forward_and_log_det(x, context)
    traces = []
    for layer, inputs, ctx in calls:
        if layer is root or id(layer) not in paths:
            continue
        path, depth = paths[id(layer)]
        traces.append(LayerTrace(path, layer, inputs, ctx, depth))
    called = {t.path for t in traces}
    for trace in traces:
        trace.is_leaf = not any(p.startswith(trace.path + "/") for p in called)
    return traces
