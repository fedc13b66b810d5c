"""Affine coupling of vectors (RealNVP / Glow coupling on the last axis, MLP conditioner)."""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.ops import coupling


@keras.saving.register_keras_serializable(package="tfinv")
class VectorAffineCoupling(InvertibleLayer):
    """``z_a = x_a``, ``z_b = (x_b + t(x_a)) * s(x_a)`` with ``s = sigmoid(h(x_a) + 2)``.

    ``x_a`` is one half of the last axis (the first ``floor(n/2)`` entries if ``parity == 0``,
    the last ``floor(n/2)`` if ``parity == 1``) and ``x_b`` the rest; ``(t, h) = theta(x_a)``.
    Inverse: ``x_b = z_b / s(z_a) - t(z_a)`` (``z_a = x_a``: the conditioner sees the same input).
    Log-det: ``sum log s(x_a)`` over the transformed entries, for every vector (shape
    ``x.shape[:-1]``).
    Shapes: ``(..., n) -> (..., n)`` with ``n >= 2``; event_ndims = 1, so every leading axis is a
    batch axis and shares the conditioner (a ``(B, N, n)`` input is ``B * N`` vectors).

    Glow's sigmoid scale keeps ``s`` in ``(0, 1)``; the math is `tfinv.ops.coupling`, shared with
    the image coupling `AffineCoupling`.

    Args:
        parity: 0 or 1; which half conditions the other.
        conditioner: a Keras layer mapping ``(..., n_a)`` to ``(..., 2 * n_b)`` (``t`` and ``h``
            interleaved). ``None`` builds the default `tfinv.nets.mlp.MLP` (two hidden layers,
            zero-initialised output, so the coupling starts as the constant scale ``sigmoid(2)``).
        hidden_units: width of the default conditioner.
        context_shape: shape of one context (no batch axis) for a conditional coupling: the
            conditioner then sees ``[x_a, flatten(c)]`` (for a ``(B, n)`` input only).

    References: Dinh et al., "Density estimation using Real NVP", arXiv:1605.08803;
    Kingma & Dhariwal, "Glow", arXiv:1807.03039, §3.3.
    """

    event_ndims = 1
    prefers_xla_on_cpu = True  # benchmarks/speed.py --vector

    def __init__(self, parity: int = 0, conditioner: keras.layers.Layer | dict | None = None,
                 hidden_units: int = 64, context_shape: Sequence[int] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.context_shape = None if context_shape is None else tuple(int(s) for s in context_shape)
        if parity not in (0, 1):
            raise ValueError(f"VectorAffineCoupling: parity must be 0 or 1, got {parity!r}")
        self.parity = int(parity)
        self.hidden_units = int(hidden_units)
        if isinstance(conditioner, dict):
            conditioner = keras.saving.deserialize_keras_object(conditioner)
        self._user_conditioner = conditioner is not None
        self.conditioner = conditioner

    def build(self, input_shape):
        n = self.input_event_shape[-1]
        if n is None or n < 2:
            raise ValueError(
                f"VectorAffineCoupling '{self.name}' needs a static last axis of size >= 2, "
                f"got input shape {tuple(input_shape)}"
            )
        self._split = n // 2  # size of the conditioning half x_a
        transformed = n - self._split
        if self.conditioner is None:
            from tfinv.nets.mlp import MLP

            self.conditioner = MLP(self.hidden_units, 2 * transformed, name="conditioner")
        cond_in = self._split
        if self.context_shape is not None:
            if len(input_shape) != 2:
                raise ValueError(f"VectorAffineCoupling '{self.name}' with a context needs input (batch, n), "
                                 f"got input shape {tuple(input_shape)}")
            cond_in += int(np.prod(self.context_shape))
        cond_shape = tuple(input_shape[:-1]) + (cond_in,)
        if not self.conditioner.built:  # a deserialised conditioner comes built
            self.conditioner.build(cond_shape)
        got = tuple(self.conditioner.compute_output_shape(cond_shape))
        if got[-1] != 2 * transformed:
            raise ValueError(
                f"VectorAffineCoupling '{self.name}': the conditioner must output {2 * transformed} "
                f"features (shift and scale per transformed entry), its output shape is {got}"
            )
        super().build(input_shape)

    def _split_input(self, x):
        if self.parity == 0:
            return x[..., : self._split], x[..., self._split :]
        return x[..., -self._split :], x[..., : -self._split]

    def _merge(self, x_a, y_b):
        return tf.concat([x_a, y_b] if self.parity == 0 else [y_b, x_a], axis=-1)

    def _theta(self, x_a, context=None):
        if context is not None:
            x_a = tf.concat([x_a, tf.reshape(context, [tf.shape(context)[0], -1])], axis=-1)
        return self.conditioner(x_a)

    def _forward_and_log_det(self, x, context=None):
        x_a, x_b = self._split_input(x)
        theta = self._theta(x_a, context)
        y_b, log_scale = coupling.affine_forward(x_b, theta[..., 0::2], theta[..., 1::2])
        return self._merge(x_a, y_b), tf.reduce_sum(log_scale, axis=-1)

    def _inverse_and_log_det(self, z, context=None):
        z_a, z_b = self._split_input(z)
        theta = self._theta(z_a, context)
        x_b, log_scale = coupling.affine_inverse(z_b, theta[..., 0::2], theta[..., 1::2])
        return self._merge(z_a, x_b), -tf.reduce_sum(log_scale, axis=-1)

    def get_config(self):
        config = {**super().get_config(), "parity": self.parity, "hidden_units": self.hidden_units,
                  "conditioner": None}
        if self._user_conditioner:
            config["conditioner"] = keras.saving.serialize_keras_object(self.conditioner)
        if self.context_shape is not None:
            config["context_shape"] = list(self.context_shape)
        return config
