"""The contract harness: every invertible layer (yours too) should pass it.

    from tfinv.testing import cases, contract
    for case in cases():
        layer, x = case.build()
        contract.check_round_trip(layer, x, case.round_trip_tol)
"""

from tfinv.testing import contract
from tfinv.testing.cases import Case, cases, conditional_cases, model_cases

__all__ = ["Case", "cases", "conditional_cases", "contract", "model_cases"]
