"""The real DFT of sequences as one real ``T x T`` matrix: a bijection of ``R^T`` (no complex dtype).

A real sequence ``x`` of length ``T`` has a conjugate-symmetric spectrum ``X(k) = sum_t x(t)
exp(-2 pi i k t / T)`` (NumPy's convention), so ``T`` real numbers describe it exactly:

    ``[Re X(0), Re X(1), ..., Re X(T // 2), Im X(1), ..., Im X((T - 1) // 2)]``

(``T // 2 + 1`` real parts, then ``(T - 1) // 2`` imaginary parts; ``Im X(0)`` and, for even ``T``,
``Im X(T / 2)`` are always 0 and are left out). This "real layout" is one real matrix ``F`` times
``x``, built from the cos/sin matrices of `tfinv.ops.fourier.rdft_matrices`; applying it is a
``MatMul`` (ONNX and XLA take it; neither takes complex tensors or tf2onnx's ``RFFT``).

Scaling (``norm``, NumPy's names) and the log-det of the transform:

* ``"ortho"``: every row of ``F`` has unit norm; the rows are orthogonal, so ``F`` is orthogonal,
  ``F^-1 = F^T`` and ``log|det F| = 0``. A standard normal sequence has a standard normal
  spectrum in this layout. The default.
* ``"backward"``: NumPy's ``rfft`` values, unscaled. Row norms are ``sqrt(T)`` for the
  self-mirrored frequencies (``0``, and ``T / 2`` for even ``T``; ``s`` of them) and
  ``sqrt(T / 2)`` for the others, so ``log|det F| = (s / 2) log T + ((T - s) / 2) log(T / 2)``.
* ``"forward"``: ``rfft / T`` (the scaling of Alaa et al.'s reference code):
  ``log|det F| = log|det F_backward| - T log T``.

References: Alaa, Chan & van der Schaar, "Generative Time-series Modeling with Fourier Flows",
ICLR 2021 (the DFT as the first step of a flow); Oppenheim & Schafer, "Discrete-Time Signal
Processing", ch. 8 (symmetry of the DFT of real sequences).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import tensorflow as tf

from tfinv.ops import fourier

__all__ = ["NORMS", "real_dft_matrix", "inverse_real_dft_matrix", "real_dft_log_abs_det", "num_real_parts",
           "real_dft", "inverse_real_dft"]

NORMS = ("ortho", "backward", "forward")


def _check(n: int, norm: str) -> int:
    if norm not in NORMS:
        raise ValueError(f"real DFT norm must be one of {NORMS}, got {norm!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"real DFT needs a sequence length >= 1, got {n}")
    return n


def num_real_parts(n: int) -> int:
    """Number of real parts in the real layout of a length-``n`` spectrum: ``n // 2 + 1``
    (the other ``(n - 1) // 2`` entries are imaginary parts)."""
    return int(n) // 2 + 1


@functools.lru_cache(maxsize=64)
def _row_norms(n: int) -> np.ndarray:
    """Euclidean norms of the rows of the unscaled real-layout DFT matrix."""
    weights = np.concatenate([fourier.half_spectrum_weights(n), np.full((n - 1) // 2, 2.0)])
    # a row of cos (or sin) at a frequency that is not self-mirrored has squared norm n / 2, a
    # self-mirrored one (0, n / 2) squared norm n: n / weight in both cases
    return np.sqrt(n / weights)


@functools.lru_cache(maxsize=64)
def real_dft_matrix(n: int, norm: str = "ortho") -> np.ndarray:
    """``F``, ``(n, n)`` float64: ``F @ x`` is the real layout of ``x``'s spectrum (module doc)."""
    n = _check(n, norm)
    cos, sin = fourier.rdft_matrices(n)  # rows k = 0 .. n // 2 of cos / sin(2 pi k t / n)
    # Re X(k) = sum_t x(t) cos(.), Im X(k) = -sum_t x(t) sin(.)
    matrix = np.concatenate([cos, -sin[1 : (n - 1) // 2 + 1]], axis=0)
    if norm == "ortho":
        return matrix / _row_norms(n)[:, None]
    return matrix / n if norm == "forward" else matrix


@functools.lru_cache(maxsize=64)
def inverse_real_dft_matrix(n: int, norm: str = "ortho") -> np.ndarray:
    """``F^-1``, ``(n, n)`` float64, exact: ``F = D Q`` with ``Q`` orthogonal and ``D`` the diagonal
    of scales, so ``F^-1 = Q^T D^-1`` (no numerical inversion)."""
    n = _check(n, norm)
    scales = {"ortho": np.ones(n), "backward": _row_norms(n), "forward": _row_norms(n) / n}[norm]
    orthogonal = real_dft_matrix(n, "ortho")
    return orthogonal.T / scales[None, :]


def real_dft_log_abs_det(n: int, norm: str = "ortho") -> float:
    """``log|det F|`` of `real_dft_matrix` (exact, from the row norms; see the module doc)."""
    n = _check(n, norm)
    if norm == "ortho":
        return 0.0
    log_det = float(np.sum(np.log(_row_norms(n))))
    return log_det - n * math.log(n) if norm == "forward" else log_det


def _along_time(matrix: np.ndarray, x: tf.Tensor) -> tf.Tensor:
    # (T, T) @ (..., T, C): one MatMul broadcast over the batch axes; a NumPy constant is embedded
    # in the graph (a captured module-level tf.constant would become an extra ONNX input).
    return tf.matmul(tf.constant(matrix, dtype=x.dtype), x)


def real_dft(x: tf.Tensor, norm: str = "ortho") -> tf.Tensor:
    """Real-layout spectrum of ``x`` along axis ``-2``: ``(..., T, C) -> (..., T, C)``; channel ``c``
    of the output is the spectrum of channel ``c`` of the input."""
    return _along_time(real_dft_matrix(int(x.shape[-2]), norm), x)


def inverse_real_dft(spectrum: tf.Tensor, norm: str = "ortho") -> tf.Tensor:
    """Inverse of `real_dft`: ``(..., T, C)`` real-layout spectra -> sequences."""
    return _along_time(inverse_real_dft_matrix(int(spectrum.shape[-2]), norm), spectrum)
