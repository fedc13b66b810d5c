"""CPila: concatenated Pila, 1-Lipschitz from C to 2C channels (Monotone Flows' activation)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.ops.lipschitz_activations import c_pila_linearize


@keras.saving.register_keras_serializable(package="tfinv")
class CPila(keras.layers.Layer):
    """``x -> [pila(x - 0.2), pila(-x - 0.2)] / 1.06`` on the last axis, with
    ``pila(x) = x`` (``x > 0``), ``(k^2 x^3/2 - k x^2 + x) e^{k x}`` (``x <= 0``), ``k = 5``.

    Pila is smooth (``C^2``), has slope 1 for positive inputs and a slope that goes negative
    (down to ``-19 e^-4``) for negative ones, so the pair keeps gradient on both sides; the
    concatenation's Jacobian norm is ``sqrt(1 + 361 e^-8) = 1.0588 <= 1.06`` (derivation in
    `tfinv.ops.lipschitz_activations`), so CPila is 1-Lipschitz. No weights.
    Shapes: ``(..., C) -> (..., 2C)``.

    Our variant: the constants ``k = 5``, shift 0.2 and scale 1.06 are those of the authors'
    released configuration and are fixed here (the scale is only valid for ``k * shift = 1``);
    the derivative is written in closed form (the authors use a custom CUDA kernel).

    References: Ahn, Kim, Hong & Kim, "Invertible Monotone Operators for Normalizing Flows",
    arXiv:2210.08176 (CPila).
    """

    def linearize(self, x: tf.Tensor):
        """``(CPila(x), jvp)``, ``jvp(t) = J t`` for tangents ``(P, *x.shape)``."""
        value, derivative = c_pila_linearize(x)
        return value, lambda t: derivative * tf.concat([t, t], axis=-1)

    def call(self, x):
        return self.linearize(x)[0]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (2 * int(input_shape[-1]),)
