"""Memory-efficient Woodbury transformation: low-rank updates along channel, height and width."""

from __future__ import annotations

import keras

from tfinv.layers.woodbury import Woodbury, _check_rank


@keras.saving.register_keras_serializable(package="tfinv")
class MEWoodbury(Woodbury):
    """``z = W_w (W_h (W_c x))`` with ``W_a = I + U_a V_a^T`` acting along one axis ``a``: the
    channels at every pixel (``C x r_c``), the height of every (column, channel) (``H x r_h``),
    the width of every (row, channel) (``W x r_w``).

    Where `Woodbury` keeps ``HW x r_s`` spatial factors, ME-Woodbury factors the spatial
    transform into a height and a width transform, so its weights grow with ``H + W`` instead of
    ``H * W`` (the "memory-efficient" variant of the paper); every output entry still depends on
    its whole row, column and pixel.

    Inverse: the three Woodbury inverses in reverse order (width, height, channel),
    ``(I + U V^T)^-1 = I - U (I_r + V^T U)^-1 V^T``, with parameter-only ``r x r`` inverses.
    Log-det (Sylvester): ``H W log|det(I + V_c^T U_c)| + C W log|det(I + V_h^T U_h)|
    + C H log|det(I + V_w^T U_w)|``, three ``r x r`` log-determinants of parameters.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with static ``H, W, C``; log-det ``(B,)``.

    Invertibility is handled as in `Woodbury` (identity start, likelihood barrier,
    `check_invertible` at every eager inverse and at export).

    Args:
        channel_rank: ``r_c <= C``; ``None`` means ``min(C, 8)``.
        height_rank: ``r_h <= H``; ``None`` means ``min(H, 8)``.
        width_rank: ``r_w <= W``; ``None`` means ``min(W, 8)``.
        seed: seed of the random initial ``U`` factors.

    Raises:
        ValueError: at build, if a rank exceeds the dimension it acts on.

    References: Lu & Huang, "Woodbury Transformations for Deep Generative Flows",
    arXiv:2002.12229, §3.2 (memory-efficient Woodbury transformation).
    """

    def __init__(self, channel_rank: int | None = None, height_rank: int | None = None,
                 width_rank: int | None = None, seed: int = 0, **kwargs):
        super().__init__(channel_rank=channel_rank, spatial_rank=None, seed=seed, **kwargs)
        self.height_rank = _check_rank(type(self).__name__, "height", height_rank)
        self.width_rank = _check_rank(type(self).__name__, "width", width_rank)

    def _transform_ranks(self):
        return {"channel": self.channel_rank, "height": self.height_rank, "width": self.width_rank}

    def get_config(self):
        config = super().get_config()
        config.pop("spatial_rank")
        return {**config, "height_rank": self.height_rank, "width_rank": self.width_rank}
