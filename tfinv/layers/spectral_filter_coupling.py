"""The spectral filter coupling of Fourier flows: real and imaginary parts of a spectrum filter
each other."""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.ops import real_dft


@keras.saving.register_keras_serializable(package="tfinv")
class SpectralFilterCoupling(InvertibleLayer):
    """``Y_b = H(X_a) * X_b + M(X_a)``, ``Y_a = X_a``, on a spectrum in `RealDFT`'s real layout.

    ``X_R`` (the ``T // 2 + 1`` real parts) and ``X_I`` (the ``(T - 1) // 2`` imaginary parts) of
    every channel are the two halves: ``parity=0`` filters the imaginary parts conditioned on the
    real parts (``a = R``, ``b = I``), ``parity=1`` the reverse. The filter ``H = exp(log H)`` (one
    gain per frequency and channel of ``X_b``) and the shift ``M`` are outputs of one MLP that
    sees ``X_a`` of all channels.
    Inverse: ``X_b = (Y_b - M(Y_a)) / H(Y_a)`` (``Y_a = X_a``).
    Log-det: ``sum log H(X_a)`` over the filtered frequencies and channels.
    Shapes: ``(B, T, C) -> (B, T, C)``; event_ndims = 2; ``T >= 3`` (so both halves are non-empty).

    Difference from the paper: ``log H = bound * tanh(h / bound)`` with ``bound =
    log_filter_bound`` (a soft clamp keeping the filter gain in ``[e^-bound, e^bound]``; the paper
    and its reference code use ``H = exp(h)`` unbounded: ``log_filter_bound=None``). The MLP's
    output layer starts at zero, so the coupling starts as the identity.

    Conditioning (``context_shape``, our extension: the paper's flows are unconditional): the MLP
    sees ``[flatten(X_a), flatten(c)]``, so the filter and shift depend on the context ``c``; the
    map stays a coupling in ``x`` (exact inverse and log-det at every ``c``).

    Args:
        parity: 0 (real parts filter the imaginary parts) or 1 (the reverse).
        hidden_units: width of the conditioner's hidden layers.
        num_hidden_layers: number of hidden layers of the conditioner.
        log_filter_bound: soft bound on ``|log H|``; ``None``: unbounded.
        context_shape: shape of one context (no batch axis) for a conditional coupling (input
            ``(batch, T, channels)`` only).

    References: Alaa, Chan & van der Schaar, "Generative Time-series Modeling with Fourier
    Flows", ICLR 2021 (no arXiv id), §3 (spectral filtering); Dinh et al., "Density estimation
    using Real NVP", arXiv:1605.08803 (affine coupling).
    """

    event_ndims = 2

    def __init__(self, parity: int = 0, hidden_units: int = 64, num_hidden_layers: int = 2,
                 log_filter_bound: float | None = 5.0, context_shape: Sequence[int] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.context_shape = None if context_shape is None else tuple(int(s) for s in context_shape)
        if parity not in (0, 1):
            raise ValueError(f"SpectralFilterCoupling: parity must be 0 or 1, got {parity!r}")
        if log_filter_bound is not None and not float(log_filter_bound) > 0:
            raise ValueError(f"SpectralFilterCoupling: log_filter_bound must be > 0 or None, got {log_filter_bound!r}")
        self.parity = int(parity)
        self.hidden_units = int(hidden_units)
        self.num_hidden_layers = int(num_hidden_layers)
        self.log_filter_bound = None if log_filter_bound is None else float(log_filter_bound)

    def build(self, input_shape):
        length, channels = self.input_event_shape
        if length is None or channels is None or length < 3:
            raise ValueError(
                f"SpectralFilterCoupling '{self.name}' expects spectra (batch, T, channels) with a static "
                f"T >= 3 (T // 2 + 1 real and (T - 1) // 2 imaginary parts, both non-empty), "
                f"got input shape {tuple(input_shape)}")
        real = real_dft.num_real_parts(length)
        sizes = (real, length - real) if self.parity == 0 else (length - real, real)
        self._conditioning, self._filtered = sizes
        features = self._conditioning * channels
        if self.context_shape is not None:
            if len(input_shape) != 3:
                raise ValueError(f"SpectralFilterCoupling '{self.name}' with a context needs input (batch, T, "
                                 f"channels), got input shape {tuple(input_shape)}")
            features += int(np.prod(self.context_shape))
        from tfinv.nets.mlp import MLP

        self.conditioner = MLP(self.hidden_units, 2 * self._filtered * channels,
                               num_hidden_layers=self.num_hidden_layers, name="conditioner")
        self.conditioner.build((None, features))
        super().build(input_shape)

    def _split(self, x):
        real = real_dft.num_real_parts(int(x.shape[-2]))
        x_real, x_imag = x[..., :real, :], x[..., real:, :]
        return (x_real, x_imag) if self.parity == 0 else (x_imag, x_real)

    def _merge(self, y_a, y_b):
        return tf.concat([y_a, y_b] if self.parity == 0 else [y_b, y_a], axis=-2)

    def _filter(self, x_a, context=None):
        """``(log H, M)``, each shaped like ``X_b``."""
        channels = int(x_a.shape[-1])
        batch_shape = tf.shape(x_a)[:-2]
        flat = tf.reshape(x_a, [-1, self._conditioning * channels])
        if context is not None:
            flat = tf.concat([flat, tf.reshape(context, [tf.shape(context)[0], -1])], axis=-1)
        out = tf.reshape(self.conditioner(flat), [-1, self._filtered, channels, 2])
        log_filter, shift = out[..., 0], out[..., 1]
        if self.log_filter_bound is not None:
            bound = tf.cast(self.log_filter_bound, log_filter.dtype)
            log_filter = bound * tf.tanh(log_filter / bound)
        shape = tf.concat([batch_shape, [self._filtered, channels]], 0)
        return tf.reshape(log_filter, shape), tf.reshape(shift, shape)

    def _forward_and_log_det(self, x, context=None):
        x_a, x_b = self._split(x)
        log_filter, shift = self._filter(x_a, context)
        y_b = x_b * tf.exp(log_filter) + shift
        return self._merge(x_a, y_b), tf.reduce_sum(log_filter, axis=[-2, -1])

    def _inverse_and_log_det(self, y, context=None):
        y_a, y_b = self._split(y)
        log_filter, shift = self._filter(y_a, context)
        x_b = (y_b - shift) * tf.exp(-log_filter)
        return self._merge(y_a, x_b), -tf.reduce_sum(log_filter, axis=[-2, -1])

    def get_config(self):
        config = {**super().get_config(), "parity": self.parity, "hidden_units": self.hidden_units,
                  "num_hidden_layers": self.num_hidden_layers, "log_filter_bound": self.log_filter_bound}
        if self.context_shape is not None:
            config["context_shape"] = list(self.context_shape)
        return config
