"""Woodbury transformation: low-rank updates of the identity along the channel and spatial axes."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.export_mode import is_exporting
from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.ops import woodbury

#: Rank used when a rank argument is ``None``: ``min(n, DEFAULT_RANK)`` for an axis of length n.
DEFAULT_RANK = 8

# Axes of an NHWC input as (start, stop) ranges; (1, 3) is H and W flattened to H*W.
_AXES = {"channel": (3, 4), "spatial": (1, 3), "height": (1, 2), "width": (2, 3)}
_SYMBOL = {"channel": "C", "spatial": "H*W", "height": "H", "width": "W"}


def _check_rank(owner: str, label: str, rank) -> int | None:
    if rank is None:
        return None
    if isinstance(rank, bool) or int(rank) != rank or int(rank) < 1:
        raise ValueError(f"{owner} {label}_rank must be an integer >= 1 or None, got {rank!r}")
    return int(rank)


@keras.saving.register_keras_serializable(package="tfinv")
class Woodbury(InvertibleLayer):
    """``y = (I_C + U_c V_c^T) x`` at every pixel, then ``z = (I_HW + U_s V_s^T) y`` along the
    flattened ``H*W`` axis of every channel.

    ``U_c, V_c`` are ``C x r_c`` and ``U_s, V_s`` are ``HW x r_s``: each transform mixes *all*
    the entries of its axis through a rank-``r`` update of the identity, at a cost of
    ``O((r_c + r_s) H W C)`` per image -- linear in the input size, for the density and sampling.

    Inverse (Woodbury identity), spatial first, then channel::

        (I + U V^T)^-1 = I - U (I_r + V^T U)^-1 V^T

    the ``r x r`` inverses depend on the parameters only (folded into constants at export).
    Log-det (Sylvester's identity)::

        H*W * log|det(I_rc + V_c^T U_c)| + C * log|det(I_rs + V_s^T U_s)|

    two ``r x r`` log-determinants of parameters, computed through QR (XLA has no ``slogdet``).
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with static ``H, W, C``; log-det ``(B,)``.

    Invertibility: ``I + U V^T`` is invertible iff ``I_r + V^T U`` is. ``U`` and ``V`` are free
    parameters, as in the paper: nothing forces ``det(I_r + V^T U) != 0``. What keeps it there:
    ``V`` starts at zero (the layer starts as the identity, ``I_r + V^T U = I_r``), and maximum
    likelihood pushes away from singular transforms, whose log-det tends to ``-inf`` (a barrier
    in the loss; only a large step can jump across it). If the weights do reach a (nearly)
    singular transform, the log-det collapses (``-inf``/NaN when exactly singular, which
    ``TerminateOnNaN`` stops), and `check_invertible` -- run by every eager inverse and by the
    ONNX export -- raises a ``ValueError`` naming the layer, the transform and ``cond(W)``
    (limit 1e6) instead of returning a wrong inverse.

    Args:
        channel_rank: ``r_c <= C``; ``None`` means ``min(C, 8)``.
        spatial_rank: ``r_s <= H*W``; ``None`` means ``min(H*W, 8)``.
        seed: seed of the random initial ``U`` (entries ``N(0, 1/n)``).

    Raises:
        ValueError: at build, if a rank exceeds the dimension it acts on.

    References: Lu & Huang, "Woodbury Transformations for Deep Generative Flows",
    arXiv:2002.12229, §3.1 (Woodbury transformation) and §3.2 (ME-Woodbury, see `MEWoodbury`).
    """

    event_ndims = 3
    full_precision = True  # its r x r solves have no bfloat16 kernels

    def __init__(self, channel_rank: int | None = None, spatial_rank: int | None = None,
                 seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.channel_rank = _check_rank(type(self).__name__, "channel", channel_rank)
        self.spatial_rank = _check_rank(type(self).__name__, "spatial", spatial_rank)
        self.seed = int(seed)

    # ---------------------------------------------------------------- structure
    def _transform_ranks(self) -> dict[str, int | None]:
        """``axis label -> requested rank``, in the order the forward map applies them."""
        return {"channel": self.channel_rank, "spatial": self.spatial_rank}

    def build(self, input_shape):
        event = self.input_event_shape
        if any(d is None for d in event):
            raise ValueError(
                f"{type(self).__name__} '{self.name}' needs static H, W and C, got input shape "
                f"{tuple(input_shape)}"
            )
        rng = np.random.default_rng(self.seed)
        self._plan = []  # (label, axes); the weights are the attributes `<label>_u`, `<label>_v`
        for label, requested in self._transform_ranks().items():
            start, stop = _AXES[label]
            n = math.prod(event[start - 1 : stop - 1])
            rank = min(n, DEFAULT_RANK) if requested is None else requested
            if rank > n:
                raise ValueError(
                    f"{type(self).__name__} '{self.name}': {label}_rank must be <= "
                    f"{_SYMBOL[label]} = {n} (the dimension it acts on), got {rank}"
                )
            initial_u = rng.standard_normal((n, rank)) / math.sqrt(n)
            u = self.add_weight(name=f"{label}_u", shape=(n, rank),
                                initializer=keras.initializers.Constant(initial_u))
            v = self.add_weight(name=f"{label}_v", shape=(n, rank), initializer="zeros")
            setattr(self, f"{label}_u", u)
            setattr(self, f"{label}_v", v)
            self._plan.append((label, (start, stop)))
        super().build(input_shape)

    def _transforms(self):
        """``[(label, axes, U, V)]`` in forward order."""
        return [(label, axes, getattr(self, f"{label}_u"), getattr(self, f"{label}_v"))
                for label, axes in self._plan]

    # ---------------------------------------------------------------- invertibility
    def check_invertible(self, max_condition: float = woodbury.MAX_CONDITION) -> dict[str, float]:
        """Raises ``ValueError`` if a transform ``I + U V^T`` is singular or too ill-conditioned to
        invert in float32; returns ``{axis: cond(I + U V^T)}`` (exact, from ``2r x 2r`` matrices)."""
        with tf.init_scope():  # reads the current weights even while a graph is being traced
            return {
                label: woodbury.assert_invertible(
                    u.numpy(), v.numpy(), f"{type(self).__name__} '{self.name}' ({label} transform)",
                    max_condition,
                )
                for label, _, u, v in self._transforms()
            }

    # ---------------------------------------------------------------- maps
    def _log_det(self, x):
        size = math.prod(self.input_event_shape)
        total = 0.0
        for _, (start, stop), u, v in self._transforms():
            n = u.shape[0]
            total += (size // n) * woodbury.log_abs_det_update(u, v)  # one copy per other entry
        return batch_log_det(total, x, self.event_ndims)

    def _forward_and_log_det(self, x):
        if is_exporting():
            self.check_invertible()
        y = x
        for _, axes, u, v in self._transforms():
            y = woodbury.apply_update(y, u, v, axes)
        return y, self._log_det(x)

    def _inverse_and_log_det(self, z):
        if is_exporting() or tf.executing_eagerly():
            self.check_invertible()
        x = z
        for _, axes, u, v in reversed(self._transforms()):
            x = woodbury.apply_update(x, woodbury.inverse_left_factor(u, v), v, axes)
        return x, -self._log_det(z)

    def get_config(self):
        return {**super().get_config(), "channel_rank": self.channel_rank,
                "spatial_rank": self.spatial_rank, "seed": self.seed}
