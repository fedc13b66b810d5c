"""Multi-scale Glow (Kingma & Dhariwal, arXiv:1807.03039), composed from invertible layers."""

from __future__ import annotations

from typing import Any, Sequence

import keras

from tfinv.blocks.glow_step import GlowStep
from tfinv.core.flow_model import FlowModel
from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.core.invertible_sequential import InvertibleSequential
from tfinv.layers.factor_out import FactorOut
from tfinv.layers.flatten import Flatten
from tfinv.layers.learned_prior import LearnedPrior
from tfinv.layers.logit_preprocess import LogitPreprocess
from tfinv.layers.squeeze import Squeeze


# XLA training on a CPU-only machine up to this many values per image (see `FlowModel.compile`):
# measured faster on 8x8 digits (64 values: benchmarks/speed.py --train-only), slower at 32x32x3
# (3072); untested in between, so only small images.
CPU_XLA_TRAINING_MAX_DIMS = 256
# XLA for the data direction of inference (log_prob, forward) on a CPU-only machine up to this
# many values: measured faster than graph mode for batches of 1 to 360 at 8x8x1 and 32x32x3
# (benchmarks/inference_modes.py).
CPU_XLA_INFERENCE_MAX_DIMS = 3072


def glow_layers(
    levels: int,
    steps_per_level: int,
    hidden_channels: int,
    coupling: str = "affine",
    num_levels: int | None = 17,
    seed: int = 0,
    linear: str = "inv_conv1x1",
    learned_prior: bool = False,
    context_shape: Sequence[int] | None = None,
    context_features: int = 16,
    conditioner: dict | None = None,
    conditioner_actnorm: bool = False,
    attention: str | None = None,
    context_downsampling: str = "bilinear",
) -> list[InvertibleLayer]:
    """Glow's layers: ``[LogitPreprocess, level_0, FactorOut([level_1, FactorOut([... level_{L-1},
    (LearnedPrior,) Flatten])])]``, each level a `Squeeze` then ``steps_per_level`` `GlowStep`s
    (``conditioner``: a serialised conditioner template for every coupling, see `GlowStep`)."""

    def level(index: int) -> InvertibleSequential:
        steps = [
            GlowStep(hidden_channels, coupling, seed=seed + 1000 * index + step, linear=linear,
                     context_shape=context_shape, context_features=context_features, conditioner=conditioner,
                     conditioner_actnorm=conditioner_actnorm, attention=attention,
                     context_downsampling=context_downsampling, name=f"step_{step}")
            for step in range(steps_per_level)
        ]
        return InvertibleSequential([Squeeze(name="squeeze")] + steps, name=f"level_{index}")

    top = [level(levels - 1)]
    if learned_prior:
        top.append(LearnedPrior(context_shape=context_shape, name="top_prior"))
    top.append(Flatten(name="flatten"))
    body: list[InvertibleLayer] = top
    for index in reversed(range(levels - 1)):
        inner = InvertibleSequential(body, name=f"scales_{index + 1}")
        body = [level(index), FactorOut(inner, learned_prior=learned_prior, name=f"factor_out_{index}")]
    front = [] if num_levels is None else [LogitPreprocess(num_levels, name="preprocess")]
    return front + body


def multiscale_shape_error(name: str, levels: int, factor: int, height: int, width: int) -> str:
    """The message for a multi-scale model whose ``levels`` need H and W divisible by ``factor``:
    what was expected, and the two fixes (resize the images, or use fewer levels)."""
    # The most levels (below ``levels``) this H and W allow: each level fewer halves the factor.
    fits = next((k for k in range(levels - 1, 0, -1)
                 if height % (factor >> (levels - k)) == 0 and width % (factor >> (levels - k)) == 0), 0)
    resize = (f"pad the images to ({-(-height // factor) * factor}, {-(-width // factor) * factor}) or crop them "
              f"to ({height // factor * factor}, {width // factor * factor})")
    fewer = f", or use levels <= {fits}" if fits else ""
    return (f"{name} with {levels} level{'s' if levels != 1 else ''} needs H and W divisible by {factor}, "
            f"got (H, W) = ({height}, {width}): {resize}{fewer}")


@keras.saving.register_keras_serializable(package="tfinv")
class Glow(FlowModel):
    """Multi-scale Glow: per level, squeeze then K steps (ActNorm, 1x1 conv, coupling); after
    every level but the last, half of the channels is factored out as latents (`FactorOut`).

    Forward: ``x -> z`` with ``z`` the flat concatenation of the factored-out latents and the last
    level's output (``D = H * W * C`` entries). Inverse: the reverse, re-inserting each factored
    part before its level. Log-det: the sum over all steps (and the logit preprocessing).
    Shapes: ``(B, H, W, C) -> (B, H*W*C)``; H and W divisible by ``2**levels``.

    The model is a composition (`glow_layers`): no hand-written multi-scale walk.
    Priors: by default every latent has the model's ``base`` (standard normal). With
    ``learned_prior=True``, Glow's learned priors: each factored-out half is standardised under
    ``N(mu, sigma^2)`` predicted from the kept half by a zero-initialised convolution, and the last
    level's output under a learned per-channel Gaussian (`LearnedPrior`, conditioned on the
    context when there is one); the flow then ends in N(0, I) noise, so sampling and the exported
    inverse graph still take standard normal noise.
    The paper's configuration: ``Glow(coupling="affine", learned_prior=True,
    conditioner_actnorm=True)`` (or ``coupling="additive"``, the paper's other choice) is Glow as
    in arXiv:1807.03039 and its reference code (openai/glow): ActNorm -> LU 1x1 convolution ->
    coupling with ``s = sigmoid(h + 2)``, a conditioner ``conv3x3 -> ActNorm -> ReLU -> conv1x1 ->
    ActNorm -> ReLU -> zero conv3x3``, learned split priors from a zero-initialised convolution of
    the kept half, and a learned top prior. The defaults differ in two ways: no ActNorm in the
    conditioner (biased convolutions instead) and standard normal priors. Still different from the
    paper with every option: the input is logit-preprocessed dequantised data (the paper models
    ``x / 256 - 1/2`` with uniform noise) and the paper's widths (512 hidden channels, 32 steps
    per level) are not defaults; pass them.
    Conditioning (``context_shape``): every coupling's conditioner also sees features of the
    context (`tfinv.nets.ContextEncoder`); a class-conditional Glow takes one-hot labels.

    Args:
        input_shape: ``(H, W, C)`` of one image.
        levels: number of scales ``L``.
        steps_per_level: Glow steps ``K`` per scale.
        hidden_channels: width of the coupling conditioners.
        coupling: ``"affine"``, ``"additive"``, ``"soft_clamp"`` (the cINN paper's affine coupling with
            a soft-clamped scale, `SoftClampAffineCoupling`) or ``"quad"`` (CInC Flow's `QuadCoupling`; every
            level's channel count after the squeeze must then be divisible by 4, e.g. ``C = 1``
            or ``C = 2`` input channels give 4 and 8).
        num_levels: pixel levels of the data for the `LogitPreprocess` front layer (17 for digits,
            256 for 8-bit images); ``None`` models the data as given, with no preprocessing.
        seed: seed of the linear layers' initialisation.
        linear: the channel-mixing layer of every step, a name registered in
            `tfinv.blocks.glow_step.LINEAR_LAYERS` (``"inv_conv1x1"``: Glow's LU 1x1 convolution;
            ``"entropy_weighted"``: the 1x1 convolution then EIW-Flow's channel weighting and shuffle,
            `EntropyWeightedShuffle`, arXiv:2407.04958).
        learned_prior: Glow's learned split priors and learned top prior.
        conditioner_actnorm: ActNorm after each hidden convolution of every coupling's
            conditioner (the paper's network; initialised by `initialize`).
        context_shape: shape of one context for a conditional Glow (e.g. ``(10,)`` one-hot labels).
        context_features: channels of the context features given to each conditioner.
        context_downsampling: ``"bilinear"`` or ``"patch"``: how an image context at a finer
            resolution than a level reaches its couplings (`tfinv.nets.ContextEncoder`).
        attention: ``None``, ``"imap"`` or ``"itrans"``: Sukthanker et al.'s invertible attention
            (`IMapAttention`, `ITransAttention`, arXiv:2106.03959) appended to every step after its
            coupling (`tfinv.blocks.glow_step.ATTENTION_LAYERS`; the placement after the coupling
            is ours). ``"itrans"`` holds ``(H W / 4)^2`` attention matrices at the first level
            (at most 4096 positions per level).
        base, validate_args, **kwargs: see `FlowModel`.
    """

    cpu_xla_training_max_dims = CPU_XLA_TRAINING_MAX_DIMS
    cpu_xla_inference_max_dims = CPU_XLA_INFERENCE_MAX_DIMS

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
        learned_prior: bool = False,
        context_shape: Sequence[int] | None = None,
        context_features: int = 16,
        conditioner_actnorm: bool = False,
        attention: str | None = None,
        context_downsampling: str = "bilinear",
        **kwargs: Any,
    ):
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3:
            raise ValueError(f"Glow needs input_shape (H, W, C), got {tuple(input_shape)}")
        if levels < 1 or steps_per_level < 1:
            raise ValueError(f"Glow needs levels >= 1 and steps_per_level >= 1, got {levels}, {steps_per_level}")
        height, width, _ = shape
        if height % 2**levels or width % 2**levels:
            raise ValueError(multiscale_shape_error("Glow", levels, 2**levels, height, width))
        kwargs.pop("layers", None)
        layers = glow_layers(int(levels), int(steps_per_level), int(hidden_channels), coupling,
                             None if num_levels is None else int(num_levels), int(seed), linear,
                             bool(learned_prior), context_shape, int(context_features),
                             conditioner_actnorm=bool(conditioner_actnorm), attention=attention,
                             context_downsampling=context_downsampling)
        super().__init__(layers, input_shape=shape, context_shape=context_shape, **kwargs)
        self.levels = int(levels)
        self.steps_per_level = int(steps_per_level)
        self.hidden_channels = int(hidden_channels)
        self.coupling = coupling
        self.num_levels = None if num_levels is None else int(num_levels)
        self.seed = int(seed)
        self.linear = linear
        self.learned_prior = bool(learned_prior)
        self.context_features = int(context_features)
        self.conditioner_actnorm = bool(conditioner_actnorm)
        self.attention = attention
        self.context_downsampling = context_downsampling

    # ------------------------------------------------------------- views into the composition
    @property
    def preprocess(self) -> LogitPreprocess | None:
        """The `LogitPreprocess` front layer (``None`` without ``num_levels``)."""
        first = self.flow.steps[0]
        return first if isinstance(first, LogitPreprocess) else None

    @property
    def scales(self) -> list[InvertibleSequential]:
        """The levels (squeeze + steps), outermost first."""
        found, steps = [], list(self.flow.steps)
        while steps:
            layer = steps.pop(0)
            if isinstance(layer, InvertibleSequential) and layer.name.startswith("level_"):
                found.append(layer)
            elif isinstance(layer, FactorOut):
                steps = list(layer.inner.steps)
        return found

    def get_config(self):
        return {
            **self._model_config(),
            "levels": self.levels,
            "steps_per_level": self.steps_per_level,
            "hidden_channels": self.hidden_channels,
            "coupling": self.coupling,
            "num_levels": self.num_levels,
            "seed": self.seed,
            "linear": self.linear,
            "learned_prior": self.learned_prior,
            "context_features": self.context_features,
            "conditioner_actnorm": self.conditioner_actnorm,
            "attention": self.attention,
            **({"context_downsampling": self.context_downsampling}
               if self.context_downsampling != "bilinear" else {}),
        }
