"""iMap: invertible map-based attention (Sukthanker et al., arXiv:2106.03959)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.ops import attention


@keras.saving.register_keras_serializable(package="tfinv")
class IMapAttention(InvertibleLayer):
    """``z = x * (m * (sigmoid(s) + eps) + (1 - m) * a(m * x))``: a spatial attention map ``a``,
    computed from the conditioning entries ``m * x`` only, scales the other entries.

    ``m`` is the parity mask ``m[h, w, c] = [(h + w + c) even]`` (`tfinv.ops.attention.parity_mask`);
    the map is ``a[h, w] = sigmoid(mean_c(W (m x)[h, w] + b) + offset) + eps`` (a 1x1 convolution
    averaged over its output channels, `tfinv.ops.attention.map_attention`) and the conditioning
    entries are scaled by a learned per-channel ``sigmoid(s_c) + eps``.
    Invertibility: ``a`` sees only ``m * x``, which the inverse recovers first, and every scale
    lies in ``(eps, 1 + eps)``, never 0 (the paper's constraint on the map).
    Inverse: ``m x = m z / (sigmoid(s) + eps)``; then ``a`` from ``m x``; ``(1 - m) x = (1 - m) z / a``.
    Log-det: ``sum_{h,w,c} m log(sigmoid(s_c) + eps) + (1 - m) log a[h, w]`` (diagonal Jacobian
    once ``a`` is fixed; exact, a sum of logs: XLA and ONNX export both directions).
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``C >= 2``; log-det ``(B,)``.

    The scales start near 1 (``offset = s = 4``: ``sigmoid(4) = 0.98``). Every scale is below
    ``1 + eps``, so the layer contracts; in a Glow step the next ActNorm restores the scale.

    Differences from the paper: the mask alternates over ``h + w + c`` (the reference alternates
    channels per flattened position); the attention-map floor ``eps`` and the initial offset are
    ours. Inside `GlowStep(attention="imap")` the layer follows the coupling.

    Args:
        epsilon: floor of every scale (keeps the log-det finite).
        initial_offset: initial value of the learned offset added before the sigmoid.
        initial_scale: initial value of every ``s_c``.

    References: Sukthanker, Huang, Kumar, Timofte & Van Gool, "Generative Flows with Invertible
    Attentions", CVPR 2022, arXiv:2106.03959 (iMap).
    """

    event_ndims = 3

    def __init__(self, epsilon: float = 1e-5, initial_offset: float = 4.0, initial_scale: float = 4.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)
        self.initial_offset = float(initial_offset)
        self.initial_scale = float(initial_scale)

    def build(self, input_shape):
        shape = tuple(tf.TensorShape(input_shape).as_list())
        if len(shape) != 4 or None in shape[1:] or shape[-1] < 2:
            raise ValueError(
                f"IMapAttention '{self.name}' needs images (B, H, W, C) with static H, W and C >= 2 "
                f"(every position needs conditioning channels), got shape {shape}"
            )
        channels = shape[-1]
        self.kernel = self.add_weight(name="kernel", shape=(channels, channels),
                                      initializer=keras.initializers.GlorotUniform())
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros")
        self.offset = self.add_weight(name="offset", shape=(),
                                      initializer=keras.initializers.Constant(self.initial_offset))
        self.scale_logit = self.add_weight(name="scale_logit", shape=(channels,),
                                           initializer=keras.initializers.Constant(self.initial_scale))
        super().build(input_shape)

    def _mask(self, dtype):
        return tf.constant(attention.parity_mask(*self.input_event_shape), dtype)

    def _scales(self, x_masked, mask):
        """The per-entry scale ``m * (sigmoid(s) + eps) + (1 - m) * a`` and its log, summed per example."""
        attention_map = attention.map_attention(x_masked, self.kernel, self.bias, self.offset, self.epsilon)
        conditioning_scale = tf.sigmoid(self.scale_logit) + self.epsilon
        scale = mask * conditioning_scale + (1.0 - mask) * attention_map
        log_det = tf.reduce_sum(tf.math.log(scale), axis=[-3, -2, -1])
        return scale, log_det

    def _forward_and_log_det(self, x):
        mask = self._mask(x.dtype)
        scale, log_det = self._scales(x * mask, mask)
        return x * scale, log_det

    def _inverse_and_log_det(self, z):
        mask = self._mask(z.dtype)
        x_masked = z * mask / (tf.sigmoid(self.scale_logit) + self.epsilon)
        scale, log_det = self._scales(x_masked, mask)
        return z / scale, -log_det

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "initial_offset": self.initial_offset,
                "initial_scale": self.initial_scale}

