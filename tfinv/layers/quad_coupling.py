"""Quad-coupling (CInC Flow): a four-way autoregressive affine coupling over channel quarters."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.ops import coupling


@keras.saving.register_keras_serializable(package="tfinv")
class QuadCoupling(InvertibleLayer):
    """Quad-coupling: ``x = (x1, x2, x3, x4)`` (channel quarters), ``z1 = x1`` and, for k = 2, 3, 4,
    ``z_k = (x_k + t_k(x_1..x_{k-1})) * s_k(x_1..x_{k-1})`` with ``s_k = sigmoid(h_k + 2)``.

    Each conditioner ``(t_k, h_k) = NN_k(concat(x_1, ..., x_{k-1}))`` sees the *input* quarters
    before ``x_k``, so the forward map is parallel (all three couplings at once).

    Inverse (sequential): ``x1 = z1``; then for k = 2, 3, 4, with the already recovered
    ``x_1..x_{k-1}``: ``x_k = z_k / s_k(x_1..x_{k-1}) - t_k(x_1..x_{k-1})``.

    Log-det: the Jacobian is block lower-triangular with diagonal blocks ``diag(s_k)``, so
    ``log|det dz/dx| = sum_k sum log s_k`` over the transformed entries (x2, x3, x4).

    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``C`` divisible by 4 (``ValueError`` otherwise);
    log-det ``(B,)``. Conditioners: three zero-initialised `tfinv.nets.GlowConvNet` mapping
    ``(B, H, W, (k-1) C/4)`` to ``(B, H, W, 2 C/4)``, outputs ``(t, h)`` interleaved (``t`` at
    even, ``h`` at odd channels), as in `AffineCoupling`; the layer starts as ``z = 0.88 x`` on
    x2..x4 (``sigmoid(2)``), i.e. near the identity.

    Args:
        hidden_channels: width of each conditioner's hidden convolutions.

    References: Nagar, Dufraisse & Varma, "CInC Flow: Characterizable Invertible 3x3
    Convolution", arXiv:2107.01358 (Quad-coupling); Glow's sigmoid scale, Kingma & Dhariwal,
    arXiv:1807.03039. What was verified: the paper text available here only names
    Quad-coupling (abstract); the structure above follows the authors' reference code
    (github.com/Naagar/Normalizing_Flow_3x3_inv, ``model.py``, ``flow_coupling == 2``): quarters
    by channel slicing, conditioners on ``z[..., :k*block]`` of the un-transformed input,
    ``shift = h[..., 0::2]``, ``scale = sigmoid(h[..., 1::2] + 2)``, Glow's ``f`` network
    (3x3 conv, ReLU, 1x1 conv, ReLU, zero 3x3 conv). That code's reverse branch is not the
    inverse of its forward (it takes ``x1`` from the last quarter and conditions on the
    recovered quarters in a different order); here the inverse is the exact one above.
    Unlike that code (which puts any remainder into x4), ``C`` must be divisible by 4.
    """

    event_ndims = 3

    def __init__(self, hidden_channels: int = 64, **kwargs: Any):
        super().__init__(**kwargs)
        self.hidden_channels = int(hidden_channels)
        self.conditioners: list = []

    def build(self, input_shape):
        height, width, channels = self.input_event_shape
        if channels is None or channels % 4 != 0 or channels < 4:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' expects a channel count divisible by 4 "
                f"(expected C % 4 == 0, C >= 4), got C={channels} (input shape "
                f"{tuple(input_shape)})"
            )
        from tfinv.nets import GlowConvNet

        self._block = channels // 4
        self.conditioners = []
        for k in range(1, 4):
            net = GlowConvNet(self.hidden_channels, 2 * self._block, name=f"conditioner_{k}")
            net.build((None, height, width, k * self._block))
            self.conditioners.append(net)
        super().build(input_shape)

    def _quarters(self, x):
        b = self._block
        return [x[..., i * b : (i + 1) * b] for i in range(4)]

    def _params(self, k, context):
        """``(shift, raw_scale)`` of quarter ``k + 1`` (k = 1, 2, 3) from the first k quarters."""
        theta = self.conditioners[k - 1](context)
        return theta[..., 0::2], theta[..., 1::2]

    def _forward_and_log_det(self, x):
        xs = self._quarters(x)
        outs = [xs[0]]
        log_det = 0.0
        for k in range(1, 4):
            context = xs[0] if k == 1 else tf.concat(xs[:k], axis=-1)
            shift, raw = self._params(k, context)
            z_k, log_s = coupling.affine_forward(xs[k], shift, raw)
            outs.append(z_k)
            log_det = log_det + tf.reduce_sum(log_s, axis=[-3, -2, -1])
        return tf.concat(outs, axis=-1), log_det

    def _inverse_and_log_det(self, z):
        zs = self._quarters(z)
        xs = [zs[0]]
        log_det = 0.0
        for k in range(1, 4):
            context = xs[0] if k == 1 else tf.concat(xs, axis=-1)
            shift, raw = self._params(k, context)
            x_k, log_s = coupling.affine_inverse(zs[k], shift, raw)
            xs.append(x_k)
            log_det = log_det - tf.reduce_sum(log_s, axis=[-3, -2, -1])
        return tf.concat(xs, axis=-1), log_det

    def get_config(self):
        return {**super().get_config(), "hidden_channels": self.hidden_channels}
