"""The real DFT of a sequence along its time axis, as an invertible layer (the first step of a
Fourier flow)."""

from __future__ import annotations

from typing import Any

import keras

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.ops import real_dft


@keras.saving.register_keras_serializable(package="tfinv")
class RealDFT(InvertibleLayer):
    """``Z = F x``: the spectrum of every channel of ``x`` in the real layout
    ``[Re X(0) .. Re X(T // 2), Im X(1) .. Im X((T - 1) // 2)]`` along the time axis.

    ``X(k) = sum_t x(t) exp(-2 pi i k t / T)``; ``F`` is a real ``T x T`` matrix (one ``MatMul``,
    no complex tensor: ONNX and XLA take it), see `tfinv.ops.real_dft`.
    Inverse: ``x = F^-1 Z`` (``F^T`` for ``norm="ortho"``; exact for every norm).
    Log-det: constant, ``C log|det F|``: 0 for ``norm="ortho"`` (``F`` orthogonal, the default);
    ``C ((s / 2) log T + ((T - s) / 2) log(T / 2))`` for ``"backward"`` (NumPy's unscaled
    ``rfft``; ``s`` = number of self-mirrored frequencies, 1 for odd ``T``, 2 for even), and that
    minus ``C T log T`` for ``"forward"`` (``rfft / T``, as the reference code of Alaa et al.).
    Shapes: ``(B, T, C) -> (B, T, C)`` (more batch axes are fine); event_ndims = 2; ``T >= 2``.

    Args:
        norm: ``"ortho"``, ``"backward"`` or ``"forward"`` (NumPy's names).

    References: Alaa, Chan & van der Schaar, "Generative Time-series Modeling with Fourier
    Flows", ICLR 2021 (no arXiv id), §3.
    """

    event_ndims = 2

    def __init__(self, norm: str = "ortho", **kwargs: Any):
        super().__init__(**kwargs)
        if norm not in real_dft.NORMS:
            raise ValueError(f"RealDFT norm must be one of {real_dft.NORMS}, got {norm!r}")
        self.norm = norm

    def build(self, input_shape):
        length = self.input_event_shape[0]
        if length is None or length < 2:
            raise ValueError(
                f"RealDFT '{self.name}' expects sequences (batch, T, channels) with a static T >= 2, "
                f"got input shape {tuple(input_shape)}")
        super().build(input_shape)

    def _log_det(self, x):
        length, channels = (int(s) for s in x.shape[-2:])
        return batch_log_det(channels * real_dft.real_dft_log_abs_det(length, self.norm), x, self.event_ndims)

    def _forward_and_log_det(self, x):
        return real_dft.real_dft(x, self.norm), self._log_det(x)

    def _inverse_and_log_det(self, z):
        return real_dft.inverse_real_dft(z, self.norm), -self._log_det(z)

    def get_config(self):
        return {**super().get_config(), "norm": self.norm}
