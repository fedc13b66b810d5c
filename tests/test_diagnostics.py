"""tfinv.diagnostics: power-iteration estimates against exact SVDs, flags, reports, the callback
and ``tfinv diagnose`` (in process, on a tiny model)."""

from __future__ import annotations

import json
import logging
import math
import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinv import diagnostics
from tfinv.core.flow_model import FlowModel
from tfinv.layers.vector_inv_linear import VectorInvLinear
from tfinv.ops.lu import pack_lower_upper


def _linear(n: int, log_scales, seed: int) -> VectorInvLinear:
    """A built VectorInvLinear with random (seeded) non-identity L and U and the given log|s|."""
    layer = VectorInvLinear(seed=seed, name="linear")
    layer.build((None, n))
    rng = np.random.default_rng(seed)
    lower = np.tril(rng.normal(0, 0.3, (n, n)), -1)
    upper = np.triu(rng.normal(0, 0.3, (n, n)), 1)
    layer.lower_upper.assign(pack_lower_upper(lower, upper, np.asarray(log_scales)).astype(np.float32))
    return layer


def _dense_jacobian(fn, x: tf.Tensor) -> np.ndarray:
    """The per-example Jacobians ``(B, D_out, D_in)`` of ``fn`` by autodiff (float64 for the SVD)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    jacobian = tape.batch_jacobian(y, x).numpy().astype(np.float64)
    return jacobian.reshape(x.shape[0], int(np.prod(y.shape[1:])), int(np.prod(x.shape[1:])))


def test_power_iteration_matches_exact_singular_values_of_a_linear_layer():
    layer = _linear(6, np.linspace(-0.6, 0.6, 6), seed=3)
    x = tf.random.stateless_normal((3, 6), seed=[1, 2])
    singular = np.linalg.svd(_dense_jacobian(layer, x)[0], compute_uv=False)
    # precondition of the stated tolerance: after k iterations the Rayleigh quotient is within
    # about (s2/s1)^(2k) of s1; with these ratios and k = 60 that is < 1e-6
    assert singular[1] / singular[0] < 0.9 and singular[-1] / singular[-2] < 0.9
    bounds = diagnostics.bi_lipschitz(layer, x, iterations=60, seed=0)
    for estimate, exact in ((bounds["forward"], singular[0]), (bounds["inverse"], 1.0 / singular[-1])):
        # every example has the same Jacobian; a Rayleigh quotient never exceeds the exact value
        np.testing.assert_allclose(estimate, exact, rtol=1e-4)
        assert np.all(estimate <= exact * (1 + 1e-5))
    np.testing.assert_allclose(bounds["condition"], singular[0] / singular[-1], rtol=2e-4)


def test_model_estimates_match_the_svd_of_the_autodiff_jacobian_at_each_point():
    # a nonlinear flow: the local Jacobian differs from point to point
    from tfinv.models import Glow

    model = Glow((4, 4, 1), levels=1, steps_per_level=1, hidden_channels=4, seed=1)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 17, (3, 4, 4, 1)).astype(np.float32)
    model.initialize(x)
    coupling = model.flow.steps[1].steps[1].steps[2]  # level_0 -> step_0 -> coupling
    for weight in coupling.weights:  # the zero-initialised output layer made the coupling the identity
        weight.assign(rng.normal(0, 0.2, weight.shape).astype(np.float32))
    forward = lambda v: model.flow.forward_and_log_det(v)[0]  # noqa: E731
    singular = np.linalg.svd(_dense_jacobian(forward, tf.constant(x)), compute_uv=False)
    assert np.all(singular[:, 1] / singular[:, 0] < 0.95)  # convergence within 1e-4 at k = 100
    estimate = diagnostics.local_spectral_norm(forward, tf.constant(x), iterations=100).numpy()
    np.testing.assert_allclose(estimate, singular[:, 0], rtol=1e-4)
    assert len(set(np.round(singular[:, 0], 4))) == 3  # really one value per point


def test_an_ill_conditioned_layer_is_flagged_and_a_well_conditioned_one_is_not():
    x = tf.random.stateless_normal((4, 6), seed=[3, 4])
    good = diagnostics.diagnose(_linear(6, np.linspace(-0.5, 0.5, 6), seed=5), x, iterations=30)
    bad = diagnostics.diagnose(_linear(6, np.linspace(-6.0, 6.0, 6), seed=5), x, iterations=30)
    assert good["flags"] == []
    assert good["bi_lipschitz"]["condition_number"]["max"] < 10
    # exp(12) ~ 1.6e5 between the extreme pivots: far above the 1e3 threshold
    assert bad["bi_lipschitz"]["condition_number"]["max"] > 1e4
    assert {"where": "model", "flag": "ill_conditioned"} in bad["flags"]


def test_per_layer_log_dets_add_up_to_the_models_and_reports_are_written_whole(tmp_path):
    from tfinv.models import MixerFlow

    model = MixerFlow((4, 4, 1), patch_size=2, num_blocks=1, hidden_units=4, seed=2)
    x = np.random.default_rng(1).uniform(0, 17, (4, 4, 4, 1)).astype(np.float32)
    model.initialize(x)
    report = diagnostics.diagnose(model, x, iterations=1, scales=(3.0,))
    _, log_det = model.flow.forward_and_log_det(x)
    total = sum(entry["log_det"]["mean"] for entry in report["layers"])
    np.testing.assert_allclose(total, float(tf.reduce_mean(log_det)), rtol=1e-5)
    assert [e["class"] for e in report["layers"]][:3] == ["LogitPreprocess", "Patchify", "VectorActNorm"]
    assert report["stress_test"]["domain"] == [0.0, 17.0]
    assert set(report["stress_test"]["sets"]) == {"in_distribution", "interpolation", "uniform_noise", "scaled_x3"}
    written = diagnostics.write_report(report, tmp_path / "report")
    on_disk = json.loads((tmp_path / "report" / "diagnostics.json").read_text())
    assert len(on_disk["layers"]) == len(report["layers"]) and "_samples" not in on_disk
    pngs = [p for p in written if p.endswith(".png")]
    assert len(pngs) == len(report["layers"]) + 1
    image = tf.io.decode_png(open(pngs[1], "rb").read()).numpy()
    assert image.shape[2] == 3 and image.min() < 128 < image.max()  # drawn, not blank
    assert not [e for e in os.listdir(tmp_path) if e.startswith(".")]  # no staging left


def test_stress_sets_and_reconstruction_errors():
    x = np.random.default_rng(2).uniform(0, 17, (5, 2, 2, 1)).astype(np.float32)
    sets = diagnostics.stress_sets(x, (0.0, 17.0), scales=(3.0,), seed=0)
    assert all(v.shape == x.shape for v in sets.values())
    assert sets["scaled_x3"].min() >= 0 and sets["scaled_x3"].max() <= 17
    np.testing.assert_allclose(sets["scaled_x3"], np.clip(8.5 + 3 * (x - 8.5), 0, 17), rtol=1e-6)
    # an inverse off by 1e-2 in one entry: the error is exactly that
    errors = diagnostics.reconstruction_errors(lambda v: v * 2.0, lambda v: v / 2.0 + np.eye(4)[0].reshape(1, 2, 2, 1) * 1e-2,
                                               tf.constant(x))
    np.testing.assert_allclose(errors["absolute"], 1e-2, rtol=1e-3)
    with pytest.raises(ValueError, match="at least 2 examples"):
        diagnostics.stress_sets(x[:1])


def test_unbuilt_and_foreign_models_are_refused_clearly():
    with pytest.raises(ValueError, match="need a built layer: VectorInvLinear 'v' is not built"):
        diagnostics.diagnose(VectorInvLinear(name="v"), np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="expect a FlowModel, an InvertibleLayer"):
        diagnostics.diagnose(keras.Sequential([keras.layers.Dense(2)]), np.zeros((2, 3), np.float32))
    model = FlowModel([_linear(3, [0.1, 0.2, 0.3], seed=0)], input_shape=(3,))
    with pytest.raises(ValueError, match=r"expects data of shape \(batch, 3\), got \(2, 4\)"):
        diagnostics.diagnose(model, np.zeros((2, 4), np.float32))


def test_monitor_records_bounds_in_history_and_warns_past_the_threshold(caplog):
    layer = _linear(4, [0.2, -0.1, 0.3, 0.0], seed=7)
    model = FlowModel([layer], input_shape=(4,))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    data = np.random.default_rng(3).normal(size=(8, 4)).astype(np.float32)
    monitor = diagnostics.InvertibilityMonitor(data, threshold=1e-4, iterations=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", diagnostics.InvertibilityWarning)  # none may be raised here
        history = model.fit(data, epochs=2, batch_size=8, verbose=0, callbacks=[monitor])
    assert len(history.history["invertibility_forward_lipschitz"]) == 2
    assert len(history.history["invertibility_reconstruction_error_uniform_noise"]) == 2
    assert [r["epoch"] for r in monitor.records] == [0, 1]
    assert max(history.history["invertibility_reconstruction_error"]) < 1e-4
    # an inverse that no longer reconstructs: the monitor warns and logs
    layer.lower_upper.assign(tf.linalg.set_diag(layer.lower_upper, np.array([9.0, -9.0, 0.0, 0.0], np.float32)))
    logs: dict = {}
    with caplog.at_level(logging.WARNING, logger="tfinv.diagnostics"), \
            pytest.warns(diagnostics.InvertibilityWarning, match="exceeds 0.0001"):
        monitor.on_epoch_end(2, logs)
    assert logs["invertibility_reconstruction_error"] > 1e-4
    assert logs["invertibility_condition_number"] > 1e6
    assert any("exceeds" in r.getMessage() for r in caplog.records)


def test_cli_diagnose_in_process(tmp_path, capsys):
    from tfinv import cli, files
    from tfinv.models import Glow

    model = Glow((8, 8, 1), levels=1, steps_per_level=1, hidden_channels=4, seed=0, name="tiny")
    files.save_model_atomic(model, str(tmp_path / "model.keras"))
    code = cli.main(["diagnose", "--model", str(tmp_path / "model.keras"), "--examples", "4",
                     "--iterations", "3", "--verbose", "0"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "diagnostics" / "diagnostics.json").read_text())
    assert report["model"]["class"] == "Glow" and report["data"]["num_levels"] == 17
    assert len(report["data"]["indices"]) == 4
    assert report["stress_test"]["domain"] == [0.0, 17.0]
    assert report["stress_test_behind_preprocessing"]["domain"] is None  # logits: unbounded, unclipped
    assert [e["class"] for e in report["layers"]] == ["LogitPreprocess", "Squeeze", "ActNorm", "InvConv1x1",
                                                     "AffineCoupling", "Flatten"]
    assert all(os.path.isfile(tmp_path / "diagnostics" / e["plot"]) for e in report["layers"])
    assert "Lip(f) >=" in capsys.readouterr().out
    assert cli.main(["diagnose", "--model", str(tmp_path / "missing.keras")]) == 2
    assert "no model file at" in capsys.readouterr().err


def test_a_revvit_is_diagnosed_through_its_memory_saving_reversible_stack():
    from tfinv.models import RevViT

    model = RevViT(patch_size=2, dim=4, depth=2, heads=1, num_classes=3, image_shape=(4, 4, 1), name="rv")
    assert model.blocks.memory_efficient  # its custom gradient stops forward-mode autodiff
    x = np.random.default_rng(4).uniform(0, 17, (3, 4, 4, 1)).astype(np.float32)
    report = diagnostics.diagnose(model, x, iterations=1, stress_test=False)
    assert model.blocks.memory_efficient  # restored
    assert report["model"]["map"] == "ReversibleStack" and report["model"]["input_shape"] == [4, 8]
    assert [e["class"] for e in report["layers"]] == ["RevViTBlock", "RevViTBlock"]
    assert all(math.isfinite(e["condition_number"]["max"]) for e in report["layers"])
