"""Negative controls: deliberately broken subjects fed to the contract harness. Every check must be
shown to fail on the defect it exists to catch — a check that cannot fail proves nothing.

Each broken subject is a real layer with one small, named defect, built and perturbed like the
contract cases (`tfinv.testing.cases`), so it differs from a passing subject by the defect only.
Each control is paired with the intact layer passing the same check, so the failure is the
defect's and not the set-up's.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfinv import layers
from tfinv.export.errors import ExportError
from tfinv.export.testing import check_onnx
from tfinv.testing import contract
from tfinv.testing.cases import Case


# ----------------------------------------------------------------------------- broken layers
class LogDetOffByConstant(layers.ActNorm):
    """ActNorm whose forward log-det is off by ``offset`` nats (the inverse one stays right)."""

    offset = 1e-3

    def _forward_and_log_det(self, x):
        z, log_det = super()._forward_and_log_det(x)
        return z, log_det + self.offset


class ConsistentlyWrongLogDet(layers.ActNorm):
    """Both log-dets off by the same constant, so ``fldj(x) == -ildj(f(x))`` still holds: only
    the comparison with the autodiff Jacobian can catch it."""

    offset = 1e-3

    def _forward_and_log_det(self, x):
        z, log_det = super()._forward_and_log_det(x)
        return z, log_det + self.offset

    def _inverse_and_log_det(self, z):
        x, log_det = super()._inverse_and_log_det(z)
        return x, log_det - self.offset


class VolumePreservingWithLogDet(layers.Reverse):
    """A channel reversal (log-det exactly 0) reporting a log-det of 1e-5: invisible with a scale
    floor of 1 (the old ``max(max|expected|, 1)``), caught with the per-example floor 1e-2."""

    def _forward_and_log_det(self, x):
        z, log_det = super()._forward_and_log_det(x)
        return z, log_det + 1e-5


class SlightlyWrongInverse(layers.ActNorm):
    """ActNorm whose inverse divides by ``exp(log_s) * (1 + 1e-4)``: a 1e-4 relative error."""

    def _inverse_and_log_det(self, z):
        x, log_det = super()._inverse_and_log_det(z)
        return (z * tf.exp(-self.log_scale) / (1.0 + 1e-4) - self.bias), log_det


class WrongInverseLogDet(layers.ActNorm):
    """Right inverse map, inverse log-det off by 1e-3 nats."""

    def _inverse_and_log_det(self, z):
        x, log_det = super()._inverse_and_log_det(z)
        return x, log_det + 1e-3


class GradientFreeConditioner(layers.AffineCoupling):
    """An affine coupling whose conditioner's output is cut from the graph by ``stop_gradient``:
    the loss still depends on the conditioner, but it never learns."""

    def _theta(self, x_a, *args, **kwargs):  # (x_a[, context]): whatever the base passes on
        return tf.stop_gradient(super()._theta(x_a, *args, **kwargs))


class ReshapeOnly(layers.Squeeze):
    """A "Squeeze" that is a plain reshape (same entries, same order)."""

    def _forward_and_log_det(self, x):
        z, log_det = super()._forward_and_log_det(x)
        return tf.reshape(x, tf.shape(z)), log_det

    def _inverse_and_log_det(self, z):
        x, log_det = super()._inverse_and_log_det(z)
        return tf.reshape(z, tf.shape(x)), log_det


def _build(make, shape=(2, 4, 4, 3), perturb=0.1, name="control", **kw):
    return Case(name, make, shape, perturb=perturb, **kw).build()


# ----------------------------------------------------------------------------- log-det
def test_log_det_off_by_a_small_constant_fails_check_log_det():
    good, x = _build(layers.ActNorm)
    contract.check_log_det(good, x)
    bad, x = _build(LogDetOffByConstant)
    with pytest.raises(AssertionError, match="forward log-det vs slogdet"):
        contract.check_log_det(bad, x)


def test_consistent_wrong_log_det_fails_against_the_autodiff_jacobian():
    bad, x = _build(ConsistentlyWrongLogDet)
    with pytest.raises(AssertionError, match="forward log-det vs slogdet"):
        contract.check_log_det(bad, x)


def test_wrong_inverse_log_det_fails_check_log_det():
    bad, x = _build(WrongInverseLogDet)
    with pytest.raises(AssertionError, match="inverse log-det vs slogdet"):
        contract.check_log_det(bad, x)


def test_a_tiny_log_det_on_a_volume_preserving_layer_fails():
    good, x = _build(layers.Reverse)
    contract.check_log_det(good, x)
    bad, x = _build(VolumePreservingWithLogDet)
    with pytest.raises(AssertionError, match="forward log-det vs slogdet"):
        contract.check_log_det(bad, x)


# ----------------------------------------------------------------------------- round trip
def test_slightly_wrong_inverse_fails_check_round_trip():
    good, x = _build(layers.ActNorm)
    contract.check_round_trip(good, x)
    bad, x = _build(SlightlyWrongInverse)
    with pytest.raises(AssertionError, match=r"inverse\(forward\(x\)\)"):
        contract.check_round_trip(bad, x)


# ----------------------------------------------------------------------------- fit step
def test_conditioner_without_gradient_fails_check_fit_step():
    def make(cls):
        return lambda: cls(mask="channel", hidden_channels=8)

    good, x = _build(make(layers.AffineCoupling), shape=(2, 4, 4, 4))
    contract.check_fit_step(good, x)
    bad, x = _build(make(GradientFreeConditioner), shape=(2, 4, 4, 4))
    with pytest.raises(AssertionError, match="did not change these trainable weights: .*conditioner"):
        contract.check_fit_step(bad, x)


def test_a_stale_frozen_weight_excuse_fails_check_fit_step():
    good, x = _build(layers.ActNorm)
    with pytest.raises(AssertionError, match="match no weight"):
        contract.check_fit_step(good, x, frozen={"no_such_weight": "made up"})


# ----------------------------------------------------------------------------- not the identity
def test_identity_layer_fails_check_not_identity():
    identity, x = _build(layers.ActNorm, perturb=0.0, initialize=False)  # bias 0, log-scale 0
    with pytest.raises(AssertionError, match="the identity"):
        contract.check_not_identity(identity, x)
    nearly, x = _build(layers.ActNorm, perturb=1e-5, initialize=False)
    with pytest.raises(AssertionError, match="the identity"):
        contract.check_not_identity(nearly, x)


def test_shape_changing_layers_at_their_trivial_map_fail_check_not_identity():
    # Space-to-depth, a plain reshape, patchify, and an i-RevNet stride-2 block whose residual
    # branch is zero (then a space-to-depth): each changes the shape and nothing else.
    zero_residual, x = _build(lambda: layers.IRevNetBlock(stride=2, hidden_channels=4), shape=(2, 4, 4, 2))
    for variable in zero_residual.trainable_variables:
        variable.assign(np.zeros(variable.shape, variable.dtype))
    subjects = [(zero_residual, x)] + [
        _build(make, shape=shape, perturb=0.0)
        for make, shape in [(layers.Squeeze, (2, 4, 4, 2)), (ReshapeOnly, (2, 4, 4, 2)),
                            (lambda: layers.Patchify(patch_size=2), (2, 4, 6, 3))]]
    for subject, x in subjects:
        with pytest.raises(AssertionError, match="rearrangement of its input"):
            contract.check_not_identity(subject, x)
    # The same i-RevNet block, perturbed, is not its trivial map.
    block, x = _build(lambda: layers.IRevNetBlock(stride=2, hidden_channels=4), shape=(2, 4, 4, 2))
    contract.check_not_identity(block, x)


def test_plain_reshape_fails_check_rearrangement():
    squeeze, x = _build(layers.Squeeze, shape=(2, 4, 4, 2))
    contract.check_rearrangement(squeeze, x)
    reshape, x = _build(ReshapeOnly, shape=(2, 4, 4, 2))
    with pytest.raises(AssertionError, match="plain reshape"):
        contract.check_rearrangement(reshape, x)
    block, x = _build(lambda: layers.IRevNetBlock(stride=2, hidden_channels=4), shape=(2, 4, 4, 2))
    with pytest.raises(AssertionError, match="not a rearrangement"):
        contract.check_rearrangement(block, x)


# ----------------------------------------------------------------------------- relative error
def test_relative_error_is_per_example_with_a_small_floor():
    expected = np.array([[100.0, 50.0], [0.1, 0.2]])
    # 5 % off in the small example: hidden by a whole-tensor scale of 100, not per example.
    actual = expected * np.array([[1.0], [1.05]])
    assert contract.relative_error(actual, expected) == pytest.approx(0.05)
    # Exactly-zero quantities are measured against the floor 1e-2.
    assert contract.relative_error(np.array([1e-5]), np.array([0.0])) == pytest.approx(1e-3)
    with pytest.raises(AssertionError, match="shape mismatch"):
        contract.relative_error(np.zeros(3), np.zeros(4))
    with pytest.raises(AssertionError, match="non-finite"):
        contract.relative_error(np.array([np.nan]), np.array([0.0]))


# ----------------------------------------------------------------------------- ONNX parity
def _convert_other_weights(monkeypatch):
    """Makes the export convert (and freeze) the subject with its weights moved by ~1e-3 and then
    put back: the graph's weights differ from the layer's, a real mismatch."""
    import tfinv.export.onnx as onnx_export

    real_convert = onnx_export.convert

    def convert(subject, *args, **kwargs):
        weights = subject.get_weights()
        contract.perturb_weights(subject, 1e-3, seed=99)
        try:
            return real_convert(subject, *args, **kwargs)
        finally:
            subject.set_weights(weights)

    monkeypatch.setattr(onnx_export, "convert", convert)


def test_onnx_graph_with_other_weights_than_the_layer_raises_export_error(monkeypatch, tmp_path):
    from tfinv.export import to_onnx

    layer, x = _build(lambda: layers.InvConv1x1(seed=3), shape=(2, 4, 4, 4))
    to_onnx(layer, tmp_path / "good.onnx", test_input=np.asarray(x))  # intact: passes
    _convert_other_weights(monkeypatch)
    with pytest.raises(ExportError, match="above the tolerance"):
        to_onnx(layer, tmp_path / "bad.onnx", test_input=np.asarray(x))
    assert not (tmp_path / "bad.onnx").exists()


def test_check_onnx_compares_independently_of_the_exports_own_parity_check(monkeypatch):
    """With the export's parity check disabled (it accepts anything), `check_onnx` still catches a
    graph whose weights differ from the layer's."""
    import tfinv.export.testing as export_testing
    from tfinv.export import onnx as onnx_export

    layer, x = _build(lambda: layers.InvConv1x1(seed=3), shape=(2, 4, 4, 4))
    check_onnx(layer, x)
    real_prepare = onnx_export.prepare

    def lenient_prepare(subject, direction, **kwargs):
        proto, info = real_prepare(subject, direction, **{**kwargs, "tolerance": float("inf")})
        return proto, info

    monkeypatch.setattr(export_testing, "prepare", lenient_prepare)
    _convert_other_weights(monkeypatch)
    with pytest.raises(AssertionError, match="differs from TF"):
        check_onnx(layer, x)
