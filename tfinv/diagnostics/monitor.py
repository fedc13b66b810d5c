"""`InvertibilityMonitor`: a Keras callback that records invertibility bounds every epoch and
warns when the reconstruction error crosses a threshold."""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, Sequence

import keras
import numpy as np

from tfinv.diagnostics.report import ERROR_THRESHOLD, bi_lipschitz, invertible_subject
from tfinv.diagnostics.stress import error_summary, reconstruction_errors, stress_sets

__all__ = ["InvertibilityMonitor", "InvertibilityWarning"]

logger = logging.getLogger("tfinv.diagnostics")


class InvertibilityWarning(RuntimeWarning):
    """The model's inverse no longer reconstructs its inputs to the monitored tolerance."""


class InvertibilityMonitor(keras.callbacks.Callback):
    """Records the model's bi-Lipschitz estimates and reconstruction errors after every epoch.

    On ``data`` (a fixed batch), after each ``every``-th epoch: the local Lipschitz constants of
    the forward and inverse maps (power iteration, `tfinv.diagnostics.bi_lipschitz`; the maxima
    over the batch) and the relative reconstruction error ``|f^-1(f(x)) - x| / |x|`` (the maximum
    over the examples) on each of the stress test's sets (`tfinv.diagnostics.stress_sets`). They
    go into the epoch's ``logs`` — so into ``model.fit``'s ``History`` — as
    ``invertibility_forward_lipschitz``, ``invertibility_inverse_lipschitz``,
    ``invertibility_condition_number``, ``invertibility_reconstruction_error`` (the worst set) and
    ``invertibility_reconstruction_error_<set>``; and into ``self.records`` (one dict per check).
    When the worst error exceeds ``threshold`` (or is not finite) the callback issues an
    `InvertibilityWarning` (Python ``warnings``) and a warning on the ``tfinv.diagnostics`` logger.

    Args:
        data: the batch checked (``B >= 2`` inputs of the model; a conditional model: ``(x, context)``).
        threshold: relative reconstruction error above which it warns.
        sets: names of the stress sets checked (``in_distribution``, ``interpolation``,
            ``uniform_noise``, ``scaled_x2``, ``scaled_x4``...).
        iterations: power iterations per estimate (the estimates are lower bounds; few are enough
            to follow a trend).
        every: check every ``every`` epochs (the last epoch of ``fit`` is checked only if it falls
            on that schedule).
        seed: seed of the start vectors and of the stress sets.
        domain: ``(low, high)`` of valid inputs for the noise and scaled sets; default the model's
            (``(0, L)`` after a `LogitPreprocess`), else unbounded.

    References: Behrmann et al., arXiv:2006.09347 (monitoring the bi-Lipschitz constants during
    training; their remedy, a Lipschitz penalty, is not part of this callback).
    """

    def __init__(self, data: Any, threshold: float = ERROR_THRESHOLD,
                 sets: Sequence[str] = ("in_distribution", "interpolation", "uniform_noise", "scaled_x2"),
                 iterations: int = 5, every: int = 1, seed: int = 0,
                 domain: tuple[float, float] | None = None):
        super().__init__()
        if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
            raise ValueError(f"InvertibilityMonitor threshold must be a finite number > 0, got {threshold!r}")
        if int(iterations) < 1 or int(every) < 1:
            raise ValueError(f"InvertibilityMonitor needs iterations >= 1 and every >= 1, got {iterations}, {every}")
        if isinstance(data, (tuple, list)) and len(data) == 2:
            self.data, self.context = data
        else:
            self.data, self.context = data, None
        self.threshold = float(threshold)
        self.sets = tuple(sets)
        self.iterations = int(iterations)
        self.every = int(every)
        self.seed = int(seed)
        self.domain = domain
        self.records: list[dict[str, Any]] = []

    def check(self) -> dict[str, float]:
        """Runs the check now on ``self.model``; returns the values logged (see the class docstring)."""
        from tfinv.diagnostics.report import _domain, _maps
        from tfinv.diagnostics.tracing import trace_layers

        subject = invertible_subject(self.model, self.data, self.context)
        if self.domain is None:  # the model's, found once (its first layer does not change)
            self.domain = _domain(trace_layers(subject.layer, subject.inputs, subject.context)[:1], subject) \
                or "unbounded"
        domain = None if self.domain == "unbounded" else self.domain
        scales = sorted({float(name[len("scaled_x"):]) for name in self.sets if name.startswith("scaled_x")})
        available = stress_sets(subject.inputs.numpy(), domain, scales, self.seed)
        unknown = [name for name in self.sets if name not in available]
        if unknown:
            raise ValueError(f"InvertibilityMonitor: unknown stress sets {unknown}; expected some of {sorted(available)}")
        bounds = bi_lipschitz(subject.layer, subject.inputs, subject.context, self.iterations, self.seed)
        forward, inverse = _maps(subject.layer, subject.context)
        values = {
            "invertibility_forward_lipschitz": float(np.max(bounds["forward"])),
            "invertibility_inverse_lipschitz": float(np.max(bounds["inverse"])),
            "invertibility_condition_number": float(np.max(bounds["condition"])),
        }
        errors = []
        for name in self.sets:
            summary = error_summary(reconstruction_errors(forward, inverse, available[name]))
            errors.append(summary["relative_max"] if not summary["nonfinite"] else math.inf)
            values[f"invertibility_reconstruction_error_{name}"] = errors[-1]
        values["invertibility_reconstruction_error"] = max(errors) if errors else 0.0
        return values

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every:
            return
        values = self.check()
        if logs is not None:
            logs.update(values)
        self.records.append({"epoch": int(epoch), **values})
        worst = values["invertibility_reconstruction_error"]
        if not worst <= self.threshold:
            sets = [name for name in self.sets
                    if not values[f"invertibility_reconstruction_error_{name}"] <= self.threshold]
            message = (f"epoch {epoch + 1}: relative reconstruction error |f^-1(f(x)) - x| / |x| = {worst:.3g} "
                       f"exceeds {self.threshold:g} on {', '.join(sets)} (inverse Lipschitz estimate "
                       f"{values['invertibility_inverse_lipschitz']:.3g}, condition number "
                       f"{values['invertibility_condition_number']:.3g})")
            logger.warning("tfinv: %s", message)
            warnings.warn(message, InvertibilityWarning, stacklevel=2)
