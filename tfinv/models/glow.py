"""Multi-scale Glow (Kingma & Dhariwal, arXiv:1807.03039)."""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from tfinv.blocks.glow_step import GlowStep
from tfinv.blocks.invertible_sequential import InvertibleSequential
from tfinv.core.flow_model import FlowModel
from tfinv.layers.logit_preprocess import LogitPreprocess
from tfinv.layers.squeeze import Squeeze


@keras.saving.register_keras_serializable(package="tfinv")
class Glow(FlowModel):
    """Multi-scale Glow: per level, squeeze then K steps (ActNorm, 1x1 conv, coupling); after
    every level but the last, half of the channels is factored out as latents.

    Forward: ``x -> z`` with ``z`` the flat concatenation of the factored-out latents and the last
    level's output (``D = H * W * C`` entries). Inverse: the reverse, re-inserting each factored
    part before its level. Log-det: the sum over all steps (and the logit preprocessing).
    Shapes: ``(B, H, W, C) -> (B, H*W*C)``; H and W divisible by ``2**levels``.

    The prior of every latent is a standard normal (Glow's learned split priors are omitted).

    Args:
        input_shape: ``(H, W, C)`` of one image.
        levels: number of scales ``L``.
        steps_per_level: Glow steps ``K`` per scale.
        hidden_channels: width of the coupling conditioners.
        coupling: ``"affine"`` or ``"additive"``.
        num_levels: pixel levels of the data for the `LogitPreprocess` front layer (17 for digits,
            256 for 8-bit images); ``None`` models the data as given, with no preprocessing.
        seed: seed of the linear layers' initialisation.
        linear: the channel-mixing layer of every step, a name registered in
            `tfinv.blocks.glow_step.LINEAR_LAYERS` (``"inv_conv1x1"``: Glow's LU 1x1 convolution).
        **kwargs: `FlowModel` arguments: ``validate_args=True`` checks every layer's input
            (finite; the preprocessing's ``[0, num_levels]``), raising ``InvalidArgumentError``
            naming the layer; off by default, when out-of-range data give NaN silently.
            ``dtype`` sets the dtype policy of every layer.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (8, 8, 1),
        levels: int = 2,
        steps_per_level: int = 4,
        hidden_channels: int = 64,
        coupling: str = "affine",
        num_levels: int | None = 17,
        seed: int = 0,
        linear: str = "inv_conv1x1",
        **kwargs,
    ):
        super().__init__(input_shape=input_shape, **kwargs)
        if len(self.data_shape) != 3:
            raise ValueError(f"Glow needs input_shape (H, W, C), got {tuple(input_shape)}")
        if levels < 1 or steps_per_level < 1:
            raise ValueError(f"Glow needs levels >= 1 and steps_per_level >= 1, got {levels}, {steps_per_level}")
        height, width, _ = self.data_shape
        if height % 2**levels or width % 2**levels:
            raise ValueError(
                f"Glow with {levels} levels needs H and W divisible by {2**levels}, "
                f"got (H, W) = ({height}, {width})"
            )
        self.levels = int(levels)
        self.steps_per_level = int(steps_per_level)
        self.hidden_channels = int(hidden_channels)
        self.coupling = coupling
        self.num_levels = None if num_levels is None else int(num_levels)
        self.seed = int(seed)
        self.linear = linear
        self.preprocess = None if num_levels is None else LogitPreprocess(num_levels, name="preprocess")
        self.scales = [
            InvertibleSequential(
                [Squeeze(name="squeeze")]
                + [
                    GlowStep(hidden_channels, coupling, seed=seed + 1000 * level + step, linear=linear,
                             name=f"step_{step}")
                    for step in range(steps_per_level)
                ],
                name=f"level_{level}",
            )
            for level in range(levels)
        ]
        self.build()

    # ------------------------------------------------------------- structure
    def _build_flow(self, shape):
        if self.preprocess is not None:
            self.preprocess.build(shape)
        for level, scale in enumerate(self.scales):
            scale.build(shape)
            shape = scale.compute_output_shape(shape)
            if level < self.levels - 1:
                shape = shape[:-1] + (shape[-1] // 2,)

    def _level_shapes(self) -> list[tuple[int, ...]]:
        """Event shape of each latent block, in the order they are concatenated."""
        shapes, shape = [], (1,) + self.data_shape
        for level, scale in enumerate(self.scales):
            shape = scale.compute_output_shape(shape)
            if level < self.levels - 1:
                half = shape[-1] // 2
                shapes.append(tuple(shape[1:-1]) + (shape[-1] - half,))
                shape = shape[:-1] + (half,)
        shapes.append(tuple(shape[1:]))
        return shapes

    def compute_latent_shape(self):
        return (self.num_dims,)

    # ------------------------------------------------------------- directions
    def _forward_and_log_det(self, x):
        log_det = tf.zeros(tf.shape(x)[:1], self.log_det_dtype)
        h = x
        if self.preprocess is not None:
            h, ld = self.preprocess.forward_and_log_det(h)
            log_det += tf.cast(ld, log_det.dtype)
        latents = []
        for level, scale in enumerate(self.scales):
            h, ld = scale.forward_and_log_det(h)
            log_det += tf.cast(ld, log_det.dtype)
            if level < self.levels - 1:
                half = h.shape[-1] // 2
                latents.append(h[..., half:])
                h = h[..., :half]
        latents.append(h)
        batch = tf.shape(x)[0]
        z = tf.concat([tf.reshape(t, [batch, -1]) for t in latents], axis=-1)
        return z, log_det

    def _inverse_and_log_det(self, z):
        batch = tf.shape(z)[0]
        shapes = self._level_shapes()
        sizes = [int(tf.TensorShape(s).num_elements()) for s in shapes]
        parts = tf.split(z, sizes, axis=-1)
        log_det = tf.zeros([batch], self.log_det_dtype)
        h = tf.reshape(parts[-1], tf.concat([[batch], shapes[-1]], 0))
        for level in reversed(range(self.levels)):
            if level < self.levels - 1:
                factored = tf.reshape(parts[level], tf.concat([[batch], shapes[level]], 0))
                h = tf.concat([h, factored], axis=-1)
            h, ld = self.scales[level].inverse_and_log_det(h)
            log_det += tf.cast(ld, log_det.dtype)
        if self.preprocess is not None:
            h, ld = self.preprocess.inverse_and_log_det(h)
            log_det += tf.cast(ld, log_det.dtype)
        return h, log_det

    def _initialize(self, x):
        h = x if self.preprocess is None else self.preprocess.forward_and_log_det(x)[0]
        for level, scale in enumerate(self.scales):
            h = scale.initialize(h)
            if level < self.levels - 1:
                h = h[..., : h.shape[-1] // 2]

    def get_config(self):
        return {
            **super().get_config(),
            "levels": self.levels,
            "steps_per_level": self.steps_per_level,
            "hidden_channels": self.hidden_channels,
            "coupling": self.coupling,
            "num_levels": self.num_levels,
            "seed": self.seed,
            "linear": self.linear,
        }
