"""Shared machinery of spectrally normalised linear layers (`SpectralNormDense`,
`SpectralNormConv2D`): the power-iteration state, its training-only update, the rescaled kernel;
and of the networks built from them (`LipschitzNet`, `DenseLipschitzNet`)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfinv.ops import spectral_norm as ops


class SpectralNormLayer(keras.layers.Layer):
    """Base of linear layers whose kernel is rescaled to spectral norm ``<= coefficient``.

    The power-iteration vectors ``u`` (output space) and ``v`` (input space) are non-trainable
    weights saved with the layer. `update_spectral_norm` runs ``power_iterations`` steps from them
    and stores the result — call it in training steps only (the residual blocks do); otherwise the
    kernel is rescaled with the stored vectors, so inference is deterministic and exports as
    constants. After assigning weights by hand, call `refresh_spectral_norm` (many steps).

    Args:
        coefficient: the bound ``c`` on the spectral norm, ``0 < c < 1``.
        power_iterations: steps per training update (warm-started from the stored vectors; one
            step, as in Miyato et al., lagged behind Adam at lr 1e-3 here: norms reached 1.12 c).
        use_bias: add a bias.
        seed: seed of the kernel initialisation and the vectors' start.
    """

    def __init__(self, coefficient: float = 0.97, power_iterations: int = 5, use_bias: bool = True,
                 seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.coefficient = ops.check_coefficient(coefficient, type(self).__name__)
        if int(power_iterations) < 1:
            raise ValueError(f"{type(self).__name__} needs power_iterations >= 1, got {power_iterations}")
        self.power_iterations = int(power_iterations)
        self.use_bias = bool(use_bias)
        self.seed = int(seed)

    # Subclasses: kernel shape, operator shapes of u and v, and the operator itself.
    def _kernel_shape(self, input_shape) -> tuple[int, ...]:
        raise NotImplementedError

    def _vector_shapes(self, input_shape) -> tuple[tuple[int, ...], tuple[int, ...]]:
        raise NotImplementedError

    def _power_iteration(self, kernel, u, v, iterations):
        raise NotImplementedError

    def _apply(self, kernel, x):
        raise NotImplementedError

    def _add_spectral_weights(self, input_shape, units: int) -> None:
        rng = np.random.default_rng(self.seed)
        shape = self._kernel_shape(input_shape)
        fan_in = int(np.prod(shape[:-1]))
        kernel = rng.standard_normal(shape) / np.sqrt(fan_in)
        u_shape, v_shape = self._vector_shapes(input_shape)
        u, v = rng.standard_normal(u_shape), rng.standard_normal(v_shape)
        const = keras.initializers.Constant
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer=const(kernel))
        self.bias = (self.add_weight(name="bias", shape=(units,), initializer="zeros")
                     if self.use_bias else None)
        self.u = self.add_weight(name="u", shape=u_shape, trainable=False,
                                 initializer=const(u / np.linalg.norm(u)))
        self.v = self.add_weight(name="v", shape=v_shape, trainable=False,
                                 initializer=const(v / np.linalg.norm(v)))

    def build(self, input_shape):
        super().build(input_shape)
        if tf.executing_eagerly():  # start from converged vectors (a traced build cannot assign)
            self.refresh_spectral_norm()

    def update_spectral_norm(self, iterations: int | None = None) -> None:
        """Runs power iteration from the stored vectors and stores the result (no gradient)."""
        kernel = tf.stop_gradient(tf.convert_to_tensor(self.kernel))
        u, v, _ = self._power_iteration(kernel, tf.convert_to_tensor(self.u), tf.convert_to_tensor(self.v),
                                        self.power_iterations if iterations is None else iterations)
        self.u.assign(u)
        self.v.assign(v)

    def refresh_spectral_norm(self, iterations: int = 100) -> None:
        """`update_spectral_norm` with many steps: call it after assigning the kernel by hand."""
        self.update_spectral_norm(iterations)

    def sigma(self) -> tf.Tensor:
        """``<u, A v>`` with the stored vectors: the estimate of ``||A||_2`` used for rescaling."""
        kernel = tf.convert_to_tensor(self.kernel)
        u, v = tf.stop_gradient(tf.convert_to_tensor(self.u)), tf.stop_gradient(tf.convert_to_tensor(self.v))
        return tf.reduce_sum(u * self._apply(kernel, v))

    def spectral_norm(self, iterations: int = 200) -> tf.Tensor:
        """A fresh estimate of ``||A||_2`` of the *effective* (rescaled) kernel, from the stored
        vectors, without storing anything: for checks after weight assignments."""
        u, v = tf.convert_to_tensor(self.u), tf.convert_to_tensor(self.v)
        return self._power_iteration(self.effective_kernel(), u, v, iterations)[2]

    def effective_kernel(self) -> tf.Tensor:
        """``kernel / max(1, sigma / c)`` (gradient through the kernel, not the vectors)."""
        return ops.rescale(tf.convert_to_tensor(self.kernel), self.sigma(), self.coefficient)

    def linearize(self, x: tf.Tensor):
        """``(A x + b, jvp)`` with ``jvp(t) = A t`` for tangents ``t`` of shape ``(P, *x.shape)``."""
        kernel = tf.cast(self.effective_kernel(), x.dtype)
        y = self._apply(kernel, x)
        if self.bias is not None:
            y = y + tf.cast(self.bias, x.dtype)

        def jvp(t):
            flat = tf.reshape(t, tf.concat([[-1], tf.shape(t)[2:]], 0))
            out = self._apply(kernel, flat)
            return tf.reshape(out, tf.concat([tf.shape(t)[:2], tf.shape(out)[1:]], 0))

        return y, jvp

    def call(self, x):
        return self.linearize(x)[0]

    def get_config(self):
        return {**super().get_config(), "coefficient": self.coefficient,
                "power_iterations": self.power_iterations, "use_bias": self.use_bias, "seed": self.seed}


class SpectralNormNetwork(keras.layers.Layer):
    """Base of the networks of `SpectralNormLayer`s (`LipschitzNet`, `DenseLipschitzNet`).

    Subclasses give ``linear_layers`` (their spectrally normalised layers), ``out_features``
    and ``linearize(x) -> (g(x), jvp)``; this class updates and refreshes the layers' power
    iterations together and calls ``g``.
    """

    @property
    def linear_layers(self) -> list[SpectralNormLayer]:
        raise NotImplementedError

    def linearize(self, x: tf.Tensor):
        raise NotImplementedError

    def update_spectral_norm(self) -> None:
        """One training update of every linear layer's power iteration."""
        for layer in self.linear_layers:
            layer.update_spectral_norm()

    def refresh_spectral_norm(self, iterations: int = 100) -> None:
        """`SpectralNormLayer.refresh_spectral_norm` of every linear layer."""
        for layer in self.linear_layers:
            layer.refresh_spectral_norm(iterations)

    def call(self, x):
        return self.linearize(x)[0]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.out_features,)
