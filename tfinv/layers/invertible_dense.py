"""A fully connected invertible layer with an unconstrained square weight (trainable by the
relative gradient)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.export_mode import is_exporting
from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.core.training_mode import in_training
from tfinv.ops import relative_gradient

TRAINING_LOG_DETS = ("exact", "omit")


def _parameter_only(fn):
    """``fn()`` (weights only) folded to a constant while exporting: QR and the matrix inverse
    never reach tf2onnx."""
    if not is_exporting():
        return fn()
    with tf.init_scope():
        value = np.asarray(fn())
    return tf.constant(value)


@keras.saving.register_keras_serializable(package="tfinv")
class InvertibleDense(InvertibleLayer):
    """``z = W x + b`` on the last axis, ``W`` an unconstrained ``D x D`` matrix.

    Inverse: ``x = W^-1 (z - b)``; ``W^-1`` is computed from the weights only (folded to a
    constant at export).
    Log-det: ``log|det W|`` for every vector, from the QR factorisation of ``W`` (no ``slogdet``;
    XLA compiles it; a constant in ONNX).
    Shapes: ``(..., D) -> (..., D)``; event_ndims = 1.

    Gradients (``gradient``): ``"ordinary"`` (default) backpropagates the true gradient, whose
    log-det part is ``W^-T`` (one ``O(D^3)`` inverse per step). ``"relative"``: inside a training
    step (``fit``, or a call with ``training=True``) the gradient reaching ``W`` is Gresele et
    al.'s relative gradient ``(dL/dW) W^T W``, computed in ``O(N D^2)`` for a batch of ``N``
    without any inverse (`tfinv.ops.relative_gradient`); outside training (``tape.gradient`` of
    ``log_prob``) it is the ordinary one. The bias always gets its ordinary gradient.
    ``training_log_det="omit"`` leaves the value of ``log|det W|`` (an ``O(D^3)`` QR) out of the
    training loss while keeping its gradient: ``fit``'s reported loss is then the negative
    log-likelihood plus the omitted ``sum log|det W|``; ``evaluate``, ``log_prob`` and sampling
    are exact.

    ``W`` starts as a random rotation (seeded), ``b`` at 0. ``W`` is not constrained: a singular
    ``W`` (measure zero, and repelled by the ``-log|det W|`` of the loss) has no inverse.

    Args:
        gradient: ``"ordinary"`` or ``"relative"``.
        training_log_det: ``"exact"`` or ``"omit"`` (see above).
        use_bias: learn ``b``.
        seed: seed of the initial rotation.

    References: Gresele, Fissore, Javaloy, Schölkopf & Hyvärinen, "Relative gradient
    optimization of the Jacobian term in unsupervised deep learning", arXiv:2006.15090.
    """

    event_ndims = 1

    def __init__(self, gradient: str = "ordinary", training_log_det: str = "exact", use_bias: bool = True,
                 seed: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        if gradient not in relative_gradient.GRADIENTS:
            raise ValueError(f"InvertibleDense gradient must be one of {relative_gradient.GRADIENTS}, "
                             f"got {gradient!r}")
        if training_log_det not in TRAINING_LOG_DETS:
            raise ValueError(f"InvertibleDense training_log_det must be one of {TRAINING_LOG_DETS}, "
                             f"got {training_log_det!r}")
        self.gradient = gradient
        self.training_log_det = training_log_det
        self.use_bias = bool(use_bias)
        self.seed = int(seed)

    def build(self, input_shape):
        n = self.input_event_shape[-1]
        if n is None:
            raise ValueError(f"InvertibleDense '{self.name}' needs a static last axis, got {tuple(input_shape)}")
        rotation = np.linalg.qr(np.random.default_rng(self.seed).standard_normal((n, n)))[0]
        self.kernel = self.add_weight(name="kernel", shape=(n, n),
                                      initializer=keras.initializers.Constant(rotation))
        self.bias = self.add_weight(name="bias", shape=(n,), initializer="zeros") if self.use_bias else None
        super().build(input_shape)

    def _variable_kernel(self) -> tf.Tensor:
        """``W`` at the variable dtype (parameter-only math stays out of half precision)."""
        with self.variable_precision():
            return tf.convert_to_tensor(self.kernel)

    def _training_gradient(self) -> str:
        return self.gradient if in_training() else "ordinary"

    def _log_abs_det(self, x) -> tf.Tensor:
        training = in_training()
        if is_exporting():
            value = _parameter_only(lambda: relative_gradient.qr_log_abs_det(self._variable_kernel()))
        else:
            kernel = self._variable_kernel()
            value = relative_gradient.log_abs_det(
                kernel, self._training_gradient(),
                value=not (training and self.training_log_det == "omit"))
        return batch_log_det(value, x, self.event_ndims)

    def _forward_and_log_det(self, x):
        z = relative_gradient.dense(x, tf.cast(self.kernel, x.dtype), self._training_gradient())
        if self.use_bias:
            z = z + self.bias
        return z, self._log_abs_det(x)

    def _inverse_and_log_det(self, z):
        inverse = _parameter_only(lambda: tf.linalg.inv(self._variable_kernel()))
        if self.use_bias:
            z = z - self.bias
        return tf.matmul(z, tf.cast(inverse, z.dtype), transpose_b=True), -self._log_abs_det(z)

    def get_config(self):
        return {**super().get_config(), "gradient": self.gradient, "training_log_det": self.training_log_det,
                "use_bias": self.use_bias, "seed": self.seed}
