"""Fixed random permutation of the channel (last) axis."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det


@keras.saving.register_keras_serializable(package="tfinv")
class Permute(InvertibleLayer):
    """``z[..., i] = x[..., perm[i]]`` for a fixed permutation ``perm`` of the last axis.

    Inverse: ``x[..., perm[i]] = z[..., i]``. Log-det: 0.
    Shapes: ``(..., C) -> (..., C)``; event_ndims = 1, so the log-det has shape ``x.shape[:-1]``.

    Args:
        permutation: explicit permutation of ``range(C)``; if ``None``, drawn from ``seed``.
        seed: seed of the random permutation.

    References: Dinh et al., "NICE", arXiv:1410.8516 (fixed permutations between couplings).
    """

    event_ndims = 1

    def __init__(self, permutation: list[int] | None = None, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.permutation = None if permutation is None else [int(i) for i in permutation]
        self.seed = int(seed)

    def build(self, input_shape):
        channels = self.input_event_shape[-1]
        if self.permutation is None:
            perm = np.random.default_rng(self.seed).permutation(channels)
        else:
            perm = np.asarray(self.permutation)
            if sorted(perm.tolist()) != list(range(channels)):
                raise ValueError(
                    f"Permute '{self.name}': permutation must be a permutation of range({channels}), "
                    f"got {self.permutation}"
                )
        self._perm = perm.astype(np.int32)
        self._inverse_perm = np.argsort(perm).astype(np.int32)
        super().build(input_shape)

    def _forward_and_log_det(self, x):
        return tf.gather(x, self._perm, axis=-1), batch_log_det(0.0, x, self.event_ndims)

    def _inverse_and_log_det(self, z):
        return tf.gather(z, self._inverse_perm, axis=-1), batch_log_det(0.0, z, self.event_ndims)

    def get_config(self):
        return {**super().get_config(), "permutation": self.permutation, "seed": self.seed}
