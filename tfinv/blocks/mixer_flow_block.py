"""One MixerFlow block: a token-mixing flow over the patches, then a channel-mixing flow over the
values of each patch, each shared by all the columns (rows) it is applied to."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.layers.vector_act_norm import VectorActNorm
from tfinv.layers.vector_affine_coupling import VectorAffineCoupling
from tfinv.layers.vector_inv_linear import VectorInvLinear


def _swap_last_axes(x):
    return tf.linalg.matrix_transpose(x)


@keras.saving.register_keras_serializable(package="tfinv")
class MixerFlowBlock(InvertibleLayer):
    """``z = channel_flow(token_flow(x^T)^T)`` on a patch tensor ``x`` of shape ``(P, D)``.

    Each flow is a vector Glow step, ``f = coupling ∘ linear ∘ actnorm`` (`VectorActNorm`,
    `VectorInvLinear`, `VectorAffineCoupling` with an MLP conditioner):

    * token mixing: ``f_tok`` acts on the ``P`` patch values of one channel and is applied with
      the same weights to each of the ``D`` columns of ``x`` (``x^T`` is ``(D, P)``); its ActNorm
      is a per-patch-position scale;
    * channel mixing: ``f_ch`` acts on the ``D`` values of one patch and is applied with the same
      weights to each of the ``P`` rows.

    This is MLP-Mixer's block (token-mixing MLP then channel-mixing MLP, weights shared across
    channels and across patches respectively) with each MLP replaced by a flow in which that
    MLP is the coupling's conditioner.

    Inverse: ``x = (f_tok^-1(f_ch^-1(z)^T))^T``, the two flows' inverses in reverse order.
    Log-det: ``sum_{d<D} log|det J_tok(x[:, d])| + sum_{p<P} log|det J_ch(y[p, :])|``: the
    Jacobian is block diagonal over the columns (rows), so the per-column log-dets add up.
    Shapes: ``(B, P, D) -> (B, P, D)`` with ``P, D >= 2``; event_ndims = 2, log-det ``(B,)``.

    Args:
        hidden_units: width of both conditioner MLPs.
        seed: seed of the two linear layers' initial rotations (``seed`` and ``seed + 1``).

    References: English et al., "MixerFlow: MLP-Mixer meets Normalising Flows",
    arXiv:2310.16777; Tolstikhin et al., "MLP-Mixer", arXiv:2105.01601;
    Kingma & Dhariwal, "Glow", arXiv:1807.03039.
    """

    event_ndims = 2

    def __init__(self, hidden_units: int = 64, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = int(hidden_units)
        self.seed = int(seed)
        self.token_flow = self._vector_step("token", self.seed)
        self.channel_flow = self._vector_step("channel", self.seed + 1)

    def _vector_step(self, prefix: str, seed: int) -> list[InvertibleLayer]:
        return [
            VectorActNorm(name=f"{prefix}_act_norm"),
            VectorInvLinear(seed=seed, name=f"{prefix}_linear"),
            VectorAffineCoupling(hidden_units=self.hidden_units, name=f"{prefix}_coupling"),
        ]

    def build(self, input_shape):
        patches, dim = self.input_event_shape
        if patches is None or dim is None or patches < 2 or dim < 2:
            raise ValueError(
                f"MixerFlowBlock '{self.name}' expects a static event (P, D) with P >= 2 patches and "
                f"D >= 2 values per patch, got {self.input_event_shape}"
            )
        batch = tuple(input_shape[:-2])
        for layer in self.token_flow:
            layer.build(batch + (dim, patches))
        for layer in self.channel_flow:
            layer.build(batch + (patches, dim))
        super().build(input_shape)

    @staticmethod
    def _run(layers, h, total, inverse: bool):
        for layer in (reversed(layers) if inverse else layers):
            h, log_det = layer.inverse_and_log_det(h) if inverse else layer.forward_and_log_det(h)
            total += tf.cast(tf.reduce_sum(log_det, axis=-1), total.dtype)  # one log-det per column (row): add them
        return h, total

    def _forward_and_log_det(self, x):
        total = tf.zeros(tf.shape(x)[:-2], self.log_det_dtype)
        h, total = self._run(self.token_flow, _swap_last_axes(x), total, inverse=False)
        return self._run(self.channel_flow, _swap_last_axes(h), total, inverse=False)

    def _inverse_and_log_det(self, z):
        total = tf.zeros(tf.shape(z)[:-2], self.log_det_dtype)
        h, total = self._run(self.channel_flow, z, total, inverse=True)
        h, total = self._run(self.token_flow, _swap_last_axes(h), total, inverse=True)
        return _swap_last_axes(h), total

    def _initialize(self, x):
        h = _swap_last_axes(x)
        for layer in self.token_flow:
            h = layer.initialize(h)
        h = _swap_last_axes(h)
        for layer in self.channel_flow:
            h = layer.initialize(h)

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units, "seed": self.seed}
