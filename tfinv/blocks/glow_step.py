"""One step of Glow: ActNorm -> invertible 1x1 convolution -> coupling."""

from __future__ import annotations

from typing import Callable, Sequence

import keras

from tfinv.core.invertible_sequential import InvertibleSequential
from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.layers.act_norm import ActNorm
from tfinv.layers.additive_coupling import AdditiveCoupling
from tfinv.layers.affine_coupling import AffineCoupling
from tfinv.layers.butterfly_layer import ButterflyLayer
from tfinv.layers.c_in_c_chain_conv import CInCChainConv
from tfinv.layers.c_in_c_conv import CInCConv
from tfinv.layers.conv_exp import ConvExp
from tfinv.layers.eco_conv import ECOConv
from tfinv.layers.emerging_conv import EmergingConv
from tfinv.layers.entropy_weighted_shuffle import EntropyWeightedShuffle
from tfinv.layers.f_in_c_conv import FInCConv
from tfinv.layers.full_butterfly_layer import FullButterflyLayer
from tfinv.layers.i_map_attention import IMapAttention
from tfinv.layers.i_trans_attention import ITransAttention
from tfinv.layers.inv_conv1x1 import InvConv1x1
from tfinv.layers.inverse_conv import InverseConv
from tfinv.layers.inverse_flow_unit import InverseFlowUnit
from tfinv.layers.me_woodbury import MEWoodbury
from tfinv.layers.periodic_conv import PeriodicConv
from tfinv.layers.quad_coupling import QuadCoupling
from tfinv.layers.raster_emerging_conv import RasterEmergingConv
from tfinv.layers.soft_clamp_affine_coupling import SoftClampAffineCoupling
from tfinv.layers.symmetric_conv import SymmetricConv
from tfinv.layers.woodbury import Woodbury

#: ``"quad"`` is CInC Flow's Quad-coupling (arXiv:2107.01358): four-way autoregressive over channel
#: quarters, so every step's channel count must be divisible by 4.
#: ``"soft_clamp"``: the cINN paper's affine coupling with a soft-clamped log-scale (bounded both
#: ways, so sampling cannot overflow), `SoftClampAffineCoupling`.
COUPLINGS = {"affine": AffineCoupling, "additive": AdditiveCoupling, "quad": QuadCoupling,
             "soft_clamp": SoftClampAffineCoupling}

#: name -> ``factory(seed, name) -> InvertibleLayer``: the channel-mixing layer of a step.
#: tfinv layers are listed here; add your own with `register_linear` (then ``Glow(..., linear=name)``).
LINEAR_LAYERS: dict[str, Callable[..., InvertibleLayer]] = {
    "inv_conv1x1": lambda seed, name: InvConv1x1(seed=seed, name=name),
    # Finzi et al. / Karami et al.: k x k convolutions inverted in the Fourier (DCT) domain.
    "periodic_conv": lambda seed, name: PeriodicConv(seed=seed, name=name),
    "symmetric_conv": lambda seed, name: SymmetricConv(seed=seed, name=name),
    # Lu & Huang (arXiv:2002.12229): channel + spatial low-rank transforms, default ranks.
    "woodbury": lambda seed, name: Woodbury(seed=seed, name=name),
    "me_woodbury": lambda seed, name: MEWoodbury(seed=seed, name=name),
    # Hoogeboom et al. (arXiv:2006.01910): 3 x 3 convolution exponential (1 x 1 on 2 x 2 levels).
    "conv_exp": lambda seed, name: ConvExp(seed=seed, fit_kernel_to_image=True, name=name),
    # ButterflyFlow (arXiv:2209.13774) keeps Glow's 1x1 convolution and adds a full butterfly
    # after it: ActNorm -> InvConv1x1 -> ButterflyLayer -> coupling.
    "butterfly": lambda seed, name: InvertibleSequential(
        [InvConv1x1(seed=seed, name="inv_conv1x1"), ButterflyLayer(seed=seed, name="butterfly")],
        event_ndims=3, name=name,
    ),
    # ButterflyFlow's butterfly over all H * W * C dimensions, free 2x2 blocks, after the 1x1 conv.
    "full_butterfly": lambda seed, name: InvertibleSequential(
        [InvConv1x1(seed=seed, name="inv_conv1x1"), FullButterflyLayer(seed=seed, name="butterfly")],
        event_ndims=3, name=name,
    ),
    # Masked (triangular) k x k convolutions inverted by wavefront solves (tfinv.ops.triangular_conv):
    # Hoogeboom et al. arXiv:1901.11137, CInC arXiv:2107.01358, FInC arXiv:2301.09266, and
    # Inverse-Flow (AISTATS 2025: the solve is the forward map, sampling is one convolution).
    # The paper's emerging step (reference: ehoogeboom/emerging, flow_permutation 3): LU 1x1
    # convolution, then the two square-masked convolutions and a bias.
    "emerging": lambda seed, name: InvertibleSequential(
        [InvConv1x1(seed=seed, name="inv_conv1x1"),
         EmergingConv(seed=seed, fit_kernel_to_image=True, name="emerging")],
        event_ndims=3, name=name,
    ),
    # tfinv's earlier variant: two raster (PixelCNN) masks, no 1x1 convolution, no bias.
    "raster_emerging": lambda seed, name: RasterEmergingConv(seed=seed, fit_kernel_to_image=True, name=name),
    "cinc": lambda seed, name: CInCConv(seed=seed, fit_kernel_to_image=True, name=name),
    # FInC Flow's step (reference FastFlowUnit): the four-group unit, then a 1x1 convolution that
    # mixes the groups (and carries the log-det with ActNorm: the unit's diagonal is 1). C % 4 == 0.
    "finc": lambda seed, name: InvertibleSequential(
        [FInCConv(seed=seed, fit_kernel_to_image=True, name="finc"),
         InvConv1x1(seed=seed, name="inv_conv1x1")],
        event_ndims=3, name=name,
    ),
    # tfinv's earlier "finc": two full-channel corner convolutions (top-left, bottom-right).
    "cinc_chain": lambda seed, name: CInCChainConv(seed=seed, fit_kernel_to_image=True, name=name),
    "inverse_conv": lambda seed, name: InverseConv(seed=seed, fit_kernel_to_image=True, name=name),
    # Inverse-Flow's unit: the inverses of the four corner convolutions, chained.
    "inverse_flow": lambda seed, name: InverseFlowUnit(seed=seed, fit_kernel_to_image=True, name=name),
    # ECO (Yu et al., ICLR 2022): an exactly orthogonal k x k convolution (circular padding, taps
    # dilated by H/k; k = 3, or the largest divisor of the level's size below it).
    "eco": lambda seed, name: ECOConv(seed=seed, fit_kernel_to_image=True, name=name),
    # EIW-Flow (arXiv:2407.04958): Glow's 1x1 convolution, then the feature-dependent channel
    # weighting and shuffle (weights from one half scale and reorder the other; the halves swap).
    "entropy_weighted": lambda seed, name: InvertibleSequential(
        [InvConv1x1(seed=seed, name="inv_conv1x1"), EntropyWeightedShuffle(seed=seed, name="shuffle")],
        event_ndims=3, name=name,
    ),
}

#: name -> ``factory(name) -> InvertibleLayer``: the attention layer appended to a step (after the
#: coupling) by ``GlowStep(attention=name)`` / ``Glow(attention=name)`` (Sukthanker et al.,
#: arXiv:2106.03959). iTrans takes ``parity=1``: it transforms the half the coupling conditioned on.
ATTENTION_LAYERS: dict[str, Callable[..., InvertibleLayer]] = {
    "imap": lambda name: IMapAttention(name=name),
    "itrans": lambda name: ITransAttention(parity=1, name=name),
}


def register_linear(name: str, factory: Callable[..., InvertibleLayer]) -> None:
    """Makes ``factory(seed=..., name=...)`` available as ``GlowStep(linear=name)``."""
    if name in LINEAR_LAYERS:
        raise ValueError(f"a linear layer named {name!r} is already registered")
    LINEAR_LAYERS[name] = factory


@keras.saving.register_keras_serializable(package="tfinv")
class GlowStep(InvertibleSequential):
    """``z = coupling(linear(ActNorm(x)))``; ``linear`` is `InvConv1x1` by default; with
    ``attention``, ``z = attention(coupling(linear(ActNorm(x))))``.

    Inverse: the inverses in reverse order. Log-det: the sum of the parts.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``C >= 2``; log-det ``(B,)``.

    Args:
        hidden_channels: width of the coupling's conditioner.
        coupling: ``"affine"``, ``"additive"``, ``"soft_clamp"`` (`SoftClampAffineCoupling`) or
            ``"quad"`` (`QuadCoupling`, needs ``C % 4 == 0``).
        seed: seed of the linear layer's initialisation.
        linear: name of the channel-mixing layer in `LINEAR_LAYERS` (default ``"inv_conv1x1"``).
        context_shape: shape of one context for a conditional step (the coupling's conditioner
            sees it, see `tfinv.layers.bases.coupling_layer.CouplingLayer`); ``None``: unconditional.
        context_features: channels of the coupling's context features.
        context_downsampling: how an image context larger than the step's input reaches the
            coupling (`tfinv.nets.ContextEncoder`: ``"bilinear"`` resizing or a learned
            ``"patch"`` map of every ``f x f`` patch).
        conditioner_actnorm: ActNorm inside the coupling's conditioner, after each hidden
            convolution (Glow's paper; ``affine``/``additive`` only).
        attention: ``None`` (Glow's step) or a name in `ATTENTION_LAYERS`: ``"imap"``
            (`IMapAttention`) or ``"itrans"`` (`ITransAttention`), appended after the coupling.
        conditioner: a serialised Keras layer (``keras.saving.serialize_keras_object``) used as
            the coupling's conditioner instead of the default `tfinv.nets.GlowConvNet`, e.g. a
            `tfinv.nets.BottleneckConvNet` with ``out_channels=None`` (each step deserialises its
            own copy; the coupling sets the width).

    References: Kingma & Dhariwal, "Glow", arXiv:1807.03039, §3 and Fig. 2a; attention:
    Sukthanker et al., "Generative Flows with Invertible Attentions", arXiv:2106.03959.
    """

    def __init__(self, hidden_channels: int = 64, coupling: str = "affine", seed: int = 0,
                 linear: str = "inv_conv1x1", context_shape: Sequence[int] | None = None,
                 context_features: int = 16, conditioner: dict | None = None,
                 conditioner_actnorm: bool = False, attention: str | None = None,
                 context_downsampling: str = "bilinear", **kwargs):
        if coupling not in COUPLINGS:
            raise ValueError(f"GlowStep coupling must be one of {sorted(COUPLINGS)}, got {coupling!r}")
        if linear not in LINEAR_LAYERS:
            raise ValueError(f"GlowStep linear must be one of {sorted(LINEAR_LAYERS)}, got {linear!r}")
        if attention is not None and attention not in ATTENTION_LAYERS:
            raise ValueError(
                f"GlowStep attention must be None or one of {sorted(ATTENTION_LAYERS)}, got {attention!r}")
        kwargs.pop("layers", None)
        kwargs.pop("event_ndims", None)
        if coupling == "quad" and context_shape is not None:
            raise ValueError("GlowStep coupling='quad' (QuadCoupling) takes no context; use 'affine' or "
                             f"'additive' with context_shape={context_shape}")
        if coupling == "quad" and conditioner_actnorm:
            raise ValueError("GlowStep coupling='quad' (QuadCoupling) has its own conditioners; "
                             "conditioner_actnorm needs 'affine' or 'additive'")
        conditioning = ({} if coupling == "quad" else
                        {"context_shape": context_shape, "context_features": context_features,
                         "conditioner_actnorm": bool(conditioner_actnorm)})
        if context_downsampling != "bilinear":
            if context_shape is None or coupling == "quad":
                raise ValueError(f"GlowStep context_downsampling={context_downsampling!r} applies to a conditional "
                                 "affine/additive/soft_clamp coupling (context_shape set)")
            from tfinv.nets import ContextEncoder

            conditioning["context_encoder"] = ContextEncoder(context_features, downsampling=context_downsampling,
                                                             name="context_encoder")
        if conditioner is not None:
            if coupling == "quad" or not isinstance(conditioner, dict):
                raise ValueError("GlowStep conditioner must be a serialised Keras layer (dict) for an affine or "
                                 f"additive coupling, got {type(conditioner).__name__} with coupling={coupling!r}")
            conditioning["conditioner"] = keras.saving.deserialize_keras_object(conditioner)
        steps = [
            ActNorm(name="act_norm"),
            LINEAR_LAYERS[linear](seed=seed, name="linear"),
            COUPLINGS[coupling](hidden_channels=hidden_channels, name="coupling", **conditioning),
        ]
        if attention is not None:
            steps.append(ATTENTION_LAYERS[attention](name="attention"))
        super().__init__(steps, event_ndims=3, **kwargs)
        self.attention = attention
        self.hidden_channels = int(hidden_channels)
        self.coupling = coupling
        self.seed = int(seed)
        self.linear = linear
        self.context_features = int(context_features)
        self.conditioner_actnorm = bool(conditioner_actnorm)
        self.conditioner = conditioner
        self.context_downsampling = context_downsampling

    def get_config(self):
        config = super().get_config()
        config.pop("layers")
        config.pop("event_ndims")
        config = {**config, "hidden_channels": self.hidden_channels, "coupling": self.coupling,
                  "seed": self.seed, "linear": self.linear}
        if self.conditioner_actnorm:
            config["conditioner_actnorm"] = True
        if self.attention is not None:
            config["attention"] = self.attention
        if self.context_shape is not None:
            config["context_shape"] = list(self.context_shape)
            config["context_features"] = self.context_features
        if self.conditioner is not None:
            config["conditioner"] = self.conditioner
        if self.context_downsampling != "bilinear":
            config["context_downsampling"] = self.context_downsampling
        return config
