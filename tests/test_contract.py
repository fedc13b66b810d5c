"""Runs the contract harness over every registered layer case and the assembled models.

Dtype-policy cases build each subject under the policy (restored afterwards): float64 round trips
<= 1e-12 relative (1e-9 for truncated-series layers, per case); mixed precision: outputs in the
half dtype, log-dets float32, everything finite, fit/sample/log_prob of the models finite.

Tolerances (float32): round trip <= 1e-5 relative, log-det <= 1e-4 relative, jit/serialisation
<= 1e-5 / 1e-6, ONNX Runtime vs TF <= 1e-4; "relative" is per example,
max|a_i - b_i| / max(max|b_i|, 1e-2) (see tfinv.testing.contract).

Each case is built once per module (builds are deterministic, see `Case.build`) and shared by
the read-only checks; a guard verifies after every check that the shared subject's weights and
outputs are those of the build (snapshot taken once, right after it), so no check can pass or
fail because of what an earlier one did. The
fit step, which trains its layer, gets a fresh build of its own.
"""

import numpy as np
import pytest

import tfinv
from tfinv.export.testing import check_onnx
from tfinv.testing import cases, conditional_cases, contract, model_cases

CASES = list(cases())
MODEL_CASES = list(model_cases())


def _ids(items):
    return [c.name for c in items]


def _snapshot(subject, x):
    z, log_det = subject.forward_and_log_det(x)
    return [np.array(w) for w in subject.get_weights()], np.asarray(z), np.asarray(log_det)


def _assert_unchanged(case, subject, x, snapshot):
    weights, z, log_det = _snapshot(subject, x)
    assert all(np.array_equal(a, b) for a, b in zip(weights, snapshot[0])), f"{case.name}: weights changed"
    assert np.array_equal(z, snapshot[1]) and np.array_equal(log_det, snapshot[2]), f"{case.name}: outputs changed"


# The snapshot is taken once, right after the build, and every check is followed by a
# comparison with it: a change made by any check is caught at that check's teardown (comparing
# with the build-time state is at least as strict as comparing with the state before the check,
# which earlier teardowns have already proved equal to it).
@pytest.fixture(scope="module", params=CASES, ids=_ids(CASES))
def _built_once(request):
    layer, x = request.param.build()
    return layer, x, _snapshot(layer, x)


@pytest.fixture
def built(request, _built_once):
    case = request.node.callspec.params["_built_once"]
    layer, x, snapshot = _built_once
    yield case, layer, x
    _assert_unchanged(case, layer, x, snapshot)


def test_every_public_layer_has_a_case():
    covered = {type(c.make()).__name__ for c in CASES}
    missing = set(tfinv.layers.__all__) - covered
    assert not missing, f"layers without a contract case: {sorted(missing)}"


def test_case_names_are_unique():
    names = _ids(CASES) + _ids(MODEL_CASES)
    assert len(names) == len(set(names))


def _check_rebuild_is_identical(case, subject, x):
    """Seeded cases: a second build in this process, after whatever tests ran since the first,
    has the same input, weights and outputs (the first is guarded unchanged by its fixture)."""
    again, x_again = case.build()
    assert np.array_equal(x, x_again)
    w1, w2 = subject.get_weights(), again.get_weights()
    assert len(w1) == len(w2) and all(np.array_equal(a, b) for a, b in zip(w1, w2)), "weights differ"
    outputs = subject.forward_and_log_det(x)
    for a, b in zip(outputs, again.forward_and_log_det(x_again)):
        assert np.array_equal(np.asarray(a), np.asarray(b)), "outputs differ"
    # A relative log-det tolerance means little near 0: the log-det is either identically 0
    # (volume-preserving) or at least 0.05 nats in every example.
    log_det = np.abs(contract._batch_sum(outputs[1]))
    assert np.all(log_det < 1e-5) or np.all(log_det >= 0.05), f"log-det near 0: {log_det}"


def test_two_builds_are_identical(built):
    _check_rebuild_is_identical(*built)


def test_model_two_builds_are_identical(model):
    _check_rebuild_is_identical(*model)


def test_not_identity(built):
    case, layer, x = built
    if case.rearrangement:
        contract.check_rearrangement(layer, x, plain_reshape=case.rearrangement == "reshape")
    else:
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


def test_jit(built):
    case, layer, x = built
    contract.check_jit(layer, x)


def test_empty_batch(built):
    case, layer, x = built
    contract.check_empty_batch(layer, x)


def test_onnx_forward_and_inverse(built):
    case, layer, x = built
    check_onnx(layer, x)


def test_serialization(built):
    case, layer, x = built
    contract.check_serialization(layer, x)


@pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
def test_fit_step(case):
    layer, x = case.build()
    contract.check_fit_step(layer, x, frozen=case.frozen)


@pytest.fixture(scope="module", params=MODEL_CASES, ids=_ids(MODEL_CASES))
def _model_built_once(request):
    flow, x = request.param.build()
    return flow, x, _snapshot(flow, x)


@pytest.fixture
def model(request, _model_built_once):
    case = request.node.callspec.params["_model_built_once"]
    flow, x, snapshot = _model_built_once
    yield case, flow, x
    _assert_unchanged(case, flow, x, snapshot)


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
def _conditional_built_once(request):
    subject, x = request.param.build()
    context = request.param.example_context(0)
    before = [np.array(w) for w in subject.get_weights()], np.asarray(subject.forward_and_log_det(x, context)[0])
    return subject, x, before


@pytest.fixture
def conditional(request, _conditional_built_once):
    case = request.node.callspec.params["_conditional_built_once"]
    subject, x, before = _conditional_built_once
    context = case.example_context(0)
    yield case, subject, x, context, case.example_context(1)
    weights = subject.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(weights, before[0])), f"{case.name}: weights changed"
    assert np.array_equal(np.asarray(subject.forward_and_log_det(x, context)[0]), before[1]), (
        f"{case.name}: outputs changed")


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


# A FlowModel's methods run as cached tf.functions when called eagerly (tfinv.core.compiled_inference),
# the same machinery for every model. TFP training through it (a gradient tape around compiled
# calls) is checked on one representative, the default Glow; the other models go through TFP
# with their methods run eagerly, which checks what is theirs (TFP lists every weight, a gradient
# reaches each, the NLL goes down) at a seventh of the cost (MixerFlow: 0.75 s vs 5.2 s CPU).
COMPILED_TFP_TRAINING_REPRESENTATIVE = "Glow-affine"


@pytest.mark.parametrize("case", MODEL_CASES, ids=_ids(MODEL_CASES))
def test_model_tfp_training(case):
    flow, x = case.build()
    if case.name != COMPILED_TFP_TRAINING_REPRESENTATIVE:
        flow.inference_mode = "eager"
    contract.check_tfp_training(flow, x)


def test_compiled_tfp_training_representative_is_a_model_case():
    assert COMPILED_TFP_TRAINING_REPRESENTATIVE in _ids(MODEL_CASES)
