"""Small, non-identity instances of every registered layer, with example inputs and tolerances.

Adding a layer to tfinv means adding one file and one `Case` here; the contract harness
(`tfinv.testing.contract`, run by ``tests/test_contract.py``) does the rest.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import tensorflow as tf

from tfinv.testing.contract import perturb_weights
from tfinv.testing.rng import seeded


def _normal(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _counts(num_levels):
    """Dequantised pixel counts in ``[0, num_levels]``, away from the edges."""

    def draw(shape, seed):
        rng = np.random.default_rng(seed)
        return rng.uniform(0.05 * num_levels, 0.95 * num_levels, shape).astype(np.float32)

    return draw


def _wide_normal(shape, seed):
    """Standard normal times 2: reaches well into both asymptotic regimes of a smooth ReLU."""
    return 2.0 * np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _signed_away_from_zero(shape, seed):
    """Both signs with ``|x|`` in [0.3, 2]: keeps a leaky ReLU's kink at 0 out of reach."""
    rng = np.random.default_rng(seed)
    return (rng.choice([-1.0, 1.0], shape) * rng.uniform(0.3, 2.0, shape)).astype(np.float32)


def _orthonormal_kernel(shape, seed):
    """The orthonormal circular kernel nearest to a seeded Gaussian one (cyclic taps)."""
    from tfinv.ops.gaussianization import nearest_orthogonal_circular_kernel

    return nearest_orthogonal_circular_kernel(np.random.default_rng(seed).standard_normal(shape))[0]


@dataclass
class Case:
    """One contract case.

    Attributes:
        name: test id.
        make: builds a fresh, unbuilt layer.
        input_shape: example input shape, batch first.
        draw: ``draw(shape, seed) -> np.ndarray`` example inputs (default standard normal).
        perturb: scale of the Gaussian noise added to every trainable weight after build.
        round_trip_tol: relative tolerance of both round trips (float32).
        log_det_tol: relative tolerance of the log-det checks.
        initialize: run the layer's data-dependent initialisation before perturbing.
        rearrangement: the layer is a fixed rearrangement of its input's entries by design: the
            harness checks that instead of "not the identity" — ``"reorder"`` (Squeeze, Patchify:
            not the plain reshape) or ``"reshape"`` (Flatten: exactly the row-major reshape).
        weight_seed: offset of the weight perturbation's seed (picked so that a log-det which is
            not identically 0 is not near 0 either, where a relative tolerance means little).
        frozen: weights (substrings of their paths) that receive no gradient in one fit step,
            each with the reason; every other trainable weight must move.
        float64_round_trip_tol: relative round-trip tolerance under the ``float64`` policy.

    `build` is deterministic: the layer is constructed, built, initialised and perturbed under
    a seed derived from the case name and ``seed`` (unseeded Keras initialisers included), and
    the caller's global random state is left as it was.
    """

    name: str
    make: Callable[[], object]
    input_shape: tuple[int, ...]
    draw: Callable[[tuple[int, ...], int], np.ndarray] = _normal
    perturb: float = 0.1
    round_trip_tol: float = 1e-5
    log_det_tol: float = 1e-4
    initialize: bool = True
    float64_round_trip_tol: float = 1e-12
    tags: tuple[str, ...] = field(default_factory=tuple)
    rearrangement: str | None = None
    weight_seed: int = 0
    frozen: dict[str, str] = field(default_factory=dict)
    context_shape: tuple[int, ...] | None = None

    def example(self, seed: int = 0) -> tf.Tensor:
        return tf.constant(self.draw(self.input_shape, seed))

    def example_context(self, seed: int = 0) -> tf.Tensor | None:
        """A context for the example batch (standard normal), ``None`` for unconditional cases."""
        if self.context_shape is None:
            return None
        return tf.constant(_normal((self.input_shape[0],) + tuple(self.context_shape), seed + 100))

    def global_seed(self, seed: int = 0) -> int:
        """The seed `build` runs under: stable across processes, different for every case."""
        return (zlib.crc32(self.name.encode()) + 7919 * int(seed)) % (2**31 - 1)

    def build(self, seed: int = 0):
        """Returns ``(layer, x)``: the layer built on ``x``, initialised, with perturbed weights."""
        with seeded(self.global_seed(seed)):
            layer = self.make()
            x = self.example(seed)
            layer.build(tuple(x.shape))
            if self.initialize:
                layer.initialize(x, self.example_context(seed))
            perturb_weights(layer, self.perturb, seed + self.weight_seed)
        return layer, x


def cases() -> Iterator[Case]:
    """Yields a `Case` for every public layer class (``tfinv.layers.__all__``) and block."""
    from tfinv import blocks, layers, nets

    small = 8  # conditioner width: keeps Jacobians and fits cheap
    yield Case("ActNorm", lambda: layers.ActNorm(), (2, 4, 4, 3))
    yield Case("InvConv1x1", lambda: layers.InvConv1x1(seed=3), (2, 4, 4, 4))
    yield Case("AffineCoupling-channel",
               lambda: layers.AffineCoupling(mask="channel", hidden_channels=small), (2, 4, 4, 4))
    yield Case("AffineCoupling-channel-odd-parity1",
               lambda: layers.AffineCoupling(mask="channel", parity=1, hidden_channels=small),
               (2, 3, 3, 5))
    yield Case("AffineCoupling-checkerboard",
               lambda: layers.AffineCoupling(mask="checkerboard", parity=1, hidden_channels=small),
               (2, 4, 4, 2))
    yield Case("SoftClampAffineCoupling-checkerboard",
               lambda: layers.SoftClampAffineCoupling(clamp=1.5, mask="checkerboard", hidden_channels=small),
               (2, 4, 4, 2))
    yield Case("AdditiveCoupling-channel",
               lambda: layers.AdditiveCoupling(mask="channel", hidden_channels=small), (2, 4, 4, 4))
    yield Case("AdditiveCoupling-checkerboard",
               lambda: layers.AdditiveCoupling(mask="checkerboard", hidden_channels=small),
               (2, 4, 4, 1))
    # Kirichenko et al.'s OOD remedy: the conditioner squeezed through a dense 3-unit code
    yield Case("AffineCoupling-bottleneck-conditioner",
               lambda: layers.AffineCoupling(mask="channel",
                                             conditioner=nets.BottleneckConvNet(hidden_channels=4, bottleneck=3)),
               (2, 4, 4, 4))
    yield Case("Squeeze", lambda: layers.Squeeze(), (2, 4, 4, 2), rearrangement="reorder")
    yield Case("Permute", lambda: layers.Permute(seed=5), (2, 3, 3, 5))
    yield Case("Reverse", lambda: layers.Reverse(), (2, 3, 3, 4))
    yield Case("LogitPreprocess", lambda: layers.LogitPreprocess(num_levels=17), (2, 4, 4, 1),
               draw=_counts(17))
    yield Case("SmoothLeakyReLU", lambda: layers.SmoothLeakyReLU(negative_slope=0.2), (2, 4, 4, 3),
               draw=_wide_normal)
    yield Case("SmoothLeakyReLU-vector", lambda: layers.SmoothLeakyReLU(negative_slope=0.2, event_ndims=1), (2, 6),
               draw=_wide_normal)
    yield Case("SmoothLeakyReLU-small-slope", lambda: layers.SmoothLeakyReLU(negative_slope=0.01),
               (2, 4, 4, 3), draw=_wide_normal)
    yield Case("LearnableLeakyReLU", lambda: layers.LearnableLeakyReLU(initial_slope=0.3),
               (2, 4, 4, 3), draw=_signed_away_from_zero)
    yield Case("LearnableLeakyReLU-scalar",
               lambda: layers.LearnableLeakyReLU(initial_slope=0.3, per_channel=False),
               (2, 4, 4, 3), draw=_signed_away_from_zero)
    yield Case("OrthogonalDownsampling", lambda: layers.OrthogonalDownsampling(), (2, 4, 4, 3))
    # iUNet's learnable resampling (arXiv:2005.05220): per-channel orthogonal stride-2 kernels
    yield Case("InvertibleDownsampling-cayley", lambda: layers.InvertibleDownsampling(), (2, 4, 4, 3))
    yield Case("InvertibleUpsampling-householder-squeeze",
               lambda: layers.InvertibleUpsampling(method="householder", init="squeeze"), (2, 2, 2, 8))
    yield Case("ChannelSkip", lambda: layers.ChannelSkip(layers.InvConv1x1(seed=1)), (2, 4, 4, 3))
    yield Case("HaarDownsampling", lambda: layers.HaarDownsampling(), (2, 4, 4, 3))
    yield Case("Woodbury", lambda: layers.Woodbury(seed=1), (2, 4, 4, 4))
    yield Case("Woodbury-C6-ranks", lambda: layers.Woodbury(channel_rank=2, spatial_rank=3, seed=1),
               (2, 3, 5, 6))
    yield Case("MEWoodbury", lambda: layers.MEWoodbury(seed=2), (2, 4, 4, 4))
    yield Case("MEWoodbury-C6-ranks",
               lambda: layers.MEWoodbury(channel_rank=3, height_rank=2, width_rank=4, seed=2), (2, 3, 5, 6))
    yield Case("ButterflyLayer", lambda: layers.ButterflyLayer(seed=3), (2, 4, 4, 4))
    yield Case("ButterflyLayer-C6", lambda: layers.ButterflyLayer(seed=3), (2, 3, 5, 6))
    yield Case("FullButterflyLayer", lambda: layers.FullButterflyLayer(seed=3), (2, 4, 4, 2))
    yield Case("FullButterflyLayer-D15-padded", lambda: layers.FullButterflyLayer(seed=3), (2, 3, 5, 1))
    yield Case("FullButterflyLayer-positive-levels3",
               lambda: layers.FullButterflyLayer(levels=3, blocks="positive", seed=3), (2, 2, 2, 2))
    yield Case("ButterflyLayer-factors",
               lambda: layers.ButterflyLayer(seed=3, implementation="factors"), (2, 4, 4, 4))
    yield Case("ButterflyLayer-C6-factors",
               lambda: layers.ButterflyLayer(seed=3, implementation="factors"), (2, 3, 5, 6))
    yield Case("ButterflyLayer-C8-levels2-factors",
               lambda: layers.ButterflyLayer(levels=2, seed=3, implementation="factors"), (2, 2, 3, 8))
    yield Case("PeriodicConv", lambda: layers.PeriodicConv(seed=1), (2, 4, 4, 3))
    yield Case("PeriodicConv-bias-odd", lambda: layers.PeriodicConv(use_bias=True, seed=2), (2, 6, 5, 2))
    yield Case("PeriodicConv-k2-dilated-qr",
               lambda: layers.PeriodicConv(kernel_size=2, dilation=2, seed=3, log_det_method="qr"), (2, 6, 5, 2))
    # ECO (ICLR 2022): exactly orthogonal, taps dilated by H/k (here 3 x 2 kernel, dilations 2, 2)
    yield Case("ECOConv", lambda: layers.ECOConv(seed=1, fit_kernel_to_image=True), (2, 6, 4, 3))
    # RBIG (IEEE TNN 2011) / convolutional RBIG (arXiv:2206.03860): fitted marginals, fixed orthonormal convs
    yield Case("MarginalGaussianization-channel",
               lambda: layers.MarginalGaussianization(num_knots=8, sharing="channel"), (2, 4, 4, 3))
    yield Case("OrthonormalConv-dilated", lambda: layers.OrthonormalConv(kernel=_orthonormal_kernel((2, 3, 2, 2), 2)),
               (2, 4, 6, 2))
    yield Case("SymmetricConv", lambda: layers.SymmetricConv(seed=1), (2, 4, 4, 3))
    yield Case("SymmetricConv-bias-odd", lambda: layers.SymmetricConv(use_bias=True, seed=2), (2, 6, 5, 2))
    yield Case("SymmetricConv-k5-qr",
               lambda: layers.SymmetricConv(kernel_size=5, seed=3, log_det_method="qr"), (2, 7, 5, 2),
               perturb=0.05)
    yield Case("RevViTBlock", lambda: layers.RevViTBlock(dim=4, heads=2, mlp_ratio=2), (2, 3, 8))
    yield Case("RevResBlock", lambda: layers.RevResBlock(hidden_channels=4), (2, 4, 4, 4))
    yield Case("IRevNetBlock-stride2", lambda: layers.IRevNetBlock(stride=2, hidden_channels=4), (2, 4, 4, 2))
    yield Case("IRevNetBlock", lambda: layers.IRevNetBlock(hidden_channels=4), (2, 3, 3, 4))
    yield Case("ReversibleStack-tokens",
               lambda: blocks.ReversibleStack([layers.RevViTBlock(4, 2, mlp_ratio=2),
                                               layers.RevViTBlock(4, 1, mlp_ratio=2)]), (2, 3, 8))
    yield Case("ReversibleStack-images",
               lambda: blocks.ReversibleStack([layers.RevResBlock(hidden_channels=4),
                                               layers.IRevNetBlock(stride=2, hidden_channels=4)]),
               (2, 4, 4, 2))
    # The exponential and its inverse are truncated series: float64 round trips reach ~1e-10.
    series = 1e-9
    yield Case("ConvExp", lambda: layers.ConvExp(seed=1), (2, 4, 4, 2), float64_round_trip_tol=series)
    yield Case("ConvExp-C3-odd", lambda: layers.ConvExp(seed=2), (2, 5, 4, 3), perturb=0.3,
               float64_round_trip_tol=series)
    yield Case("ConvExp-k5-bound1",
               lambda: layers.ConvExp(kernel_size=5, spectral_bound=1.0, seed=3), (2, 5, 5, 2), perturb=0.3,
               float64_round_trip_tol=series)
    # The gate starts at 0 (identity): a larger perturbation makes the nonlinear part visible.
    yield Case("ConvSylvester", lambda: layers.ConvSylvester(seed=1), (2, 4, 4, 2), perturb=0.5,
               float64_round_trip_tol=series)
    yield Case("ConvSylvester-C3-odd", lambda: layers.ConvSylvester(seed=2), (2, 5, 4, 3), perturb=0.5,
               float64_round_trip_tol=series)
    yield Case("Patchify", lambda: layers.Patchify(patch_size=2), (2, 4, 6, 3), rearrangement="reorder")
    yield Case("CyclicShift", lambda: layers.CyclicShift(shift=1), (2, 4, 3, 2))
    yield Case("VectorActNorm", lambda: layers.VectorActNorm(), (2, 3, 5))
    yield Case("VectorInvLinear", lambda: layers.VectorInvLinear(seed=1), (2, 3, 5))
    yield Case("VectorAffineCoupling", lambda: layers.VectorAffineCoupling(hidden_units=small), (2, 3, 5))
    yield Case("VectorAffineCoupling-parity1-gelu-conditioner",
               lambda: layers.VectorAffineCoupling(parity=1, conditioner=nets.MLP(small, 6, activation="gelu")),
               (2, 3, 5))
    yield Case("MixerFlowBlock", lambda: blocks.MixerFlowBlock(hidden_units=small, seed=1), (2, 6, 4))
    yield Case("EmergingConv", lambda: layers.EmergingConv(seed=1), (2, 4, 4, 2))
    yield Case("EmergingConv-k5-6x5x3-sequential",
               lambda: layers.EmergingConv(kernel_size=5, seed=1, order="sequential"), (2, 6, 5, 3))
    yield Case("RasterEmergingConv", lambda: layers.RasterEmergingConv(seed=1), (2, 4, 4, 2))
    yield Case("RasterEmergingConv-5x4x3-sequential",
               lambda: layers.RasterEmergingConv(seed=1, order="sequential"), (2, 5, 4, 3))
    yield Case("CInCConv", lambda: layers.CInCConv(seed=2), (2, 4, 4, 2))
    # weight_seed 2: with the default perturbation the log-det is ~1e-3 (checked near-absolutely).
    yield Case("CInCConv-k2-5x4x3", lambda: layers.CInCConv(kernel_size=2, seed=2), (2, 5, 4, 3),
               weight_seed=2)
    yield Case("QuadCoupling", lambda: layers.QuadCoupling(hidden_channels=small), (2, 4, 4, 8))
    yield Case("FInCConv", lambda: layers.FInCConv(seed=3), (2, 5, 4, 8))
    yield Case("FInCConv-k2-4x5x4-sequential",
               lambda: layers.FInCConv(kernel_size=2, seed=3, order="sequential"), (2, 4, 5, 4))
    yield Case("CInCChainConv", lambda: layers.CInCChainConv(seed=3), (2, 5, 4, 3))
    yield Case("CInCChainConv-4corners", lambda: layers.CInCChainConv(corners=4, seed=3), (2, 4, 4, 2))
    yield Case("InverseFlowUnit", lambda: layers.InverseFlowUnit(seed=4), (2, 5, 4, 3))
    yield Case("InverseFlowUnit-k2", lambda: layers.InverseFlowUnit(kernel_size=2, seed=4), (2, 4, 4, 2))
    yield Case("InverseConv", lambda: layers.InverseConv(seed=4), (2, 4, 4, 2))
    yield Case("InverseConv-5x4x3", lambda: layers.InverseConv(seed=4), (2, 5, 4, 3))
    yield Case("DataAdaptiveConv", lambda: layers.DataAdaptiveConv(hidden_channels=small), (2, 4, 4, 4))
    yield Case("DataAdaptiveConv-k2-no-affine-parity1-odd",
               lambda: layers.DataAdaptiveConv(kernel_size=2, affine=False, parity=1, hidden_channels=small),
               (2, 5, 4, 3))
    yield Case("SLog", lambda: layers.SLog(), (2, 4, 4, 3), draw=_wide_normal)
    yield Case("SLog-scalar", lambda: layers.SLog(initial_alpha=2.0, per_channel=False), (2, 4, 4, 3),
               draw=_wide_normal)
    yield Case("ConvolutionalFlowStep",
               lambda: blocks.ConvolutionalFlowStep(hidden_channels=small, seed=2), (2, 4, 4, 4))
    yield Case("ConvolutionalFlowStep-symmetric",
               lambda: blocks.ConvolutionalFlowStep(hidden_channels=small, linear="symmetric_conv", parity=1,
                                                    seed=3),
               (2, 4, 5, 3))
    yield Case("GlowStep", lambda: blocks.GlowStep(hidden_channels=small, seed=2), (2, 4, 4, 4))
    yield Case("GlowStep-conv_exp",
               lambda: blocks.GlowStep(hidden_channels=small, seed=2, linear="conv_exp"), (2, 4, 4, 4),
               float64_round_trip_tol=series)
    yield Case("GlowStep-cinc-quad",
               lambda: blocks.GlowStep(hidden_channels=small, coupling="quad", seed=2, linear="cinc"),
               (2, 4, 4, 4))
    yield Case("GlowStep-raster_emerging",
               lambda: blocks.GlowStep(hidden_channels=small, seed=2, linear="raster_emerging"), (2, 4, 4, 4))
    yield Case("GlowStep-finc",
               lambda: blocks.GlowStep(hidden_channels=small, seed=2, linear="finc"), (2, 4, 4, 4))
    yield Case("GlowStep-inverse_flow",
               lambda: blocks.GlowStep(hidden_channels=small, seed=2, linear="inverse_flow"), (2, 4, 4, 4))
    yield Case("GlowStep-full_butterfly",
               lambda: blocks.GlowStep(hidden_channels=small, seed=2, linear="full_butterfly"), (2, 4, 4, 4))
    yield Case("GlowStep-emerging",
               lambda: blocks.GlowStep(hidden_channels=small, seed=2, linear="emerging"), (2, 4, 4, 4))
    yield Case("GlowStep-inverse_conv",
               lambda: blocks.GlowStep(hidden_channels=small, seed=2, linear="inverse_conv"), (2, 4, 4, 4))
    yield Case("GlowStep-butterfly",
               lambda: blocks.GlowStep(hidden_channels=small, seed=2, linear="butterfly"), (2, 4, 4, 6))
    # Invertible attention (arXiv:2106.03959) and EIW-Flow's channel weighting (arXiv:2407.04958).
    yield Case("IMapAttention", lambda: layers.IMapAttention(), (2, 3, 5, 3))
    yield Case("ITransAttention-parity1", lambda: layers.ITransAttention(key_dim=4, parity=1), (2, 3, 4, 3))
    yield Case("EntropyWeightedShuffle", lambda: layers.EntropyWeightedShuffle(seed=1), (2, 3, 4, 5))
    yield Case("Flatten", lambda: layers.Flatten(), (2, 3, 4, 2), rearrangement="reshape")
    yield Case("Inverted-Patchify", lambda: layers.Inverted(layers.Patchify(2), layer_input_shape=(4, 6, 3)),
               (2, 6, 12), rearrangement="reorder")
    yield Case("Inverted-InvConv1x1", lambda: layers.Inverted(layers.InvConv1x1(seed=2)), (2, 3, 3, 4))
    yield Case("LearnedPrior", lambda: layers.LearnedPrior(), (2, 4, 4, 3))
    yield Case("LearnedPrior-vector", lambda: layers.LearnedPrior(event_ndims=1), (2, 5))
    yield Case("FactorOut", lambda: layers.FactorOut(blocks.InvertibleSequential([layers.ActNorm()])),
               (2, 4, 4, 3))
    # Glow's two-scale layout with learned split priors: the nested factor-out re-inserts its
    # latents inside the outer one.
    yield Case(
        "FactorOut-learned-prior-nested",
        lambda: layers.FactorOut(
            blocks.InvertibleSequential([
                layers.Squeeze(),
                layers.AffineCoupling(hidden_channels=small),
                layers.FactorOut(blocks.InvertibleSequential([layers.InvConv1x1(seed=1), layers.Flatten()]),
                                 learned_prior=True),
            ]),
            learned_prior=True,
        ),
        (2, 4, 4, 4),
    )
    yield Case(
        "InvertibleSequential",
        lambda: blocks.InvertibleSequential(
            [layers.ActNorm(), layers.Squeeze(), layers.InvConv1x1(seed=1), layers.Reverse()]
        ),
        (2, 4, 4, 2),
    )
    yield from fourier_flow_cases()
    yield from residual_cases()
    yield from cross_unit_cases()


def fourier_flow_cases() -> Iterator[Case]:
    """The Fourier-flow layers on small ``(batch, T, channels)`` sequences (even and odd ``T``)."""
    from tfinv import layers

    yield Case("RealDFT", lambda: layers.RealDFT(), (2, 8, 2))
    # fully connected flows (relative-gradient training; the gradient itself: tests/test_relative_gradient.py)
    yield Case("InvertibleDense", lambda: layers.InvertibleDense(seed=1), (2, 3, 5), perturb=0.3)
    yield Case("InvertibleDense-relative-omit",
               lambda: layers.InvertibleDense(gradient="relative", training_log_det="omit", seed=2), (2, 6), perturb=0.3)
    # rfft / T, odd T: a constant log-det far from 0 (-C T log T + ...), checked against slogdet
    yield Case("RealDFT-forward-odd", lambda: layers.RealDFT(norm="forward"), (2, 7, 3))
    yield Case("SequenceActNorm", lambda: layers.SequenceActNorm(), (2, 5, 3))
    yield Case("SpectralFilterCoupling", lambda: layers.SpectralFilterCoupling(hidden_units=8), (2, 8, 2))
    yield Case("SpectralFilterCoupling-parity1-odd-unbounded",
               lambda: layers.SpectralFilterCoupling(parity=1, hidden_units=8, num_hidden_layers=1,
                                                     log_filter_bound=None), (2, 7, 3))


def conditional_cases() -> Iterator[Case]:
    """Conditional layers and models (``context_shape`` set); the harness runs them at a fixed
    context and checks that the context changes the map."""
    from tfinv import layers, nets
    from tfinv.models import Glow

    small = 8
    yield Case("AffineCoupling-vector-context",
               lambda: layers.AffineCoupling(hidden_channels=small, context_shape=(3,)), (2, 4, 4, 4),
               context_shape=(3,))
    yield Case("AdditiveCoupling-checkerboard-image-context",
               lambda: layers.AdditiveCoupling(mask="checkerboard", hidden_channels=small, context_shape=(2, 2, 3)),
               (2, 4, 4, 2), context_shape=(2, 2, 3))
    yield Case("SoftClampAffineCoupling-patch-image-context",
               lambda: layers.SoftClampAffineCoupling(
                   hidden_channels=small, context_shape=(8, 8, 3),
                   context_encoder=nets.ContextEncoder(4, downsampling="patch")),
               (2, 4, 4, 4), context_shape=(8, 8, 3))
    yield Case("LearnedPrior-context", lambda: layers.LearnedPrior(context_shape=(4,)), (2, 4, 4, 3),
               context_shape=(4,))
    yield Case(
        "Glow-context-learned-prior",
        lambda: Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=small, num_levels=17,
                     learned_prior=True, context_shape=(10,)),
        (2, 8, 8, 1), draw=_counts(17), perturb=0.05, context_shape=(10,),
    )
    yield Case("VectorAffineCoupling-context",
               lambda: layers.VectorAffineCoupling(hidden_units=small, context_shape=(3,)), (2, 5),
               context_shape=(3,))
    from tfinv.models import ConditionalGlow, ConditionalVectorFlow

    yield Case("ConditionalVectorFlow",
               lambda: ConditionalVectorFlow(4, observation_shape=(3,), num_blocks=2, hidden_units=small),
               (2, 4), perturb=0.05, context_shape=(3,))
    yield Case("ConditionalGlow-superres",
               lambda: ConditionalGlow((8, 8, 1), observation_shape=(4, 4, 1), levels=2, steps_per_level=1,
                                       hidden_channels=small, condition_features=4),
               (2, 8, 8, 1), perturb=0.05, context_shape=(4, 4, 1))
    from tfinv.models import FourierFlow

    yield Case("SpectralFilterCoupling-context",
               lambda: layers.SpectralFilterCoupling(parity=1, hidden_units=small, context_shape=(3,)), (2, 7, 2),
               context_shape=(3,))
    yield Case("FourierFlow-context",
               lambda: FourierFlow((8, 2), num_couplings=2, hidden_units=small, context_shape=(4,)), (2, 8, 2),
               context_shape=(4,))


def model_cases() -> Iterator[Case]:
    """Small assembled models checked by the same harness."""
    from tfinv.models import Glow, MixerFlow

    yield Case(
        "Glow-affine",
        # one step per level: the contract is about composition (preprocess, squeeze, steps,
        # factor-out, nested levels), which K=1 exercises as K=4 does. The representative model
        # of TFP training through compiled methods (tests/test_contract.py says why one is enough).
        lambda: Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=8, num_levels=17),
        (2, 8, 8, 1),
        draw=_counts(17),
        perturb=0.05,
    )
    yield Case(
        "Glow-additive-3levels",
        lambda: Glow((8, 8, 2), levels=3, steps_per_level=1, hidden_channels=8, coupling="additive",
                     num_levels=None),
        (2, 8, 8, 2),
        perturb=0.05,
    )
    from tfinv.models import FourierFlow

    yield Case("FourierFlow", lambda: FourierFlow((8, 2), num_couplings=2, hidden_units=8), (2, 8, 2))
    yield Case(
        "MixerFlow",
        lambda: MixerFlow((8, 8, 1), patch_size=2, num_blocks=2, hidden_units=8, num_levels=17),
        (2, 8, 8, 1),
        draw=_counts(17),
        perturb=0.05,
    )


class RefreshedCase(Case):
    """A case of a spectrally normalised layer: after the weights are perturbed, the power
    iterations are re-converged (``refresh_spectral_norm``), as a user must after assigning
    weights by hand; otherwise the stored norm estimates are stale and Lip(g) may exceed c."""

    def build(self, seed: int = 0):
        layer, x = super().build(seed)
        layer.refresh_spectral_norm()
        return layer, x


def cross_unit_cases() -> Iterator[Case]:
    """DenseFlow's densely connected cross-unit coupling, deterministic variant (exact log-det)."""
    from tfinv import layers

    yield Case(
        "CrossUnitCoupling",
        lambda: layers.CrossUnitCoupling(units=3, growth=1, hidden_channels=4),
        (2, 4, 4, 4), perturb=0.05)


def residual_cases() -> Iterator[Case]:
    """Invertible residual layers (estimated log-dets), in their deterministic evaluation form
    with the exact trace (``inference_probes=None``), so the standard log-det check applies; the
    estimator checks are in ``tests/test_residual_flows.py``."""
    from tfinv import layers

    yield RefreshedCase(
        "InvertibleResidualBlock",
        lambda: layers.InvertibleResidualBlock(hidden_features=8, num_hidden_layers=1, coefficient=0.9,
                                               preactivation=False, inference_terms=30, seed=1),
        (2, 4, 4, 2), perturb=0.3, float64_round_trip_tol=1e-6)
    yield RefreshedCase(
        "InvertibleResidualBlock-vector-clipswish",
        # one hidden layer, no pre-activation: a log-det far from 0 (|log-det| ~ 0.12; with two
        # hidden layers the branch contracts to |log-det| < 0.01, where a relative check means little)
        lambda: layers.InvertibleResidualBlock(hidden_features=6, num_hidden_layers=1, activation="clipswish",
                                               vector=True, coefficient=0.8, preactivation=False,
                                               inference_terms=30, seed=2),
        (2, 5), perturb=0.3, float64_round_trip_tol=1e-6)
    yield RefreshedCase(
        "InvertibleDenseBlock",
        lambda: layers.InvertibleDenseBlock(growth=3, depth=2, coefficient=0.9, inference_terms=30, seed=3),
        (2, 4, 4, 2), perturb=0.3, float64_round_trip_tol=1e-6)
    yield RefreshedCase(
        "MonotoneBlock",
        lambda: layers.MonotoneBlock(hidden_features=8, num_hidden_layers=1, coefficient=0.9,
                                     preactivation=False, inference_terms=30, seed=4),
        (2, 4, 4, 2), perturb=0.3, float64_round_trip_tol=1e-6)
    yield RefreshedCase(
        "MonotoneBlock-vector-cpila",
        lambda: layers.MonotoneBlock(hidden_features=6, num_hidden_layers=1, activation="cpila", vector=True,
                                     coefficient=0.9, preactivation=False, inference_terms=30, seed=5),
        (2, 5), perturb=0.3, float64_round_trip_tol=1e-6)
