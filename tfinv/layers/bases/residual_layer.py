"""Shared machinery of invertible residual layers ``y = x + g(x)`` with ``Lip(g) <= c < 1``
(`InvertibleResidualBlock`, `InvertibleDenseBlock`): fixed-point inverse with a convergence
report, and the power-series log-det — stochastic in training, deterministic otherwise.
The math lives in `tfinv.ops.residual`.

Log-det contract: these layers declare ``log_det_is_exact = False``. Their forward log-det is
an estimate of ``log det(I + J_g)``:

* in a training step (Keras ``training=True``, e.g. inside ``fit``): Hutchinson probes drawn
  fresh, and either the unbiased Russian-roulette series (Residual Flows) or a truncated series
  (i-ResNet), with the Neumann-series gradient and optionally the memory-saving backward pass;
* otherwise (evaluation, sampling, export): a *deterministic* form — ``inference_terms`` series
  terms with either the exact trace (all ``D`` basis vectors as probes; ``inference_probes=None``)
  or ``inference_probes`` fixed Gaussian probes stored with the weights. Its only error is the
  series truncation (``<= D c^(n+1) / ((n+1)(1-c))``) plus, with stored probes, the probes'
  sampling error, which is fixed (the same for every call).

`dense_log_det` gives the exact value from the dense Jacobian (tests, small inputs only).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.core.training_mode import in_training
from tfinv.ops import residual as ops
from tfinv.nets.lipschitz_net import LipschitzNet
from tfinv.ops.spectral_norm import check_coefficient

ESTIMATORS = ("roulette", "series")


class FixedPointError(RuntimeError):
    """The fixed-point inverse of a residual layer did not reach its tolerance."""


class ResidualLayer(InvertibleLayer):
    """Base of ``y = x + g(x)`` layers; subclasses provide ``self.net`` with ``linearize(x) ->
    (g(x), jvp)``, ``update_spectral_norm()``, ``refresh_spectral_norm()`` and ``lipschitz_bound()``.

    Args:
        coefficient: ``c`` in (0, 1): every spectrally normalised map of ``g`` has norm ``<= c``.
        estimator: training-time log-det, ``"roulette"`` (unbiased) or ``"series"`` (truncated).
        series_terms: terms of the truncated training series.
        exact_terms: terms always evaluated by the roulette estimator (``N = exact_terms + M``).
        survival: ``P(M >= m) = survival^m`` (geometric; Residual Flows use 0.5).
        training_probes: Hutchinson probes per example in training.
        neumann_gradient: use the Neumann-series gradient (no graph through the series).
        memory_efficient: compute the log-det's gradient inside the forward pass and keep only
            it (Residual Flows' memory-saving backward pass). Assumes every example's log-det gets
            the same upstream gradient (a mean or sum of per-example losses, as in
            ``FlowModel.fit``); a different one raises in the backward pass.
        inference_terms: series terms of the deterministic (evaluation/export) log-det.
        inference_probes: ``None``: the exact trace with ``D`` basis probes; an int: that many
            fixed, seeded Gaussian probes stored as a non-trainable weight.
        inverse_tolerance: the fixed-point iteration stops when a step is at most
            ``tolerance * max(max|z|, 1)`` (the error of ``x`` is then ``<= c / (1 - c)`` times it).
        max_inverse_iterations: cap on fixed-point steps; not converged by then is an error in
            eager mode and under ``validate_args`` (in graphs, read the flag of `inverse_with_info`).
        seed: seed of the kernels and the stored probes.
    """

    full_precision = True  # fixed-point iterations do not reach their tolerance in half precision

    log_det_is_exact = False
    #: Which power series the log-det is (`tfinv.ops.residual.power_series_log_det`).
    series = "residual"

    def __init__(self, coefficient: float = 0.97, estimator: str = "roulette", series_terms: int = 5,
                 exact_terms: int = 2, survival: float = 0.5, training_probes: int = 1,
                 neumann_gradient: bool = True, memory_efficient: bool = False,
                 inference_terms: int = 20, inference_probes: int | None = None,
                 inverse_tolerance: float = 1e-6, max_inverse_iterations: int = 100, seed: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        self.coefficient = check_coefficient(coefficient, name)
        if estimator not in ESTIMATORS:
            raise ValueError(f"{name} estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if not 0.0 < float(survival) < 1.0:
            raise ValueError(f"{name} needs 0 < survival < 1, got {survival}")
        for label, value, low in (("series_terms", series_terms, 1), ("exact_terms", exact_terms, 0),
                                  ("training_probes", training_probes, 1),
                                  ("inference_terms", inference_terms, 1),
                                  ("max_inverse_iterations", max_inverse_iterations, 1)):
            if int(value) < low:
                raise ValueError(f"{name} needs {label} >= {low}, got {value}")
        if inference_probes is not None and int(inference_probes) < 1:
            raise ValueError(f"{name} needs inference_probes None (exact trace) or >= 1, got {inference_probes}")
        if not float(inverse_tolerance) > 0:
            raise ValueError(f"{name} needs inverse_tolerance > 0, got {inverse_tolerance}")
        self.estimator = estimator
        self.series_terms = int(series_terms)
        self.exact_terms = int(exact_terms)
        self.survival = float(survival)
        self.training_probes = int(training_probes)
        self.neumann_gradient = bool(neumann_gradient)
        self.memory_efficient = bool(memory_efficient)
        self.inference_terms = int(inference_terms)
        self.inference_probes = None if inference_probes is None else int(inference_probes)
        self.inverse_tolerance = float(inverse_tolerance)
        self.max_inverse_iterations = int(max_inverse_iterations)
        self.seed = int(seed)

    # ------------------------------------------------------------------ build
    def _build_probes(self, input_shape) -> None:
        """The stored Gaussian probes of the deterministic log-det (if ``inference_probes``)."""
        if self.inference_probes is None:
            return
        event = tuple(int(s) for s in input_shape[len(input_shape) - self.event_ndims:])
        rng = np.random.default_rng(self.seed + 7919)
        probes = rng.standard_normal((self.inference_probes, 1) + event)
        self.probes = self.add_weight(name="probes", shape=probes.shape, trainable=False,
                                      initializer=keras.initializers.Constant(probes))

    # ------------------------------------------------------------------ g
    def g(self, x: tf.Tensor) -> tf.Tensor:
        """The residual branch ``g(x)``."""
        return self.net.linearize(x)[0]

    def update_spectral_norm(self) -> None:
        self.net.update_spectral_norm()

    def refresh_spectral_norm(self, iterations: int = 100) -> None:
        """Re-converges every power iteration: call it after assigning weights by hand."""
        self.net.refresh_spectral_norm(iterations)

    def lipschitz_bound(self, iterations: int = 200) -> tf.Tensor:
        """Upper bound on ``Lip(g)`` from fresh power-iteration estimates of the linear maps'
        norms (the net's ``lipschitz_bound``); ``<= c`` unless weights changed without a refresh."""
        return self.net.lipschitz_bound(iterations)

    def check_lipschitz(self, iterations: int = 200, slack: float = 1e-3) -> float:
        """Raises ``ValueError`` if `lipschitz_bound` exceeds ``c`` (relative ``slack`` for the
        estimate's round-off); returns the bound."""
        bound = float(self.lipschitz_bound(iterations))
        if not bound <= self.coefficient * (1 + slack):
            raise ValueError(
                f"{type(self).__name__} '{self.name}': Lip(g) <= {bound:.4f} exceeds the coefficient "
                f"c = {self.coefficient} (were weights assigned without refresh_spectral_norm()?); "
                f"inverse and log-det series are not guaranteed to converge"
            )
        return bound

    # ------------------------------------------------------------------ log-det
    def _event_shape(self, x) -> tuple[int, ...]:
        return tuple(int(s) for s in x.shape[len(x.shape) - self.event_ndims:])

    def _deterministic_log_det(self, x, jvp) -> tf.Tensor:
        batch = tf.shape(x)[0]
        if self.inference_probes is None:
            probes = ops.basis_probes(batch, self._event_shape(x), x.dtype)
        else:
            stored = tf.cast(self.probes, x.dtype)
            probes = tf.broadcast_to(stored, tf.concat([tf.shape(stored)[:1], tf.shape(x)], 0))
        return ops.power_series_log_det(jvp, probes, self.inference_terms, series=self.series)[0]

    def _num_terms(self, seed=None):
        if self.estimator == "series":
            return self.series_terms, 0, 1.0
        return ops.roulette_terms(self.exact_terms, self.survival, seed), self.exact_terms, self.survival

    def _stochastic_log_det(self, x, jvp, probes, num_terms, n_exact, survival) -> tf.Tensor:
        """One estimate (with the configured gradient) at the linearisation ``jvp`` of ``x``."""
        if not self.neumann_gradient:
            return ops.power_series_log_det(jvp, probes, num_terms, n_exact, survival, series=self.series)[0]
        estimate, u = ops.power_series_log_det(jvp, probes, num_terms, n_exact, survival, neumann=True,
                                               series=self.series)
        surrogate = tf.reduce_mean(ops.probe_inner(probes, jvp(u)), axis=0)
        return estimate + surrogate - tf.stop_gradient(surrogate)

    def _training_log_det(self, x, num_probes: int, seed=None):
        """``(g(x), stochastic log-det)`` with fresh probes (stateless when ``seed`` is given)."""
        shape = tf.concat([[num_probes], tf.shape(x)], 0)
        if seed is None:
            probes = tf.random.normal(shape, dtype=x.dtype)
        else:
            probes = tf.random.stateless_normal(shape, seed=seed, dtype=x.dtype)
        num_terms, n_exact, survival = self._num_terms(None if seed is None else seed + [0, 1])
        if not self.memory_efficient:
            g_x, jvp = self.net.linearize(x)
            return g_x, self._stochastic_log_det(x, jvp, probes, num_terms, n_exact, survival)
        g_x = self.g(x)
        return g_x, self._memory_efficient_log_det(x, probes, num_terms, n_exact, survival)

    def _memory_efficient_log_det(self, x, probes, num_terms, n_exact, survival):
        variables = [v.value if hasattr(v, "value") else v for v in self.net.trainable_variables]

        @tf.custom_gradient
        def log_det(x_in):
            with tf.GradientTape() as tape:
                tape.watch(x_in)
                _, jvp = self.net.linearize(x_in)
                value = self._stochastic_log_det(x_in, jvp, probes, num_terms, n_exact, survival)
                total = tf.reduce_sum(value)
            grads = tape.gradient(total, [x_in] + variables)
            grad_x = tf.stop_gradient(grads[0])
            precomputed = {v.ref(): (tf.zeros_like(v) if g is None else tf.stop_gradient(g))
                           for g, v in zip(grads[1:], variables)}

            def backward(upstream, variables=None):
                # The weights' gradient was summed over the batch: valid for equal upstreams only.
                check = tf.debugging.assert_near(
                    upstream, tf.broadcast_to(upstream[:1], tf.shape(upstream)),
                    message="memory_efficient log-det needs the same upstream gradient for every example")
                with tf.control_dependencies([check]):
                    scale = upstream[0]
                shape = tf.concat([tf.shape(upstream), tf.ones([tf.rank(grad_x) - 1], tf.int32)], 0)
                dx = tf.reshape(upstream, shape) * grad_x
                # TF hands over the variables read inside, in its own order.
                return dx, [scale * precomputed[v.ref()] if v.ref() in precomputed else tf.zeros_like(v)
                            for v in (variables or [])]

            return tf.stop_gradient(value), backward

        return log_det(x)

    def estimate_log_det(self, x, estimator: str | None = None, num_probes: int = 1, seed=(0, 0)):
        """One draw of the stochastic training estimator at ``x`` (stateless ``seed``: two ints or an
        int tensor, so a ``tf.function`` over it traces once), shape ``(B,)``;
        for the harness and benchmarks. ``estimator`` overrides the layer's."""
        x = self._check(x, self.input_event_shape, "forward")
        saved = self.estimator
        self.estimator = saved if estimator is None else estimator
        try:
            return self._training_log_det(x, int(num_probes), tf.cast(seed, tf.int32))[1]
        finally:
            self.estimator = saved

    def deterministic_log_det(self, x) -> tf.Tensor:
        """The evaluation/export form of the log-det at ``x`` (what ``forward`` returns outside
        training)."""
        x = self._check(x, self.input_event_shape, "forward")
        return self._deterministic_log_det(x, self.net.linearize(x)[1])

    def dense_log_det(self, x) -> tf.Tensor:
        """Exact ``log det(I + J_g(x))`` from the dense autodiff Jacobian (small inputs only: not
        for jit or export)."""
        x = self._check(x, self.input_event_shape, "forward")
        return ops.dense_log_det(self.g, x, self.series)

    # ------------------------------------------------------------------ hooks
    def _forward_and_log_det(self, x):
        if in_training():
            self.update_spectral_norm()
            g_x, log_det = self._training_log_det(x, self.training_probes)
            return x + g_x, log_det
        g_x, jvp = self.net.linearize(x)
        return x + g_x, self._deterministic_log_det(x, jvp)

    def inverse_with_info(self, z):
        """``(x, iterations, step, converged)``: the fixed-point inverse and its report (``step``:
        the last step relative to ``max(max|z|, 1)``; ``converged``: ``step <= tolerance``)."""
        z = self._check(z, self.output_event_shape, "inverse")
        x, iterations, step = ops.fixed_point_inverse(self.g, z, self.inverse_tolerance,
                                                      self.max_inverse_iterations)
        return x, iterations, step, step <= self.inverse_tolerance

    def _converged(self, x, step, what: str = "inverse"):
        """``x``, after raising (eager) or asserting (``validate_args``) that ``step`` converged."""
        message = (f"{type(self).__name__} '{self.name}': fixed-point {what} did not converge to "
                   f"tolerance {self.inverse_tolerance:g} in {self.max_inverse_iterations} steps "
                   f"(is Lip(g) < 1? see check_lipschitz())")
        if tf.executing_eagerly():
            if not bool(step <= self.inverse_tolerance):
                raise FixedPointError(f"{message}; last relative step {float(step):.3e}")
        elif self.validate_args:
            check = tf.debugging.Assert(step <= self.inverse_tolerance, [message, step])
            with tf.control_dependencies([check]):
                x = tf.identity(x)
        return x

    def _inverse_and_log_det(self, z):
        x, _, step = ops.fixed_point_inverse(self.g, z, self.inverse_tolerance, self.max_inverse_iterations)
        x = self._converged(x, step)
        return x, -self._deterministic_log_det(x, self.net.linearize(x)[1])

    def get_config(self):
        return {**super().get_config(), "coefficient": self.coefficient, "estimator": self.estimator,
                "series_terms": self.series_terms, "exact_terms": self.exact_terms,
                "survival": self.survival, "training_probes": self.training_probes,
                "neumann_gradient": self.neumann_gradient, "memory_efficient": self.memory_efficient,
                "inference_terms": self.inference_terms, "inference_probes": self.inference_probes,
                "inverse_tolerance": self.inverse_tolerance,
                "max_inverse_iterations": self.max_inverse_iterations, "seed": self.seed}


class LipschitzBranchLayer(ResidualLayer):
    """A `ResidualLayer` whose branch ``g`` is a `tfinv.nets.LipschitzNet` (spectrally
    normalised convolutions, or dense layers for vectors, between LipSwish/CLipSwish
    activations): the shared arguments, weights and configuration of `InvertibleResidualBlock`
    and `MonotoneBlock`.

    Args:
        hidden_features: width of ``g``'s hidden layers.
        num_hidden_layers, kernel_size, activation, power_iterations, preactivation: of ``g``
            (see `LipschitzNet`).
        vector: vectors (dense layers, ``event_ndims = 1``) instead of images.
        **kwargs: the log-det, inverse and coefficient options of `ResidualLayer`.
    """

    event_ndims = 3

    def __init__(self, hidden_features: int = 32, num_hidden_layers: int = 2, kernel_size: int = 3,
                 activation: str = "lipswish", power_iterations: int = 5, preactivation: bool = True,
                 vector: bool = False, **kwargs):
        self.vector = bool(vector)
        if self.vector:
            self.event_ndims = 1  # instance override, before the bijector is set up
        super().__init__(**kwargs)
        self.hidden_features = int(hidden_features)
        self.num_hidden_layers = int(num_hidden_layers)
        self.kernel_size = int(kernel_size)
        self.activation = activation
        self.power_iterations = int(power_iterations)
        self.preactivation = bool(preactivation)
        self.net = None

    def build(self, input_shape):
        self.net = LipschitzNet(
            int(input_shape[-1]), self.hidden_features, self.num_hidden_layers, self.kernel_size,
            self.activation, self.coefficient, self.power_iterations, self.preactivation,
            kind="dense" if self.vector else "conv", seed=self.seed, name="g")
        self.net.build(tuple(input_shape))
        self._build_probes(input_shape)
        super().build(input_shape)

    def get_config(self):
        return {**super().get_config(), "hidden_features": self.hidden_features,
                "num_hidden_layers": self.num_hidden_layers, "kernel_size": self.kernel_size,
                "activation": self.activation, "power_iterations": self.power_iterations,
                "preactivation": self.preactivation, "vector": self.vector}
