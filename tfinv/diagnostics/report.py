"""`diagnose`: bi-Lipschitz estimates, condition numbers, log-dets and the exploding-inverse test.

For a model (a `FlowModel`, a classifier holding an invertible part such as `RevViT`) or a single
`InvertibleLayer`, on a batch of data:

* the whole map and every layer of the composition (`tfinv.diagnostics.tracing`), at the inputs
  each layer sees: the local Lipschitz constants of the forward map, ``sigma_max(J_f(x))``, and of
  the inverse, ``sigma_max(J_{f^-1}(f(x))) = 1 / sigma_min(J_f(x))``, by power iteration
  (`tfinv.diagnostics.spectral`); their product is the local condition number; the maxima over
  the batch are the estimates of the bi-Lipschitz constants (lower bounds of the global ones:
  they are taken on data points only, each by a Rayleigh quotient);
* every layer's log-det contribution ``log|det J_f|`` (mean and standard deviation over the
  batch, and per input dimension), and its reconstruction error on its own inputs;
* the exploding-inverse stress test of the whole map (`tfinv.diagnostics.stress`); for a flow
  that starts with a bounded `LogitPreprocess` (whose domain the noise and scaled inputs must
  stay in) also of the flow behind it, on its unbounded domain: scaled logits there are the
  out-of-range inputs of the paper's experiments.

Flags: ``ill_conditioned`` (a local condition number above ``condition_threshold``),
``inexact_inverse`` (a relative reconstruction error above ``error_threshold``), ``non_finite``
(a non-finite estimate or reconstruction).

References: Behrmann et al., "Understanding and Mitigating Exploding Inverses in Invertible
Neural Networks", arXiv:2006.09347.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import Any, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.flow_model import FlowModel
from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.core.invertible_sequential import reduce_to_batch
from tfinv.diagnostics import stress
from tfinv.diagnostics.spectral import local_spectral_norm
from tfinv.diagnostics.tracing import trace_layers
from tfinv.layers.logit_preprocess import LogitPreprocess

__all__ = ["Subject", "bi_lipschitz", "diagnose", "invertible_subject", "load_diagnosable", "plain_autodiff"]

#: Defaults of the flags.
CONDITION_THRESHOLD = 1e3
ERROR_THRESHOLD = 1e-3


@dataclasses.dataclass
class Subject:
    """The invertible map to diagnose and the data mapped to its input.

    Attributes:
        name: the model's (or layer's) name.
        kind: the class name of what was given (``Glow``, ``RevViT``, ``InvConv1x1``...).
        layer: the `InvertibleLayer` (a flow model's composition).
        inputs: the data, as that layer's input.
        context: the context of a conditional map, or ``None``.
        domain: ``(low, high)`` of valid inputs, or ``None`` (unbounded).
    """

    name: str
    kind: str
    layer: InvertibleLayer
    inputs: tf.Tensor
    context: tf.Tensor | None = None
    domain: tuple[float, float] | None = None


def _check_shape(got: tuple, expected: tuple, where: str) -> None:
    if len(got) != len(expected) + 1 or any(e is not None and g != e for g, e in zip(got[1:], expected)):
        raise ValueError(f"{where} expects data of shape (batch, {', '.join(map(str, expected))}), got {got}")


def invertible_subject(model: Any, x: Any, context: Any = None) -> Subject:
    """The invertible part of ``model`` and ``x`` mapped to its input.

    * `FlowModel`: its flow, on ``x``;
    * a model with an invertible ``blocks`` and an ``embed`` (`RevViT`): the reversible stack, on
      the two copies of the embedded tokens it receives;
    * an `InvertibleLayer`: itself (it must be built).

    Raises:
        TypeError: anything else.
        ValueError: an un-built layer, data of the wrong shape, fewer than two examples.
    """
    x = tf.convert_to_tensor(np.asarray(x) if not tf.is_tensor(x) else x)
    if len(x.shape) < 2 or x.shape[0] < 2:
        raise ValueError(f"diagnostics need a batch of at least 2 examples, got shape {tuple(x.shape)}")
    kind = type(model).__name__
    if isinstance(model, FlowModel):
        x = tf.cast(x, model.compute_dtype)
        _check_shape(tuple(x.shape), model.data_shape, f"{kind} '{model.name}'")
        if context is not None:
            context = tf.cast(tf.convert_to_tensor(context), model.compute_dtype)
        elif model.is_conditional:
            raise ValueError(f"{kind} '{model.name}' is conditional: pass context of shape "
                             f"(batch, {', '.join(map(str, model.context_shape))})")
        subject = Subject(model.name, kind, model.flow, x, context)
    elif isinstance(model, InvertibleLayer):
        if not model.built or model.input_event_shape is None:
            raise ValueError(
                f"diagnostics need a built layer: {kind} '{model.name}' is not built; call "
                f"build((batch, ...event shape)) or run it forward once")
        x = tf.cast(x, model.compute_dtype)
        event = tuple(model.input_event_shape)
        _check_shape((x.shape[0],) + tuple(x.shape[len(x.shape) - len(event):]), event, f"{kind} '{model.name}'")
        subject = Subject(model.name, kind, model, x, context)
    elif isinstance(model, keras.Model) and isinstance(getattr(model, "blocks", None), InvertibleLayer) \
            and hasattr(model, "embed"):
        if not model.built:
            raise ValueError(f"diagnostics need a built model: {kind} '{model.name}' is not built")
        tokens = model.embed(tf.cast(x, model.compute_dtype))
        subject = Subject(model.name, kind, model.blocks, tf.concat([tokens, tokens], axis=-1))
    else:
        raise TypeError(
            f"diagnostics expect a FlowModel, an InvertibleLayer or a model with invertible `blocks` "
            f"(RevViT), got {kind}")
    if not subject.layer.built:
        raise ValueError(f"diagnostics need a built model: {type(subject.layer).__name__} "
                         f"'{subject.layer.name}' of {kind} '{model.name}' is not built")
    return subject


def _maps(layer: InvertibleLayer, context):
    def forward(v):
        return layer.forward_and_log_det(v, context)[0]

    def inverse(v):
        return layer.inverse_and_log_det(v, context)[0]

    return forward, inverse


def _stats(values: np.ndarray) -> dict[str, float | int]:
    """Max (``inf`` if any value is not finite), and mean / min / median of the finite values."""
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"max": float("inf"), "mean": float("nan"), "min": float("nan"), "median": float("nan"),
                "nonfinite": int(values.size)}
    return {"max": float(values.max()) if finite.size == values.size else float("inf"),
            "mean": float(finite.mean()), "min": float(finite.min()), "median": float(np.median(finite)),
            "nonfinite": int(values.size - finite.size)}


@contextlib.contextmanager
def plain_autodiff(root: InvertibleLayer) -> Iterator[None]:
    """Turns off ``memory_efficient`` (a memory-saving custom gradient: `ReversibleStack`, the
    residual layers' log-det gradient) in ``root`` and every layer nested in it, and restores it.

    The maps are the same; only their gradients are computed differently, and TensorFlow's
    forward mode (`tf.autodiff.ForwardAccumulator`) cannot go through those custom gradients.
    """
    changed = []
    for layer in root._flatten_layers(include_self=True):
        if getattr(layer, "memory_efficient", None) is True:
            layer.memory_efficient = False
            changed.append(layer)
    try:
        yield
    finally:
        for layer in changed:
            layer.memory_efficient = True


def bi_lipschitz(layer: InvertibleLayer, x: tf.Tensor, context=None, iterations: int = 20,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Per-example local Lipschitz constants of ``layer`` at ``x`` and of its inverse at ``f(x)``.

    Returns ``{"forward": sigma_max(J_f(x)), "inverse": sigma_max(J_{f^-1}(f(x))),
    "condition": forward * inverse}``, each ``(B,)`` (numpy). The maxima over the batch estimate
    the bi-Lipschitz constants ``Lip(f)`` and ``Lip(f^-1)`` from below. Memory-saving custom
    gradients are turned off meanwhile (`plain_autodiff`).
    """
    forward, inverse = _maps(layer, context)
    with plain_autodiff(layer):
        z = forward(x)
        lip_forward = local_spectral_norm(forward, x, iterations, seed).numpy()
        lip_inverse = local_spectral_norm(inverse, z, iterations, seed + 1).numpy()
    return {"forward": lip_forward, "inverse": lip_inverse, "condition": lip_forward * lip_inverse}


def _flags(condition: np.ndarray, relative_error: float, condition_threshold: float,
           error_threshold: float, nonfinite: bool) -> list[str]:
    flags = []
    if nonfinite or not np.all(np.isfinite(condition)) or not math.isfinite(relative_error):
        flags.append("non_finite")
    if np.any(condition > condition_threshold):
        flags.append("ill_conditioned")
    if relative_error > error_threshold:
        flags.append("inexact_inverse")
    return flags


def _layer_entry(trace, iterations: int, seed: int, condition_threshold: float,
                 error_threshold: float) -> tuple[dict, dict[str, np.ndarray]]:
    layer, x, context = trace.layer, trace.inputs, trace.context
    bounds = bi_lipschitz(layer, x, context, iterations, seed)
    forward, inverse = _maps(layer, context)
    _, log_det = layer.forward_and_log_det(x, context)
    log_det = reduce_to_batch(log_det).numpy().astype(np.float64)
    dims = int(np.prod(x.shape[1:]))
    errors = stress.reconstruction_errors(forward, inverse, x)
    summary = stress.error_summary(errors)
    entry = {
        "path": trace.path,
        "class": type(layer).__name__,
        "depth": trace.depth,
        "is_leaf": trace.is_leaf,
        "input_shape": [int(s) for s in x.shape[1:]],
        "forward_lipschitz": _stats(bounds["forward"]),
        "inverse_lipschitz": _stats(bounds["inverse"]),
        "condition_number": _stats(bounds["condition"]),
        "log_det": {"mean": float(log_det.mean()), "std": float(log_det.std()),
                    "per_dim_mean": float(log_det.mean() / dims)},
        "reconstruction_error": summary,
        "flags": _flags(bounds["condition"], summary["relative_max"], condition_threshold, error_threshold,
                        summary["nonfinite"] > 0),
    }
    samples = {"forward": bounds["forward"], "inverse": bounds["inverse"], "log_det_per_dim": log_det / dims}
    return entry, samples


def _domain(traces, subject: Subject) -> tuple[float, float] | None:
    if subject.domain is not None:
        return subject.domain
    first = traces[0].layer if traces else subject.layer
    if isinstance(first, LogitPreprocess) and (not traces or traces[0].inputs.shape == subject.inputs.shape):
        return (0.0, float(first.num_levels))
    return None


def diagnose(model: Any, x: Any, context: Any = None, *, iterations: int = 20, seed: int = 0,
             layers: str = "leaves", stress_test: bool = True, scales: Sequence[float] = (2.0, 4.0),
             condition_threshold: float = CONDITION_THRESHOLD, error_threshold: float = ERROR_THRESHOLD,
             progress: bool = False) -> dict:
    """Invertibility diagnostics of ``model`` on the data batch ``x`` (see the module docstring).

    Args:
        model: a `FlowModel`, a built `InvertibleLayer`, or a model with invertible ``blocks``
            (`RevViT`); see `invertible_subject`.
        x: data ``(B, ...)`` with ``B >= 2`` (the model's input).
        context: the context of a conditional model.
        iterations: power iterations per estimate.
        seed: seed of the start vectors and of the stress sets.
        layers: ``"leaves"`` (the finest layers), ``"all"`` (containers too) or ``"none"``.
        stress_test: run the exploding-inverse test on the whole map.
        scales: the ``S`` of the test's scaled sets.
        condition_threshold: local condition number above which a layer is flagged.
        error_threshold: relative reconstruction error above which a layer or set is flagged.
        progress: show a progress bar over the layers.

    Returns:
        A JSON-ready dict: ``model`` (what was diagnosed), ``bi_lipschitz`` (the whole map),
        ``layers`` (one entry per layer), ``stress_test`` (per set), ``flags`` and ``thresholds``;
        the per-example estimates behind the plots are under the private key ``_samples``
        (dropped by `tfinv.diagnostics.write_report`'s JSON).

    Raises:
        TypeError / ValueError: see `invertible_subject`; ``layers`` not one of the three names.
    """
    if layers not in ("leaves", "all", "none"):
        raise ValueError(f"diagnose layers must be 'leaves', 'all' or 'none', got {layers!r}")
    if int(iterations) < 1:
        raise ValueError(f"diagnose needs iterations >= 1, got {iterations}")
    started = time.perf_counter()
    subject = invertible_subject(model, x, context)
    root, inputs, context = subject.layer, subject.inputs, subject.context
    traces = trace_layers(root, inputs, context)
    selected = [] if layers == "none" else [t for t in traces if layers == "all" or t.is_leaf]
    progbar = keras.utils.Progbar(len(selected) + 1 + int(stress_test), unit_name="part") if progress else None

    whole = bi_lipschitz(root, inputs, context, iterations, seed)
    if progbar:
        progbar.add(1)
    report: dict[str, Any] = {
        "model": {"name": subject.name, "class": subject.kind, "map": type(root).__name__,
                  "input_shape": [int(s) for s in inputs.shape[1:]], "num_examples": int(inputs.shape[0]),
                  "iterations": int(iterations), "seed": int(seed)},
        "bi_lipschitz": {"forward": _stats(whole["forward"]), "inverse": _stats(whole["inverse"]),
                         "condition_number": _stats(whole["condition"])},
        "layers": [],
        "thresholds": {"condition_number": float(condition_threshold),
                       "relative_reconstruction_error": float(error_threshold)},
        "_samples": {"model": {"forward": whole["forward"], "inverse": whole["inverse"]}},
    }
    flags: list[dict] = []
    for index, trace in enumerate(selected):
        entry, samples = _layer_entry(trace, iterations, seed + 2 * (index + 1), condition_threshold,
                                      error_threshold)
        report["layers"].append(entry)
        report["_samples"][trace.path] = samples
        flags += [{"where": trace.path, "flag": flag} for flag in entry["flags"]]
        if progbar:
            progbar.add(1)
    if stress_test:
        domain = _domain(traces, subject)
        # the sets live in the invertible map's input space (a RevViT's: its token streams)
        forward, inverse = _maps(root, context)
        report["stress_test"] = _stress(forward, inverse, inputs.numpy(), domain, scales, seed, error_threshold,
                                        "stress_test", flags)
        behind = _behind_preprocessing(root, context)
        if domain is not None and behind is not None:
            # the paper's setting: the flow proper, on an unbounded domain, fed data scaled beyond
            # the range the bounded preprocessing lets through
            preprocess, forward, inverse = behind
            report["stress_test_behind_preprocessing"] = _stress(
                forward, inverse, preprocess(inputs).numpy(), None, scales, seed, error_threshold,
                "stress_test_behind_preprocessing", flags)
        if progbar:
            progbar.add(1)
    if np.any(whole["condition"] > condition_threshold):
        flags.append({"where": "model", "flag": "ill_conditioned"})
    report["flags"] = flags
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


def _stress(forward, inverse, data: np.ndarray, domain, scales, seed: int, error_threshold: float, where: str,
            flags: list) -> dict:
    sets = stress.stress_sets(data, domain, scales, seed)
    result = {"domain": None if domain is None else list(domain), "sets": {}}
    for name, values in sets.items():
        summary = stress.error_summary(stress.reconstruction_errors(forward, inverse, tf.convert_to_tensor(values)))
        result["sets"][name] = summary
        if summary["nonfinite"]:
            flags.append({"where": f"{where}/{name}", "flag": "non_finite"})
        elif summary["relative_max"] > error_threshold:
            flags.append({"where": f"{where}/{name}", "flag": "inexact_inverse"})
    return result


def _behind_preprocessing(root: InvertibleLayer, context):
    """``(preprocess, forward, inverse)`` of a composition whose first layer is a bounded
    `LogitPreprocess`: the map of the layers after it; ``None`` otherwise."""
    steps = list(getattr(root, "steps", []))
    if len(steps) < 2 or not isinstance(steps[0], LogitPreprocess):
        return None
    rest = steps[1:]

    def preprocess(v):
        return steps[0].forward_and_log_det(v)[0]

    def forward(v):
        for layer in rest:
            v = layer.forward_and_log_det(v, context)[0]
        return v

    def inverse(v):
        for layer in reversed(rest):
            v = layer.inverse_and_log_det(v, context)[0]
        return v

    return preprocess, forward, inverse


def load_diagnosable(path: str) -> Any:
    """Loads a ``.keras`` model that `diagnose` accepts: a `FlowModel` (`tfinv.load_model`) or a
    model with an invertible part (`RevViT`, saved by ``tfinv train --model revvit``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not a ``.keras`` archive, not loadable, or a model with no invertible part.
    """
    import os
    import zipfile

    from tfinv.io import load_model

    path = os.fspath(path)
    try:
        return load_model(path)
    except ValueError as err:
        if not (zipfile.is_zipfile(path) and "not a tfinv FlowModel" in str(err)):
            raise
    model = keras.saving.load_model(path, safe_mode=True)  # loaded once already: a readable archive
    try:
        invertible_subject(model, np.zeros((2,) + tuple(model.image_shape), np.float32)
                           if hasattr(model, "image_shape") else np.zeros((2, 1), np.float32))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path!r} holds a {type(model).__name__}, which has no invertible part to "
                         f"diagnose: expected a tfinv FlowModel (e.g. Glow) or a RevViT ({err})") from None
    return model
