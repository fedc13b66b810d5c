"""Kept importable: `InvertibleSequential` lives in `tfinv.core` (it is part of the contract)."""

from tfinv.core.invertible_sequential import InvertibleSequential, reduce_to_batch

__all__ = ["InvertibleSequential", "reduce_to_batch"]
