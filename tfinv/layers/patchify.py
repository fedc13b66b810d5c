"""Image to a sequence of flattened patches (the token layout of MLP-Mixer and ViT)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det


@keras.saving.register_keras_serializable(package="tfinv")
class Patchify(InvertibleLayer):
    """``(H, W, C) -> (P, D)``: the ``p x p`` patches, row-major, each flattened to ``D = p*p*C``.

    ``z[b, i * (W/p) + j, (u * p + v) * C + c] = x[b, i * p + u, j * p + v, c]``.

    Inverse: the patches put back in place. Log-det: 0 (a permutation of entries).
    Shapes: ``(B, H, W, C) -> (B, P, D)`` with ``P = (H/p)(W/p)``; H and W divisible by ``p``.
    ``event_ndims = 3`` and ``output_event_ndims = 2``: the layer lowers the event rank.

    Args:
        patch_size: side ``p`` of the square patches (``>= 1``).

    References: Tolstikhin et al., "MLP-Mixer", arXiv:2105.01601, §2 (the per-patch table);
    English et al., "MixerFlow", arXiv:2310.16777.
    """

    event_ndims = 3
    output_event_ndims = 2

    def __init__(self, patch_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        if int(patch_size) < 1:
            raise ValueError(f"Patchify patch_size must be >= 1, got {patch_size}")
        self.patch_size = int(patch_size)

    def build(self, input_shape):
        height, width, channels = self.input_event_shape
        if None in (height, width, channels):
            raise ValueError(f"Patchify '{self.name}' needs a static (H, W, C), got {self.input_event_shape}")
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(
                f"Patchify '{self.name}' with patch_size={p} expects H and W divisible by {p}, "
                f"got (H, W) = ({height}, {width})"
            )
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        *batch, h, w, c = input_shape
        p = self.patch_size
        patches = None if h is None or w is None else (h // p) * (w // p)
        return (*batch, patches, None if c is None else p * p * c)

    def compute_input_shape(self, output_shape):
        *batch, _, _ = output_shape
        return (*batch, *self.input_event_shape)

    def _forward_and_log_det(self, x):
        p = self.patch_size
        grid = x if p == 1 else tf.nn.space_to_depth(x, p)  # (B, H/p, W/p, p*p*C), (u, v, c) order
        batch = tf.shape(x)[:-3]
        patches, dim = self.output_event_shape
        z = tf.reshape(grid, tf.concat([batch, [patches, dim]], 0))
        return z, batch_log_det(0.0, x, self.event_ndims)

    def _inverse_and_log_det(self, z):
        p = self.patch_size
        height, width, channels = self.input_event_shape
        batch = tf.shape(z)[:-2]
        grid = tf.reshape(z, tf.concat([batch, [height // p, width // p, p * p * channels]], 0))
        x = grid if p == 1 else tf.nn.depth_to_space(grid, p)
        return x, batch_log_det(0.0, z, self.output_event_ndims)

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size}
