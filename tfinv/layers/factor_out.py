"""Multi-scale factor-out: part of the channels leaves the flow as latents at each scale."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.core.invertible_sequential import reduce_to_batch


def _zero_dense(units: int, name: str) -> keras.layers.Layer:
    return keras.layers.Dense(units, kernel_initializer="zeros", bias_initializer="zeros", name=name)


@keras.saving.register_keras_serializable(package="tfinv")
class FactorOut(InvertibleLayer):
    """``z = [flatten(e_b), flatten(inner(x_a))]`` for ``x = [x_a, x_b]`` split on the last axis.

    The last axis (channels) is split into the kept part ``x_a`` (the first ``keep_channels``)
    and the factored part ``x_b``; ``x_b`` leaves the flow as latents, ``x_a`` goes through the
    rest of the flow, ``inner``. Nesting ``FactorOut`` inside ``inner`` gives the multi-scale
    architecture of RealNVP/Glow; the latent vector lists the factored parts from the outermost
    scale in, then the innermost output (Glow's layout).

    Without a learned prior, ``e_b = x_b`` (its prior is the model's base distribution). With
    ``learned_prior=True`` (Glow's learned split prior), ``(mu, log sigma) = g(x_a)`` by a
    zero-initialised convolution (a dense layer for vector events) and
    ``e_b = (x_b - mu) * exp(-log sigma)``: the prior ``x_b ~ N(mu(x_a), sigma(x_a)^2)`` becomes
    a standard normal on ``e_b``, so the flow still ends in ``N(0, I)`` noise (sampling and the
    exported inverse graph take standardised noise) and the model's base stays standard normal.
    Glow writes the same prior as a density on ``x_b``; the log-likelihood is identical.

    Inverse: ``x_a = inner^-1(z_inner)``, then ``x_b = mu(x_a) + sigma(x_a) * e_b``.
    Log-det: ``inner``'s log-det, minus ``sum log sigma(x_a)`` with the learned prior.
    Shapes: ``(B, *S, C) -> (B, D)`` with ``D = prod(S) * (C - keep) + size(inner output)``;
    ``event_ndims`` is ``inner``'s, the output event rank is 1. Context: handed to ``inner``.

    Args:
        inner: the `InvertibleLayer` applied to the kept part.
        keep_channels: size of the kept part; default ``C // 2`` (Glow's split).
        learned_prior: standardise ``x_b`` under the learned split prior.

    References: Dinh et al., "Density estimation using Real NVP", arXiv:1605.08803, §3.6
    (factoring out); Kingma & Dhariwal, "Glow", arXiv:1807.03039 (learned split prior, in the
    authors' code).
    """

    output_event_ndims = 1

    def __init__(self, inner: InvertibleLayer | dict, keep_channels: int | None = None,
                 learned_prior: bool = False, **kwargs):
        if isinstance(inner, dict):
            inner = keras.saving.deserialize_keras_object(inner)
        if not isinstance(inner, InvertibleLayer):
            raise TypeError(f"FactorOut takes an InvertibleLayer as inner, got {type(inner).__name__}")
        if keep_channels is not None and int(keep_channels) < 1:
            raise ValueError(f"FactorOut keep_channels must be >= 1, got {keep_channels}")
        self.event_ndims = int(inner.event_ndims)  # instance override, before the bijector is set up
        super().__init__(**kwargs)
        self.inner = inner
        self.keep_channels = None if keep_channels is None else int(keep_channels)
        self.learned_prior = bool(learned_prior)
        self.context_shape = inner.context_shape
        self.prior_net = None

    # ------------------------------------------------------------------ shapes
    def _keep(self, channels: int) -> int:
        return channels // 2 if self.keep_channels is None else self.keep_channels

    def build(self, input_shape):
        *spatial, channels = self.input_event_shape
        if channels is None or any(s is None for s in spatial):
            raise ValueError(f"FactorOut '{self.name}' needs a static event shape, got {self.input_event_shape}")
        keep = self._keep(channels)
        if not 1 <= keep < channels:
            raise ValueError(
                f"FactorOut '{self.name}' keeps {keep} of {channels} channels; it needs "
                f"1 <= keep_channels < C (at least 2 channels)"
            )
        batch = tuple(input_shape[: len(input_shape) - self.event_ndims])
        kept_shape = batch + tuple(spatial) + (keep,)
        if not self.inner.built:
            self.inner.build(kept_shape)
        factored = channels - keep
        if self.learned_prior:
            if len(spatial) == 2:
                from tfinv.nets.glow_conv_net import ZeroConv2D

                self.prior_net = ZeroConv2D(2 * factored, name="prior")
            else:
                self.prior_net = _zero_dense(2 * factored, name="prior")
            self.prior_net.build(kept_shape)
        self._kept_event = tuple(spatial) + (keep,)
        self._factored_event = tuple(spatial) + (factored,)
        self._inner_out_event = tuple(self.inner.compute_output_shape((1,) + self._kept_event)[1:])
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        event = tuple(input_shape[len(input_shape) - self.event_ndims:])
        batch = tuple(input_shape[: len(input_shape) - self.event_ndims])
        *spatial, channels = event
        keep = self._keep(channels)
        inner_out = self.inner.compute_output_shape((1,) + tuple(spatial) + (keep,))[1:]
        return batch + (int(np.prod(spatial)) * (channels - keep) + int(np.prod(inner_out)),)

    def compute_input_shape(self, output_shape):
        if self.input_event_shape is None:
            raise ValueError(f"FactorOut '{self.name}' is not built: its event shape is unknown")
        return tuple(output_shape[:-1]) + tuple(self.input_event_shape)

    # ------------------------------------------------------------------ prior
    def _prior(self, x_a):
        theta = self.prior_net(x_a)
        return theta[..., 0::2], theta[..., 1::2]

    # ------------------------------------------------------------------ directions
    def _split_sizes(self):
        return int(np.prod(self._factored_event)), int(np.prod(self._inner_out_event))

    def _forward_and_log_det(self, x, context=None):
        keep = self._kept_event[-1]
        x_a, x_b = x[..., :keep], x[..., keep:]
        batch = tf.shape(x)[:1]
        log_det = tf.zeros(batch, self.log_det_dtype)  # float32 under mixed precision
        if self.prior_net is not None:
            mean, log_scale = self._prior(x_a)
            x_b = (x_b - mean) * tf.exp(-log_scale)
            log_det -= tf.cast(reduce_to_batch(log_scale), log_det.dtype)
        z_inner, inner_log_det = self.inner.forward_and_log_det(x_a, context)
        z = tf.concat([tf.reshape(x_b, tf.concat([batch, [-1]], 0)),
                       tf.reshape(z_inner, tf.concat([batch, [-1]], 0))], axis=-1)
        return z, log_det + tf.cast(reduce_to_batch(inner_log_det), log_det.dtype)

    def _inverse_and_log_det(self, z, context=None):
        batch = tf.shape(z)[:1]
        e_b, z_inner = tf.split(z, list(self._split_sizes()), axis=-1)
        z_inner = tf.reshape(z_inner, tf.concat([batch, self._inner_out_event], 0))
        x_a, log_det = self.inner.inverse_and_log_det(z_inner, context)
        log_det = reduce_to_batch(log_det)
        x_b = tf.reshape(e_b, tf.concat([batch, self._factored_event], 0))
        if self.prior_net is not None:
            mean, log_scale = self._prior(x_a)
            x_b = mean + tf.exp(log_scale) * x_b
            log_det += tf.cast(reduce_to_batch(log_scale), log_det.dtype)
        return tf.concat([x_a, x_b], axis=-1), log_det

    def _initialize(self, x, context=None):
        self.inner.initialize(x[..., : self._kept_event[-1]], context)

    def get_config(self):
        return {
            **super().get_config(),
            "inner": keras.saving.serialize_keras_object(self.inner),
            "keep_channels": self.keep_channels,
            "learned_prior": self.learned_prior,
        }
