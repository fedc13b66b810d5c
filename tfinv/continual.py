"""Task-agnostic continual learning with a FlowGMM: HCL (hybrid continual learning).

A `tfinv.models.FlowGMM` (one Gaussian per class in latent space) learns from a stream of
labelled batches whose task (the set of classes) changes without notice. It notices a change
from its own statistics (`TaskChangeDetector`: the NLL of incoming batches under the current
model leaves its typical range) and, from then on, protects what it knew with samples of the
model as it was at the change (a frozen copy):

* ``"generative_replay"`` (HCL-GR): replayed pairs ``(x_r, k)`` — ``k`` uniform over the classes
  seen before the change, ``x_r = f_old^{-1}(mu_k + T eps)`` — are trained on with the
  class-conditional NLL beside the incoming batch.
* ``"functional_regularisation"`` (HCL-FR): the latents of the replayed inputs are kept where the
  old flow put them: ``weight * mean_r ||f(x_r) - f_old(x_r)||^2``.
* ``"naive"``: plain fine-tuning on the stream (the baseline that forgets).

Our variant: one frozen copy, refreshed at every detected change (the paper keeps a copy of the
model from the last change too); the detector is a one-sided z-test on the batch NLL against the
batches since the last change (see `TaskChangeDetector`); squared distances are summed over the
latent dimensions and averaged over replayed examples.

References: Kirichenko, Farajtabar, Rao, Lakshminarayanan, Levine, Li, Gorur, "Task-agnostic
Continual Learning with Hybrid Probabilistic Models", arXiv:2106.12772; FlowGMM: Izmailov et al.,
arXiv:1912.13025.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

__all__ = ["HybridContinualLearner", "TaskChangeDetector", "MODES"]

#: Training modes of `HybridContinualLearner`.
MODES = ("naive", "generative_replay", "functional_regularisation")


class TaskChangeDetector:
    """Flags a task change when a batch's statistic is atypically high for the current task.

    ``update(s)`` with ``s`` the mean NLL of an incoming batch under the current model (before
    training on it). With ``mu, sigma`` the mean and standard deviation of the last ``window``
    statistics since the previous change, the batch is a change when ``warmup`` statistics have
    been seen since that change and ``s > mu + num_sigmas * max(sigma, min_sigma)``. After a
    change the history restarts from ``s``. One-sided: the NLL of a task the model has not seen
    is higher, while training on the current task only lowers it.

    Args:
        window: statistics kept for ``mu`` and ``sigma``.
        num_sigmas: the threshold in standard deviations.
        warmup: statistics needed after a change before the next test.
        min_sigma: floor of ``sigma`` (same units as the statistic).
    """

    def __init__(self, window: int = 20, num_sigmas: float = 6.0, warmup: int = 10, min_sigma: float = 0.0):
        if int(window) < 2 or int(warmup) < 2 or int(warmup) > int(window):
            raise ValueError(f"TaskChangeDetector needs 2 <= warmup <= window, got warmup={warmup}, window={window}")
        if not (math.isfinite(num_sigmas) and num_sigmas > 0) or not (math.isfinite(min_sigma) and min_sigma >= 0):
            raise ValueError(f"TaskChangeDetector needs num_sigmas > 0 and min_sigma >= 0, got {num_sigmas}, {min_sigma}")
        self.window, self.num_sigmas, self.warmup = int(window), float(num_sigmas), int(warmup)
        self.min_sigma = float(min_sigma)
        self.history: list[float] = []
        self.changes: list[int] = []
        self.steps = 0

    def threshold(self) -> float | None:
        """``mu + num_sigmas * max(sigma, min_sigma)`` of the current history (``None`` while warming up)."""
        if len(self.history) < self.warmup:
            return None
        recent = np.asarray(self.history[-self.window:], np.float64)
        return float(recent.mean() + self.num_sigmas * max(float(recent.std(ddof=1)), self.min_sigma))

    def update(self, statistic: float) -> bool:
        """Records one batch statistic; True if it marks a task change (its step is appended to ``changes``)."""
        statistic = float(statistic)
        if not math.isfinite(statistic):
            raise ValueError(f"TaskChangeDetector needs finite statistics, got {statistic}")
        limit = self.threshold()
        change = limit is not None and statistic > limit
        if change:
            self.changes.append(self.steps)
            self.history = [statistic]
        else:
            self.history.append(statistic)
            del self.history[:-self.window]
        self.steps += 1
        return change


class HybridContinualLearner:
    """Trains a `tfinv.models.FlowGMM` on a stream of labelled batches with HCL (see module docstring).

    ``step(x, y)``: the detector sees ``mean(-log p(x))`` (the model's marginal NLL, before the
    update); on a change the frozen copy takes the current weights and the classes seen so far
    become the replayed classes; then one optimiser step on
    ``mean(-log p(x | y)) + replay term`` (no replay term before the first change or in
    ``"naive"`` mode). Replayed inputs that the frozen flow maps to inf/NaN are left out of the
    replay term, and a step whose loss or gradient is not finite is skipped (counted in
    ``skipped_steps``) rather than applied.

    Args:
        model: a built, initialised FlowGMM.
        mode: one of `MODES`.
        optimizer: default Adam(1e-3).
        detector: default `TaskChangeDetector()`.
        replay_size: replayed examples per step.
        weight: weight of the replay term (GR: its NLL; FR: the squared latent distance).
        temperature: ``T`` of the replayed samples.
        seed: seed of the replay noise.
        run_eagerly: run the detector statistic and the train step eagerly (debugging, tests)
            instead of as `tf.function`s.
    """

    def __init__(self, model: Any, mode: str = "generative_replay", optimizer: keras.optimizers.Optimizer | None = None,
                 detector: TaskChangeDetector | None = None, replay_size: int = 32, weight: float = 1.0,
                 temperature: float = 1.0, seed: int = 0, run_eagerly: bool = False):
        from tfinv.models.flow_gmm import FlowGMM

        if not isinstance(model, FlowGMM):
            raise ValueError(f"HybridContinualLearner needs a tfinv.models.FlowGMM, got {type(model).__name__}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if int(replay_size) < 1 or not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"need replay_size >= 1 and a finite weight >= 0, got {replay_size}, {weight}")
        self.model, self.mode = model, mode
        self.optimizer = optimizer or keras.optimizers.Adam(1e-3)
        self.optimizer.build(model.trainable_weights)  # its slots exist before any (conditional) update
        self.detector = detector or TaskChangeDetector()
        self.replay_size, self.weight, self.temperature = int(replay_size), float(weight), float(temperature)
        self.old = type(model).from_config(model.get_config())
        self.old.set_weights(model.get_weights())
        self.seen: set[int] = set()
        self.replay_classes: list[int] = []
        self._rng = np.random.default_rng(seed)
        self._seed = int(seed)
        self.steps = 0
        self.skipped_steps = 0
        self._nll = lambda x: -model.log_prob(x)
        self._train = self._train_step
        if not run_eagerly:
            self._nll = tf.function(self._nll, reduce_retracing=True)
            self._train = tf.function(self._train, reduce_retracing=True)

    # ---------------------------------------------------------------- replay
    def replay(self, components: tf.Tensor, eps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``(x_r, z_r)``: ``z_r = mu_k + T eps`` (``k = components``), ``x_r = f_old^{-1}(z_r)``."""
        base = self.old.base
        loc = tf.gather(tf.reshape(base.loc, [base.num_components, -1]), components)
        scale = tf.gather(tf.reshape(tf.exp(base.log_scale), [base.num_components, -1]), components)
        z = tf.reshape(loc + self.temperature * scale * eps, (-1,) + tuple(self.old.latent_shape))
        return tf.stop_gradient(self.old.inverse(z)), z

    @staticmethod
    def _finite_rows(x: tf.Tensor) -> tf.Tensor:
        """1.0 for the examples of ``x`` with only finite entries, else 0.0, shape ``(B,)``."""
        flat = tf.reshape(x, (tf.shape(x)[0], -1))
        return tf.cast(tf.reduce_all(tf.math.is_finite(flat), axis=-1), x.dtype)

    def replay_loss(self, components: tf.Tensor, eps: tf.Tensor) -> tf.Tensor:
        """The replay term of the current mode for the given replay draws (0 in ``"naive"`` mode)."""
        if self.mode == "naive":
            return tf.constant(0.0)
        x_r, z_r = self.replay(components, eps)
        # a replay whose latent or input is inf/NaN (overflowing noise or inverse) is left out
        keep = self._finite_rows(x_r) * self._finite_rows(z_r)
        x_r = tf.where(tf.reshape(keep, [-1] + [1] * (len(x_r.shape) - 1)) > 0, x_r, tf.zeros_like(x_r))
        z_r = tf.where(tf.reshape(keep, [-1] + [1] * (len(z_r.shape) - 1)) > 0, z_r, tf.zeros_like(z_r))
        count = tf.maximum(tf.reduce_sum(keep), 1.0)
        if self.mode == "generative_replay":
            z, log_det = self.model.forward(x_r)
            conditional = tf.gather(self.model.base.component_log_prob(z), components, axis=1, batch_dims=1)
            return self.weight * tf.reduce_sum(keep * -(conditional + log_det)) / count
        z, _ = self.model.forward(x_r)
        flat = tf.reshape(z - z_r, (tf.shape(z)[0], -1))
        return self.weight * tf.reduce_sum(keep * tf.reduce_sum(tf.square(flat), -1)) / count

    def _train_step(self, x, y, components, eps, use_replay):
        with tf.GradientTape() as tape:
            z, log_det = self.model.forward(x)
            conditional = tf.gather(self.model.base.component_log_prob(z), y, axis=1, batch_dims=1)
            loss = tf.reduce_mean(-(conditional + log_det))
            if use_replay:
                loss += self.replay_loss(components, eps)
        grads = tape.gradient(loss, self.model.trainable_weights)
        finite = tf.math.is_finite(loss)
        for g in grads:
            finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(g)))
        # a non-finite loss or gradient skips the update instead of poisoning the weights
        def apply():
            self.optimizer.apply_gradients(zip(grads, self.model.trainable_weights))
            return tf.constant(True)

        tf.cond(finite, apply, lambda: tf.constant(False))
        return loss, finite

    # ---------------------------------------------------------------- stream
    def step(self, x, y) -> dict:
        """One batch of the stream: detect, maybe snapshot, train. Returns ``loss``, ``statistic``, ``change``."""
        x = tf.convert_to_tensor(np.asarray(x, np.float32))
        from tfinv.models.flow_gmm import check_labels

        y = check_labels(y, self.model.num_classes, int(x.shape[0]))
        if np.any(y < 0):
            raise ValueError("HybridContinualLearner needs labelled batches (labels in [0, K)), got -1")
        statistic = float(tf.reduce_mean(self._nll(x)))
        change = self.detector.update(statistic)
        if change:
            self.old.set_weights(self.model.get_weights())
            self.replay_classes = sorted(self.seen)
        self.seen.update(int(c) for c in np.unique(y))
        use_replay = self.mode != "naive" and bool(self.replay_classes)
        components = tf.constant(self._rng.choice(self.replay_classes or [0], self.replay_size), tf.int32)
        eps = tf.constant(self._rng.standard_normal((self.replay_size, self.model.num_dims)), tf.float32)
        loss, finite = self._train(x, tf.constant(y, tf.int32), components, eps, use_replay)  # two traces at most
        self.steps += 1
        if not bool(finite):
            self.skipped_steps += 1
        return {"loss": float(loss), "statistic": statistic, "change": change, "skipped": not bool(finite)}
