"""Fourier flows (Alaa, Chan & van der Schaar, ICLR 2021): a flow on the spectrum of a time series."""

from __future__ import annotations

from typing import Any, Sequence

import keras

from tfinv.core.flow_model import FlowModel
from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.layers.real_dft import RealDFT
from tfinv.layers.sequence_act_norm import SequenceActNorm
from tfinv.layers.spectral_filter_coupling import SpectralFilterCoupling


def fourier_flow_layers(num_couplings: int, hidden_units: int, num_hidden_layers: int = 2,
                        log_filter_bound: float | None = 5.0, normalize: bool = True,
                        norm: str = "ortho", context_shape: Sequence[int] | None = None) -> list[InvertibleLayer]:
    """``[RealDFT, (SequenceActNorm,) SpectralFilterCoupling(parity 0), (parity 1), ...]`` (every
    coupling conditioned on a context of ``context_shape`` when given)."""
    layers: list[InvertibleLayer] = [RealDFT(norm, name="dft")]
    if normalize:
        layers.append(SequenceActNorm(name="spectrum_norm"))
    layers += [SpectralFilterCoupling(parity=i % 2, hidden_units=hidden_units, num_hidden_layers=num_hidden_layers,
                                      log_filter_bound=log_filter_bound, context_shape=context_shape,
                                      name=f"filter_{i}")
               for i in range(num_couplings)]
    return layers


@keras.saving.register_keras_serializable(package="tfinv")
class FourierFlow(FlowModel):
    """A normalizing flow for multichannel time series ``(batch, T, channels)``, built in the
    frequency domain.

    Forward: ``x -> RealDFT`` (the spectrum of every channel along time, in the real layout
    ``[Re X(0..T//2), Im X(1..(T-1)//2)]``) ``-> SequenceActNorm`` (each Fourier coefficient
    standardised, data-dependent initialisation) ``-> SpectralFilterCoupling`` x ``num_couplings``
    (alternately the real parts filter the imaginary parts and the reverse) ``= z``, with a
    standard normal base on ``z``. The latent lives in the frequency domain, as in the authors'
    reference code; with the orthonormal DFT, an inverse DFT appended to the flow would change
    neither the density nor the distribution of samples.
    Inverse (sampling): the couplings in reverse, un-normalisation, inverse DFT.
    Log-det: the couplings' ``sum log H``, plus the ActNorm's ``sum log_s``, plus the DFT's
    constant (0 for the default ``norm="ortho"``, where the DFT is orthogonal; see `RealDFT` for
    the other scalings).
    Shapes: ``(B, T, C) -> (B, T, C)``; ``T >= 3``.

    Differences from the paper: the DFT is a bijection of ``R^T`` (``T`` real numbers, not the
    ``T + 2`` of the reference code's cropped real and imaginary parts, whose density is then
    over a degenerate set); the filter gain is soft-bounded (`SpectralFilterCoupling`); the
    spectrum standardisation is a trained ActNorm; the conditional form (``context_shape``, e.g.
    one-hot labels or covariates of each series: every coupling's MLP also sees the context, see
    `SpectralFilterCoupling`) is ours — the paper's model is unconditional.

    Args:
        input_shape: ``(T, channels)`` of one sequence.
        num_couplings: number of spectral filter couplings (alternating parity).
        hidden_units: width of every coupling's MLP.
        num_hidden_layers: hidden layers of every coupling's MLP.
        log_filter_bound: soft bound on ``|log H|`` (``None``: the paper's unbounded ``exp``).
        normalize: put a `SequenceActNorm` after the DFT (call ``initialize(batch)`` before training).
        norm: scaling of the DFT (``"ortho"``, ``"backward"``, ``"forward"``).
        context_shape: shape of one context (no batch axis) for a conditional flow ``p(x | c)``:
            ``forward``, ``log_prob``, ``fit`` on ``(x, c)`` pairs and ``sample(n, context=c)``.
        base, validate_args, **kwargs: see `FlowModel`.

    Example::

        import numpy as np
        x = np.random.default_rng(0).standard_normal((256, 16, 2)).astype("float32")
        flow = FourierFlow((16, 2), num_couplings=2, hidden_units=16).initialize(x)
        flow.compile(keras.optimizers.Adam(1e-3))
        flow.fit(x, batch_size=64, epochs=1, verbose=0)
        samples = flow.sample(4, seed=0)  # (4, 16, 2)

    References: Alaa, Chan & van der Schaar, "Generative Time-series Modeling with Fourier
    Flows", ICLR 2021 (no arXiv id).
    """

    def __init__(self, input_shape: Sequence[int] = (32, 1), num_couplings: int = 4, hidden_units: int = 64,
                 num_hidden_layers: int = 2, log_filter_bound: float | None = 5.0, normalize: bool = True,
                 norm: str = "ortho", context_shape: Sequence[int] | None = None, **kwargs: Any):
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 2 or shape[0] < 3 or shape[1] < 1:
            raise ValueError(
                f"FourierFlow needs input_shape (T, channels) with T >= 3 and channels >= 1 (one sequence, "
                f"no batch axis; a single-channel series is (T, 1)), got {tuple(input_shape)}")
        if int(num_couplings) < 1 or int(hidden_units) < 1:
            raise ValueError(f"FourierFlow needs num_couplings and hidden_units >= 1, got {num_couplings}, "
                             f"{hidden_units}")
        kwargs.pop("layers", None)
        super().__init__(
            fourier_flow_layers(int(num_couplings), int(hidden_units), int(num_hidden_layers), log_filter_bound,
                                bool(normalize), norm, context_shape),
            input_shape=shape, context_shape=context_shape, **kwargs)
        self.num_couplings = int(num_couplings)
        self.hidden_units = int(hidden_units)
        self.num_hidden_layers = int(num_hidden_layers)
        self.log_filter_bound = None if log_filter_bound is None else float(log_filter_bound)
        self.normalize = bool(normalize)
        self.norm = norm

    def get_config(self):
        return {**self._model_config(), "num_couplings": self.num_couplings, "hidden_units": self.hidden_units,
                "num_hidden_layers": self.num_hidden_layers, "log_filter_bound": self.log_filter_bound,
                "normalize": self.normalize, "norm": self.norm}
