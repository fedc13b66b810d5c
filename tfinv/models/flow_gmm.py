"""FlowGMM: a normalizing flow with one Gaussian-mixture component per class (semi-supervised).

References: Izmailov, Kirichenko, Finzi & Wilson, "Semi-Supervised Learning with Normalizing
Flows", arXiv:1912.13025.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import math

import numpy as np
import tensorflow as tf

from tfinv.core.distributions import GaussianMixture
from tfinv.core.flow_model import FlowModel, _check_sample_arguments
from tfinv.core.invertible_layer import InvertibleLayer

__all__ = ["FlowGMM", "UNLABELLED", "check_labels", "oversample_labelled", "semi_supervised_labels"]

#: The sentinel label of an unlabelled example.
UNLABELLED = -1


def check_labels(labels: Any, num_classes: int, num_examples: int | None = None) -> np.ndarray:
    """``labels`` as int64 ``(N,)``, each in ``[-1, num_classes)`` (``-1``: unlabelled).

    Raises:
        ValueError: labels are not integers of shape ``(N,)`` (``N = num_examples`` if given) or
            lie outside ``[-1, num_classes)``.
    """
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"FlowGMM labels must have shape (N,), got {array.shape}")
    if num_examples is not None and len(array) != int(num_examples):
        raise ValueError(f"FlowGMM needs one label per example: expected ({num_examples},), got {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(f"FlowGMM labels must be integers in [-1, {num_classes}), got dtype {array.dtype}")
    array = array.astype(np.int64)
    bad = (array < UNLABELLED) | (array >= int(num_classes))
    if np.any(bad):
        raise ValueError(
            f"FlowGMM labels must lie in [-1, {num_classes}) (-1 = unlabelled, 0..{int(num_classes) - 1} "
            f"= classes), got {sorted(set(array[bad].tolist()))[:5]}"
        )
    return array


def semi_supervised_labels(labels: Any, num_labelled: int, num_classes: int, seed: int = 0) -> np.ndarray:
    """A copy of ``labels`` in which all but ``num_labelled`` examples carry the sentinel ``-1``.

    The kept labels are class-balanced: ``num_labelled // K`` per class, the remainder drawn at
    random from the rest (seeded). ``num_labelled`` equal to the number of examples keeps every
    label, whatever the class sizes.

    Raises:
        ValueError: ``num_labelled`` is negative or larger than the number of examples, a class
            has fewer examples than its share (when some labels are dropped), or a label lies
            outside ``[0, num_classes)``.
    """
    labels = check_labels(labels, num_classes)
    if np.any(labels < 0):
        raise ValueError("semi_supervised_labels needs fully labelled data (labels in [0, K)), got some -1")
    n, k = len(labels), int(num_labelled)
    if not 0 <= k <= n:
        raise ValueError(f"num_labelled must be in [0, {n}] (the number of examples), got {num_labelled}")
    if k == n:  # every label kept: nothing to balance (unequal classes must not fail)
        return labels.astype(np.int64, copy=True)
    rng = np.random.default_rng(seed)
    per_class = k // int(num_classes)
    keep: list[int] = []
    for c in range(int(num_classes)):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise ValueError(f"class {c} has {len(members)} examples, fewer than the {per_class} labels asked per class")
        keep.extend(rng.permutation(members)[:per_class].tolist())
    rest = np.setdiff1d(np.arange(n), np.asarray(keep, np.int64))
    keep.extend(rng.permutation(rest)[: k - len(keep)].tolist())
    out = np.full(n, UNLABELLED, np.int64)
    out[keep] = labels[keep]
    return out


def oversample_labelled(images: Any, labels: Any, fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """All examples, the labelled ones (``label >= 0``) repeated so that they make about ``fraction``
    of the result (at least once each); the paper also oversamples its few labels.

    Raises:
        ValueError: ``fraction`` not in ``(0, 1)`` or ``images`` and ``labels`` of different lengths.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"the labelled fraction must be in (0, 1), got {fraction}")
    images, labels = np.asarray(images), np.asarray(labels)
    if len(images) != len(labels):
        raise ValueError(f"need one label per image: {len(images)} images, {len(labels)} labels")
    labelled = np.flatnonzero(labels != UNLABELLED)
    unlabelled = np.flatnonzero(labels == UNLABELLED)
    if len(labelled) == 0 or len(unlabelled) == 0:
        return images, labels
    repeats = max(1, int(round(fraction * len(unlabelled) / ((1.0 - fraction) * len(labelled)))))
    index = np.concatenate([unlabelled, np.tile(labelled, repeats)])
    return images[index], labels[index]


@keras.saving.register_keras_serializable(package="tfinv")
class FlowGMM(FlowModel):
    """A flow ``z = f(x)`` with the base ``p(z) = (1/K) sum_k N(z; mu_k, I)``, one component per class.

    Class-conditional density: ``log p(x | y) = log N(f(x); mu_y, I) + log|det df/dx|``.
    Marginal: ``log p(x) = logsumexp_k(log N(f(x); mu_k, I) - log K) + log|det df/dx|``.
    Classifier (Bayes' rule): ``p(y | x) = softmax_k(log N(f(x); mu_k, I) + log w_k)``; the
    ``log|det|`` is common to all classes and cancels.

    Training loss (per example, averaged over the batch): labelled ``(x, y)`` with ``y >= 0``:
    ``-log p(x | y)`` (the class-conditional NLL); unlabelled (``y = -1``): ``-log p(x)``. ``fit``
    takes ``(x, labels)`` with ``-1`` marking unlabelled examples, or ``x`` alone (all unlabelled).

    Means are fixed draws ``mean_scale * N(0, I)`` (seeded, as in the paper's image experiments,
    which keep them fixed; ``trainable_means=True`` learns them); scales are 1 and weights uniform
    and do not train.

    Consistency regulariser (``consistency_weight = lambda > 0``; the paper's §4): for an
    unlabelled input seen as two perturbations ``x'`` and ``x''``, the extra loss
    ``lambda(t) * -log p(x' | y'')`` with ``y'' = argmax_k p(k | x'')`` held constant (no gradient
    through the prediction): the flow is pulled to put ``x'`` into the component it assigns to
    ``x''``. ``x'`` is the training input itself (random dequantisation plus the pipeline's own
    augmentation) and ``x''`` a random translation of it by up to ``consistency_shift`` pixels
    per axis with zero fill (the reference code's random crop with padding; digits have a zero
    background). The term is averaged over the whole batch (labelled examples contribute zero;
    the reference code also applies it to labelled ones) and ``lambda(t)`` ramps up linearly over
    the first ``consistency_rampup`` optimiser steps. Only in training (``fit``), never in
    ``evaluate``; one extra forward pass per step.

    Inverse / Log-det: those of the flow. Shapes: ``x (B,) + input_shape``; ``predict_proba(x)``
    ``(B, K)``. References: Izmailov et al., arXiv:1912.13025.

    Args:
        layers: the invertible layers (data -> latent), e.g. `tfinv.models.glow.glow_layers(...)`;
            `FlowGMM.glow` builds a Glow.
        input_shape: shape of one example.
        num_classes: ``K``.
        mean_scale: standard deviation of the fixed class means.
        trainable_means: learn the means.
        seed: seed of the means.
        consistency_weight: ``lambda`` of the consistency regulariser (0: off).
        consistency_shift: largest translation (pixels, per axis) of the second perturbation.
        consistency_rampup: optimiser steps over which ``lambda(t)`` grows linearly to ``lambda``.
        base: a `GaussianMixture` with ``K`` components (given when deserialising; built otherwise).
        **kwargs: `FlowModel` arguments.
    """

    def __init__(
        self,
        layers: InvertibleLayer | Sequence[InvertibleLayer | dict] | dict | None = None,
        input_shape: Sequence[int] | None = None,
        num_classes: int = 10,
        mean_scale: float = 1.0,
        trainable_means: bool = False,
        seed: int = 0,
        consistency_weight: float = 0.0,
        consistency_shift: int = 1,
        consistency_rampup: int = 1,
        base: GaussianMixture | dict | None = None,
        **kwargs: Any,
    ):
        if int(num_classes) < 2:
            raise ValueError(f"FlowGMM needs num_classes >= 2, got {num_classes}")
        if kwargs.get("context_shape") is not None:
            raise ValueError("FlowGMM is unconditional: the class is the mixture component, not a context")
        self.num_classes = int(num_classes)
        self.mean_scale = float(mean_scale)
        self.trainable_means = bool(trainable_means)
        self.seed = int(seed)
        if not (math.isfinite(float(consistency_weight)) and float(consistency_weight) >= 0.0):
            raise ValueError(f"FlowGMM consistency_weight must be finite and >= 0, got {consistency_weight}")
        if int(consistency_shift) < 0 or int(consistency_rampup) < 1:
            raise ValueError(
                f"FlowGMM needs consistency_shift >= 0 and consistency_rampup >= 1, got {consistency_shift}, "
                f"{consistency_rampup}"
            )
        self.consistency_weight = float(consistency_weight)
        self.consistency_shift = int(consistency_shift)
        self.consistency_rampup = int(consistency_rampup)
        if base is None:
            base = GaussianMixture(self.num_classes, mean_scale=self.mean_scale,
                                   trainable_means=self.trainable_means, trainable_scales=False,
                                   trainable_weights=False, seed=self.seed, name="base")
        super().__init__(layers, input_shape=input_shape, base=base, **kwargs)
        if not isinstance(self.base, GaussianMixture) or self.base.num_components != self.num_classes:
            raise ValueError(
                f"FlowGMM needs a GaussianMixture base with {self.num_classes} components, got {self.base!r}"
            )

    @classmethod
    def glow(cls, input_shape: Sequence[int] = (8, 8, 1), num_classes: int = 10, levels: int = 2,
             steps_per_level: int = 4, hidden_channels: int = 64, coupling: str = "affine",
             num_levels: int | None = 17, seed: int = 0, **kwargs: Any) -> "FlowGMM":
        """A FlowGMM whose flow is a multi-scale Glow (`tfinv.models.glow.glow_layers`)."""
        from tfinv.models.glow import glow_layers

        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3 or shape[0] % 2**levels or shape[1] % 2**levels:
            raise ValueError(f"FlowGMM.glow needs input_shape (H, W, C) with H, W divisible by {2**levels}, got {shape}")
        layers = glow_layers(int(levels), int(steps_per_level), int(hidden_channels), coupling, num_levels, int(seed))
        return cls(layers, input_shape=shape, num_classes=num_classes, seed=seed, **kwargs)

    @property
    def num_levels(self) -> int | None:
        """Pixel levels of the front `LogitPreprocess` (``None`` if the flow has none)."""
        from tfinv.layers.logit_preprocess import LogitPreprocess

        steps = getattr(self.flow, "steps", [self.flow])
        return int(steps[0].num_levels) if steps and isinstance(steps[0], LogitPreprocess) else None

    # ---------------------------------------------------------------- densities
    def class_logits(self, z: tf.Tensor) -> tf.Tensor:
        """``log N(z; mu_k, Sigma_k) + log w_k``, shape ``(B, K)`` (unnormalised ``log p(k, z)``)."""
        return self.base.component_log_prob(z) + tf.cast(self.base.log_weights, z.dtype)

    def class_conditional_log_prob(self, x, labels) -> tf.Tensor:
        """``log p(x | y)`` per example, ``labels`` in ``[0, K)``."""
        labels = check_labels(labels, self.num_classes)
        if np.any(labels < 0):
            raise ValueError("class_conditional_log_prob needs labels in [0, K), got -1 (use log_prob for the marginal)")
        z, log_det = self.forward(x)
        return tf.gather(self.base.component_log_prob(z), labels, axis=1, batch_dims=1) + log_det

    def negative_log_likelihood(self, x, labels=None) -> tf.Tensor:
        """The training loss per example: class-conditional NLL where ``labels >= 0``, marginal NLL where ``-1``."""
        z, log_det = self.forward(x)
        if labels is not None:
            labels = tf.constant(check_labels(labels, self.num_classes, int(z.shape[0])))
        return self._nll(z, log_det, labels)

    def _nll(self, z, log_det, labels):
        component = self.base.component_log_prob(z)
        marginal = tf.reduce_logsumexp(component + tf.cast(self.base.log_weights, z.dtype), axis=-1)
        if labels is None:
            return -(marginal + log_det)
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        labelled = labels >= 0
        conditional = tf.gather(component, tf.maximum(labels, 0), axis=1, batch_dims=1)
        return -(tf.where(labelled, conditional, marginal) + log_det)

    # ---------------------------------------------------------------- classification
    def predict_proba(self, x, batch_size: int = 256) -> np.ndarray:
        """Class posteriors ``p(y | x)`` (Bayes' rule over the components), shape ``(N, K)``."""
        x = np.asarray(x, np.float32) if not tf.is_tensor(x) else x
        if len(x.shape) != len(self.data_shape) + 1 or tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"FlowGMM expects x of shape (N, {', '.join(map(str, self.data_shape))}), got {tuple(x.shape)}")
        out = []
        for start in range(0, int(x.shape[0]), int(batch_size)):
            z, _ = self.forward(x[start:start + int(batch_size)])
            out.append(tf.nn.softmax(self.class_logits(z), axis=-1).numpy())
        return np.concatenate(out, 0) if out else np.zeros((0, self.num_classes), np.float32)

    def predict(self, x, batch_size: int = 256, **kwargs: Any) -> np.ndarray:
        """Same as `predict_proba`: class probabilities ``(N, K)``, calibrated by construction."""
        return self.predict_proba(x, batch_size=batch_size)

    def predict_classes(self, x, batch_size: int = 256) -> np.ndarray:
        """The most probable class per example, int64 ``(N,)``."""
        return np.argmax(self.predict_proba(x, batch_size), axis=-1)

    # ---------------------------------------------------------------- training
    def fit(self, x=None, y=None, *args: Any, **kwargs: Any):
        """`keras.Model.fit` on ``(x, labels)`` (labels ``-1`` for unlabelled) or ``x`` alone.

        Numpy labels are checked here (``ValueError``); labels inside a dataset are checked in
        the train step (``InvalidArgumentError``).
        """
        if y is not None:
            count = len(x) if isinstance(x, np.ndarray) or tf.is_tensor(x) else None
            y = check_labels(y, self.num_classes, count)
        return super().fit(x, y, *args, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Mean per-example loss: class-conditional NLL on labelled, marginal NLL on unlabelled examples."""
        z, log_det = y_pred
        if y is not None:
            y = tf.cast(tf.reshape(y, [-1]), tf.int32)
            checks = [
                tf.debugging.assert_greater_equal(y, UNLABELLED, message="FlowGMM labels must be >= -1"),
                tf.debugging.assert_less(y, self.num_classes, message=f"FlowGMM labels must be < {self.num_classes}"),
            ]
            with tf.control_dependencies(checks):
                y = tf.identity(y)
        loss = self._loss_from_nll(self._nll(z, log_det, y), sample_weight)
        if training and self.consistency_weight > 0.0 and x is not None:
            loss += self._consistency_scale() * self.consistency_loss(x, z, log_det, y)
        return loss

    # ---------------------------------------------------------------- consistency
    def translate(self, x: tf.Tensor, shifts: tf.Tensor) -> tf.Tensor:
        """``x`` (``(B, H, W, C)``) moved by integer ``shifts`` ``(B, 2)`` (rows, columns), each in
        ``[-s, s]`` with ``s = consistency_shift``; pixels entering from outside are 0."""
        s = self.consistency_shift
        if len(self.data_shape) != 3:
            raise ValueError(f"FlowGMM's consistency translation needs images (H, W, C), got {self.data_shape}")
        if s == 0:
            return x
        height, width = self.data_shape[0], self.data_shape[1]
        padded = tf.pad(x, [[0, 0], [s, s], [s, s], [0, 0]])
        # every possible window, then one per example: (2s+1)^2 crops, cheap for small s
        crops = tf.stack([padded[:, s - dy: s - dy + height, s - dx: s - dx + width, :]
                          for dy in range(-s, s + 1) for dx in range(-s, s + 1)], axis=1)
        shifts = tf.cast(shifts, tf.int32)
        index = (shifts[:, 0] + s) * (2 * s + 1) + (shifts[:, 1] + s)
        return tf.gather(crops, index, axis=1, batch_dims=1)

    def consistency_loss(self, x, z, log_det, labels=None, shifts=None) -> tf.Tensor:
        """``mean_batch(unlabelled * -log p(x | argmax_k p(k | x'')))``, ``x''`` a random translation of ``x``.

        ``z, log_det = forward(x)`` (already computed by the train step); the prediction on
        ``x''`` carries no gradient. ``labels``: ``-1`` marks the unlabelled examples (``None``:
        all are unlabelled). ``shifts`` ``(B, 2)``: the translations (default: uniform in
        ``[-s, s]``, drawn from TensorFlow's global generator).
        """
        x = tf.convert_to_tensor(x, z.dtype)
        if shifts is None:
            shifts = tf.random.uniform([tf.shape(x)[0], 2], -self.consistency_shift, self.consistency_shift + 1,
                                       tf.int32)
        z_other, _ = self.forward(self.translate(x, shifts))
        predicted = tf.stop_gradient(tf.argmax(self.class_logits(z_other), axis=-1, output_type=tf.int32))
        component = self.base.component_log_prob(z)
        nll = -(tf.gather(component, predicted, axis=1, batch_dims=1) + log_det)
        if labels is not None:
            unlabelled = tf.cast(tf.equal(tf.reshape(labels, [-1]), UNLABELLED), nll.dtype)
            nll = nll * unlabelled
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return tf.reduce_mean(nll) / replicas

    def _consistency_scale(self) -> tf.Tensor:
        """``lambda(t) = lambda * min(1, (t + 1) / rampup)``, ``t`` the optimiser's step count."""
        step = tf.cast(self.optimizer.iterations, tf.float32) if self.optimizer is not None else tf.constant(0.0)
        ramp = tf.minimum(1.0, (step + 1.0) / float(self.consistency_rampup))
        return self.consistency_weight * ramp

    # ---------------------------------------------------------------- class-conditional sampling
    def sample_classes(self, labels, temperature: float = 1.0, seed: int | None = None) -> tf.Tensor:
        """One sample of ``p(x | y)`` per entry of ``labels`` (ints in ``[0, K)``): ``f^{-1}(mu_y + T eps)``."""
        labels = check_labels(labels, self.num_classes)
        if labels.size == 0 or np.any(labels < 0):
            raise ValueError(f"sample_classes needs a non-empty array of labels in [0, {self.num_classes})")
        _, temperature = _check_sample_arguments(len(labels), temperature, self.compute_dtype)
        shape = (len(labels),) + tuple(self.base.noise_shape)
        eps = (tf.random.normal(shape) if seed is None
               else tf.random.stateless_normal(shape, seed=[int(seed), 0]))
        z = self.base.sample_latent(eps, temperature, component=tf.constant(labels, tf.int32))
        return self.inverse(z)

    def interpolate(self, z_from, z_to, num_steps: int) -> tf.Tensor:
        """Images ``f^{-1}((1 - t) z_from + t z_to)`` for ``t = 0, 1/(n-1), ..., 1``; shape ``(n,) + data_shape``.

        ``z_from``, ``z_to``: latents of shape ``latent_shape`` (e.g. ``base.loc[k]``, a class mean,
        or ``forward(x)[0][i]``).
        """
        if int(num_steps) < 2:
            raise ValueError(f"interpolate needs num_steps >= 2, got {num_steps}")
        z_from = tf.reshape(tf.cast(z_from, tf.float32), (1, -1))
        z_to = tf.reshape(tf.cast(z_to, tf.float32), (1, -1))
        if z_from.shape[1] != self.num_dims or z_to.shape[1] != self.num_dims:
            raise ValueError(f"interpolate needs latents of {self.num_dims} entries, got {z_from.shape[1]}, {z_to.shape[1]}")
        t = tf.reshape(tf.linspace(0.0, 1.0, int(num_steps)), (-1, 1))
        z = (1.0 - t) * z_from + t * z_to
        return self.inverse(tf.reshape(z, (int(num_steps),) + tuple(self.latent_shape)))

    # ---------------------------------------------------------------- config
    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes, "mean_scale": self.mean_scale,
                "trainable_means": self.trainable_means, "seed": self.seed,
                "consistency_weight": self.consistency_weight, "consistency_shift": self.consistency_shift,
                "consistency_rampup": self.consistency_rampup}
