"""Shared wiring of coupling layers: mask split/merge and the conditioner network.

A coupling writes ``y_a = x_a`` and ``y_b = g(x_b; theta(x_a))`` where ``theta`` is any Keras
network. Subclasses give ``params_per_channel`` (how many conditioner outputs each transformed
channel needs) and the element-wise map in ``_couple``/``_uncouple``, each returning
``(y_b, element-wise log|dy_b/dx_b|)``.

Masks:
* ``"channel"``: ``x_a`` is one half of the channels (the first if ``parity == 0``);
* ``"checkerboard"``: ``x_a`` is the squares where ``(i + j + parity)`` is even, all channels.

Conditioning: with ``context_shape``, a context encoder (`tfinv.nets.ContextEncoder` by default:
a dense layer for vector contexts, resize + 3x3 convolution for image contexts) maps the context
to ``context_features`` channels at every position, and the conditioner sees their
concatenation with ``x_a``: ``theta = conditioner([x_a, encoder(c)])``. The coupling stays
invertible for every context, and its log-det keeps its form.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.ops.coupling import checkerboard_mask

MASKS = ("channel", "checkerboard")


class CouplingLayer(InvertibleLayer):
    """Base of `AffineCoupling` and `AdditiveCoupling` (see module docstring).

    Args:
        mask: ``"channel"`` or ``"checkerboard"``.
        parity: 0 or 1; which half (or which squares) conditions the other.
        conditioner: a Keras layer/model mapping ``(B, H, W, C_a)`` to
            ``(B, H, W, params_per_channel * C_b)`` (channel mask) or ``(B, H, W, C)`` to
            ``(B, H, W, params_per_channel * C)`` (checkerboard). ``None`` builds the default
            zero-initialised `tfinv.nets.GlowConvNet`. A conditioner whose ``out_channels`` is
            ``None`` gets the width the coupling needs when the coupling is built.
        hidden_channels: width of the default conditioner.
        conditioner_actnorm: the default conditioner with ActNorm after its hidden convolutions
            (Glow's paper, ``GlowConvNet(actnorm=True)``); `initialize` initialises them from data.
        context_shape: shape of one context (no batch axis) for a conditional coupling.
        context_encoder: a Keras layer ``encoder(context, like=x_a) -> (B, H, W, F)``; ``None``
            builds a `tfinv.nets.ContextEncoder` with ``context_features`` channels.
        context_features: channels ``F`` of the default context encoder.
    """

    event_ndims = 3
    params_per_channel = 1

    def __init__(
        self,
        mask: str = "channel",
        parity: int = 0,
        conditioner: keras.layers.Layer | dict | None = None,
        hidden_channels: int = 64,
        conditioner_actnorm: bool = False,
        context_shape: Sequence[int] | None = None,
        context_encoder: keras.layers.Layer | dict | None = None,
        context_features: int = 16,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if mask not in MASKS:
            raise ValueError(f"{type(self).__name__}: mask must be one of {MASKS}, got {mask!r}")
        if parity not in (0, 1):
            raise ValueError(f"{type(self).__name__}: parity must be 0 or 1, got {parity!r}")
        self.mask = mask
        self.parity = int(parity)
        self.hidden_channels = int(hidden_channels)
        self.conditioner_actnorm = bool(conditioner_actnorm)
        if conditioner is not None and self.conditioner_actnorm:
            raise ValueError(f"{type(self).__name__}: conditioner_actnorm applies to the default "
                             "conditioner only; pass either a conditioner or conditioner_actnorm=True")
        if isinstance(conditioner, dict):
            conditioner = keras.saving.deserialize_keras_object(conditioner)
        self._user_conditioner = conditioner is not None
        self.conditioner = conditioner
        self.context_shape = None if context_shape is None else tuple(int(s) for s in context_shape)
        self.context_features = int(context_features)
        if isinstance(context_encoder, dict):
            context_encoder = keras.saving.deserialize_keras_object(context_encoder)
        if context_encoder is not None and self.context_shape is None:
            raise ValueError(f"{type(self).__name__}: a context_encoder needs context_shape")
        self._user_context_encoder = context_encoder is not None
        self.context_encoder = context_encoder

    def build(self, input_shape):
        height, width, channels = self.input_event_shape
        if self.mask == "channel":
            if channels < 2:
                raise ValueError(
                    f"{type(self).__name__} '{self.name}' with mask='channel' needs at least 2 "
                    f"channels, got {channels}; use mask='checkerboard'"
                )
            self._split = channels // 2 if self.parity == 0 else channels - channels // 2
            cond_in, transformed = self._split, channels - self._split
        else:
            if height is None or width is None:
                raise ValueError(f"{type(self).__name__} with a checkerboard mask needs static H, W")
            self._mask = checkerboard_mask(height, width, self.parity)
            cond_in, transformed = channels, channels
        out_channels = self.params_per_channel * transformed
        if self.context_shape is not None:
            from tfinv.nets import ContextEncoder

            if self.context_encoder is None:
                self.context_encoder = ContextEncoder(self.context_features, name="context_encoder")
            if isinstance(self.context_encoder, ContextEncoder):  # its patch downsampling needs our size
                self.context_encoder.build((None,) + self.context_shape, (None, height, width, cond_in))
            else:
                self.context_encoder.build((None,) + self.context_shape)
            cond_in += int(self.context_encoder.compute_output_shape(
                (None,) + self.context_shape, (None, height, width, cond_in))[-1])
        if self.conditioner is None:
            from tfinv.nets import GlowConvNet

            self.conditioner = GlowConvNet(self.hidden_channels, out_channels,
                                           actnorm=self.conditioner_actnorm, name="conditioner")
        elif getattr(self.conditioner, "out_channels", 0) is None:  # a template: its width is ours to set
            self.conditioner.out_channels = out_channels
        cond_shape = (None, height, width, cond_in)
        # a deserialised conditioner comes built: building it again fails for one that makes its
        # sub-layers in build (BottleneckConvNet: its dense bottleneck needs H and W)
        if not self.conditioner.built:
            self.conditioner.build(cond_shape)
        got = tuple(self.conditioner.compute_output_shape(cond_shape))
        if got[-1] != out_channels:
            raise ValueError(
                f"{type(self).__name__} '{self.name}': the conditioner must output "
                f"{out_channels} channels ({self.params_per_channel} per transformed channel), "
                f"its output shape is {got}"
            )
        super().build(input_shape)

    # --------------------------------------------------------------- split / merge
    def _split_input(self, x):
        if self.mask == "channel":
            if self.parity == 0:
                return x[..., : self._split], x[..., self._split :]
            return x[..., -self._split :], x[..., : -self._split]
        mask = tf.constant(self._mask, x.dtype)
        return x * mask, x

    def _merge(self, x_a, y_b):
        if self.mask == "channel":
            parts = [x_a, y_b] if self.parity == 0 else [y_b, x_a]
            return tf.concat(parts, axis=-1)
        mask = tf.constant(self._mask, x_a.dtype)
        return x_a + (1.0 - mask) * y_b

    def _log_det_sum(self, elementwise):
        if self.mask == "checkerboard":
            elementwise = elementwise * (1.0 - tf.constant(self._mask, elementwise.dtype))
        return tf.reduce_sum(elementwise, axis=[-3, -2, -1])

    def _conditioner_input(self, x_a, context=None):
        if context is not None:
            x_a = tf.concat([x_a, self.context_encoder(context, like=x_a)], axis=-1)
        return x_a

    def _theta(self, x_a, context=None):
        return self.conditioner(self._conditioner_input(x_a, context))

    def _initialize(self, x, context=None):
        # a conditioner with data-dependent parts (ActNorm) initialises on this batch's x_a
        init = getattr(self.conditioner, "initialize", None)
        if callable(init):
            init(self._conditioner_input(self._split_input(x)[0], context))

    # --------------------------------------------------------------- directions
    def _forward_and_log_det(self, x, context=None):
        x_a, x_b = self._split_input(x)
        y_b, log_det = self._couple(x_b, self._theta(x_a, context))
        return self._merge(x_a, y_b), self._log_det_sum(log_det)

    def _inverse_and_log_det(self, y, context=None):
        y_a, y_b = self._split_input(y)
        x_b, log_det = self._uncouple(y_b, self._theta(y_a, context))
        return self._merge(y_a, x_b), -self._log_det_sum(log_det)

    def _couple(self, x_b, theta):
        raise NotImplementedError

    def _uncouple(self, y_b, theta):
        raise NotImplementedError

    def get_config(self):
        config = {
            **super().get_config(),
            "mask": self.mask,
            "parity": self.parity,
            "hidden_channels": self.hidden_channels,
            "conditioner": None,
        }
        if self.conditioner_actnorm:
            config["conditioner_actnorm"] = True
        if self._user_conditioner:
            config["conditioner"] = keras.saving.serialize_keras_object(self.conditioner)
        if self.context_shape is not None:
            config["context_shape"] = list(self.context_shape)
            config["context_features"] = self.context_features
            if self._user_context_encoder:
                config["context_encoder"] = keras.saving.serialize_keras_object(self.context_encoder)
        return config
