"""Runs the contract harness over every registered layer case and the assembled models.

Dtype-policy cases build each subject under the policy (restored afterwards): float64 round trips
<= 1e-12 relative (1e-9 for truncated-series layers, per case); mixed precision: outputs in the
half dtype, log-dets float32, everything finite, fit/sample/log_prob of the models finite.

Tolerances (float32): round trip <= 1e-5 relative, log-det <= 1e-4 relative, jit/serialisation
<= 1e-5 / 1e-6, ONNX Runtime vs TF <= 1e-4; "relative" is max|a - b| / max(max|b|, 1) (see tfinv.testing.contract).
"""

import pytest

import tfinv
from tfinv.export.testing import check_onnx
from tfinv.testing import cases, conditional_cases, contract, model_cases

CASES = list(cases())
MODEL_CASES = list(model_cases())


def _ids(items):
    return [c.name for c in items]


@pytest.fixture(scope="module", params=CASES, ids=_ids(CASES))
def built(request):
    case = request.param
    layer, x = case.build()
    return case, layer, x


def test_every_public_layer_has_a_case():
    covered = {type(c.make()).__name__ for c in CASES}
    missing = set(tfinv.layers.__all__) - covered
    assert not missing, f"layers without a contract case: {sorted(missing)}"


def test_not_identity(built):
    case, layer, x = built
    contract.check_not_identity(layer, x)


def test_round_trip(built):
    case, layer, x = built
    contract.check_round_trip(layer, x, case.round_trip_tol)


def test_log_det(built):
    case, layer, x = built
    contract.check_log_det(layer, x, case.log_det_tol)


def test_tfp_api(built):
    case, layer, x = built
    contract.check_tfp_api(layer, x)


def test_serialization(built):
    case, layer, x = built
    contract.check_serialization(layer, x)


def test_jit(built):
    case, layer, x = built
    contract.check_jit(layer, x)


def test_empty_batch(built):
    case, layer, x = built
    contract.check_empty_batch(layer, x)


def test_onnx_forward_and_inverse(built):
    case, layer, x = built
    check_onnx(layer, x)


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_fit_step(case):
    layer, x = case.build()
    contract.check_fit_step(layer, x)


@pytest.fixture(scope="module", params=MODEL_CASES, ids=_ids(MODEL_CASES))
def model(request):
    case = request.param
    flow, x = case.build()
    return case, flow, x


def test_model_not_identity(model):
    case, flow, x = model
    contract.check_not_identity(flow, x)


def test_model_round_trip(model):
    case, flow, x = model
    contract.check_round_trip(flow, x, case.round_trip_tol)


def test_model_log_det(model):
    case, flow, x = model
    contract.check_log_det(flow, x, case.log_det_tol)


def test_model_jit(model):
    case, flow, x = model
    contract.check_jit(flow, x)


def test_model_empty_batch(model):
    case, flow, x = model
    contract.check_empty_batch(flow, x)


def test_model_onnx_forward_and_inverse(model):
    case, flow, x = model
    check_onnx(flow, x)


# ----------------------------------------------------------------------------- conditional cases
CONDITIONAL_CASES = list(conditional_cases())


@pytest.fixture(scope="module", params=CONDITIONAL_CASES, ids=_ids(CONDITIONAL_CASES))
def conditional(request):
    case = request.param
    subject, x = case.build()
    return case, subject, x, case.example_context(0), case.example_context(1)


def test_conditional_output_depends_on_context(conditional):
    case, subject, x, context, other = conditional
    contract.check_context_dependence(subject, x, context, other)


def test_conditional_not_identity_and_round_trip(conditional):
    case, subject, x, context, _ = conditional
    contract.check_not_identity(subject, x, context=context)
    contract.check_round_trip(subject, x, case.round_trip_tol, context=context)


def test_conditional_log_det_at_fixed_context(conditional):
    case, subject, x, context, _ = conditional
    contract.check_log_det(subject, x, case.log_det_tol, context=context)


def test_conditional_jit(conditional):
    case, subject, x, context, _ = conditional
    contract.check_jit(subject, x, context=context)


def test_conditional_onnx_forward_and_inverse_take_the_context(conditional):
    case, subject, x, context, _ = conditional
    check_onnx(subject, x, context=context)


def test_conditional_empty_batch(conditional):
    case, subject, x, context, _ = conditional
    contract.check_empty_batch(subject, x, context=context)


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_tfp_training(case):
    layer, x = case.build()
    contract.check_tfp_training(layer, x)


@pytest.mark.parametrize("case", CASES + MODEL_CASES, ids=_ids(CASES + MODEL_CASES))
def test_float64_policy(case):
    with contract.dtype_policy("float64"):
        subject, x = case.build()
        contract.check_float64_policy(subject, x, case.float64_round_trip_tol)


@pytest.mark.parametrize("case", CASES + MODEL_CASES, ids=_ids(CASES + MODEL_CASES))
def test_mixed_float16_policy(case):
    # fit for the models (one-layer fits under mixed precision are covered in test_dtype_policies).
    with contract.dtype_policy("mixed_float16"):
        subject, x = case.build()
        contract.check_mixed_precision(subject, x, "mixed_float16", fit=case in MODEL_CASES)


@pytest.mark.parametrize("case", MODEL_CASES, ids=_ids(MODEL_CASES))
def test_model_tfp_training(case):
    flow, x = case.build()
    contract.check_tfp_training(flow, x)
