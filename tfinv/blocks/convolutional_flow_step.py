"""One step of Karami et al.'s convolutional flow: ActNorm -> k x k invertible convolution ->
S-Log gate -> data-adaptive convolution coupling."""

from __future__ import annotations

import keras

from tfinv.blocks.glow_step import LINEAR_LAYERS
from tfinv.core.invertible_sequential import InvertibleSequential
from tfinv.layers.act_norm import ActNorm
from tfinv.layers.data_adaptive_conv import DataAdaptiveConv
from tfinv.layers.s_log import SLog


@keras.saving.register_keras_serializable(package="tfinv")
class ConvolutionalFlowStep(InvertibleSequential):
    """``z = coupling(gate(linear(ActNorm(x))))``.

    * ``linear``: a ``k x k`` convolution mixing space and channels, inverted in the Fourier
      domain (`PeriodicConv`, circular padding, default) or the DCT domain (`SymmetricConv`,
      symmetric padding); any name of `tfinv.blocks.glow_step.LINEAR_LAYERS` is accepted;
    * ``gate``: the S-Log gate `SLog` (``nonlinearity=False`` leaves it out);
    * ``coupling``: `DataAdaptiveConv`, a per-example depthwise circular convolution of half the
      channels with kernels predicted from the other half, optionally with an element-wise
      affine part.

    Inverse: the inverses in reverse order. Log-det: the sum of the layers' log-dets.
    Shapes: ``(B, H, W, C) -> (B, H, W, C)`` with ``C >= 2`` and ``H, W`` at least the kernel
    sizes (3 by default); log-det ``(B,)``.

    Ordering: the paper builds its flow from these components (circular/symmetric
    convolutions, element-wise multiplication, the S-Log gate, data-adaptive convolutions in a
    coupling) in a Glow-like step; this block keeps Glow's ActNorm -> linear -> coupling order
    and puts the element-wise gate between the linear layer and the coupling, so each step has
    one nonlinearity acting on every dimension.

    Args:
        hidden_channels: width of the coupling's conditioner.
        linear: name of the channel-mixing layer (``"periodic_conv"`` or ``"symmetric_conv"``;
            ``"inv_conv1x1"`` etc. also work).
        kernel_size: ``k`` of the data-adaptive kernels.
        affine: element-wise shift and scale in the coupling.
        nonlinearity: include the S-Log gate.
        parity: which half of the channels conditions the coupling.
        seed: seed of the linear layer's initialisation.

    References: Karami, Schuurmans, Sohl-Dickstein, Dinh & Duckworth, "Invertible Convolutional
    Flow", NeurIPS 2019; Kingma & Dhariwal, "Glow", arXiv:1807.03039 (the step structure).
    """

    def __init__(
        self,
        hidden_channels: int = 64,
        linear: str = "periodic_conv",
        kernel_size: int = 3,
        affine: bool = True,
        nonlinearity: bool = True,
        parity: int = 0,
        seed: int = 0,
        **kwargs,
    ):
        if linear not in LINEAR_LAYERS:
            raise ValueError(
                f"ConvolutionalFlowStep linear must be one of {sorted(LINEAR_LAYERS)}, got {linear!r}"
            )
        kwargs.pop("layers", None)
        kwargs.pop("event_ndims", None)
        steps = [ActNorm(name="act_norm"), LINEAR_LAYERS[linear](seed=seed, name="linear")]
        if nonlinearity:
            steps.append(SLog(name="s_log"))
        steps.append(DataAdaptiveConv(kernel_size=kernel_size, affine=affine, parity=parity,
                                      hidden_channels=hidden_channels, name="coupling"))
        super().__init__(steps, event_ndims=3, **kwargs)
        self.hidden_channels = int(hidden_channels)
        self.linear = linear
        self.kernel_size = int(kernel_size)
        self.affine = bool(affine)
        self.nonlinearity = bool(nonlinearity)
        self.parity = int(parity)
        self.seed = int(seed)

    def get_config(self):
        config = super().get_config()
        config.pop("layers")
        config.pop("event_ndims")
        return {**config, "hidden_channels": self.hidden_channels, "linear": self.linear,
                "kernel_size": self.kernel_size, "affine": self.affine,
                "nonlinearity": self.nonlinearity, "parity": self.parity, "seed": self.seed}
