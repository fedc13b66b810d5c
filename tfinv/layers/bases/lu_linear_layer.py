"""Shared machinery of LU-parameterised linear layers (`InvConv1x1`, `VectorInvLinear`).

``W = P L (U + diag(sign * exp(log_s)))`` acts on the last axis. ``W`` starts as a random
rotation (seeded, factored once with `tfinv.ops.lu.lu_factor_numpy`); ``P`` and ``sign`` are
fixed, ``L``, ``U`` and ``log_s`` are trained (stored packed in one ``n x n`` variable
``lower_upper``: exactly the ``n^2`` free parameters), and ``W`` is invertible for every value of them.
``log|det W| = sum(log_s)``; ``W^-1`` comes from triangular solves on the parameters only, which
an exporter folds into a constant. Reference: Kingma & Dhariwal, Glow, arXiv:1807.03039, §3.2.

Subclasses give ``_apply(x, matrix)`` (how ``W`` meets the data) and ``_positions(x)`` (how many
times ``W`` is applied per event: ``H * W`` for a 1x1 convolution, 1 for a vector).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.ops import lu


class LULinearLayer(InvertibleLayer):
    """Base of the LU-parameterised linear layers (see module docstring).

    Args:
        seed: seed of the random initial rotation.
    """

    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.seed = int(seed)

    def build(self, input_shape):
        n = self.input_event_shape[-1]
        if n is None:
            raise ValueError(f"{type(self).__name__} '{self.name}' needs a static last axis, got {input_shape}")
        rotation = np.linalg.qr(np.random.default_rng(self.seed).standard_normal((n, n)))[0]
        p, lower, upper = lu.lu_factor_numpy(rotation)
        diag = np.diag(upper)
        const = keras.initializers.Constant
        self.permutation = self.add_weight(name="permutation", shape=(n, n), initializer=const(p), trainable=False)
        self.sign = self.add_weight(name="sign", shape=(n,), initializer=const(np.sign(diag)), trainable=False)
        # One trained matrix holding exactly the free parameters: L's strict lower triangle,
        # U's strict upper triangle and log|U_ii| on the diagonal (n^2 numbers, one variable:
        # one optimizer update per step instead of three).
        packed = lu.pack_lower_upper(lower, upper, np.log(np.abs(diag)))
        self.lower_upper = self.add_weight(name="lower_upper", shape=(n, n), initializer=const(packed))
        super().build(input_shape)

    def load_own_variables(self, store):
        """Loads weights, also those saved before the parameters were packed (Keras's store lists
        trainable variables first: ``lower, upper, log_scale, permutation, sign``, converted with
        `tfinv.ops.lu.pack_lower_upper`)."""
        if len(store.keys()) == 5:
            lower, upper, log_scale, permutation, sign = (np.asarray(store[str(i)]) for i in range(5))
            store = {"0": lu.pack_lower_upper(lower, upper, log_scale), "1": permutation, "2": sign}
        super().load_own_variables(store)

    def _params(self):
        return self.permutation, self.lower_upper, self.sign

    @property
    def log_scale(self) -> tf.Tensor:
        """``log|U_ii|``, the diagonal of the packed parameters (``log|det W| = sum``)."""
        return tf.linalg.diag_part(self.lower_upper)

    def weight(self) -> tf.Tensor:
        """The ``n x n`` matrix ``W`` (output index first)."""
        return lu.lu_weight(*self._params())

    def inverse_weight(self) -> tf.Tensor:
        """``W^-1``, computed from the parameters only."""
        return lu.lu_inverse_weight(*self._params())

    def _positions(self, x) -> tf.Tensor:
        raise NotImplementedError

    def _apply(self, x, matrix):
        raise NotImplementedError

    def _log_det(self, x):
        with self.variable_precision():
            log_scale = self.log_scale
        total = tf.cast(self._positions(x), log_scale.dtype) * tf.reduce_sum(log_scale)
        return batch_log_det(total, x, self.event_ndims)

    def _forward_and_log_det(self, x):
        with self.variable_precision():
            weight = self.weight()
        return self._apply(x, tf.cast(weight, x.dtype)), self._log_det(x)

    def _inverse_and_log_det(self, z):
        with self.variable_precision():
            inverse = self.inverse_weight()
        return self._apply(z, tf.cast(inverse, z.dtype)), -self._log_det(z)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
