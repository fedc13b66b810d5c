"""Paths the rest of the suite does not reach: CLI options (through the `tfinv.cli.main` entry
point, so the tests hold wherever the training loop lives), registries, error paths the
docstrings promise, and export + serving of a rank-changing model (MixerFlow) and of Glow with
another linear layer."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import onnx
import pytest
import tensorflow as tf

import tfinv
from tfinv import cli, layers
from tfinv.blocks import glow_step
from tfinv.data import image_grid
from tfinv.export import ExportError, export_flow
from tfinv.ops.lu import lu_factor_numpy
from tfinv.serving import Client
from tfinv.testing import contract
from tfinv.testing.contract import relative_error

TINY = ["--epochs", "1", "--verbose", "0", "--max-train", "32", "--max-test", "16", "--num-samples", "4",
        "--batch-size", "16"]


def read_png(path):
    return tf.io.decode_png(tf.io.read_file(str(path))).numpy().astype(int)


def assert_png_shows(path, samples, num_levels, scale=4):
    """The PNG is the grid of ``samples`` up to rounding edges: every pixel lies between the
    grids of the samples moved down and up by 3e-3 (the grid's mapping is monotone; 3e-3 bounds a
    1e-4 relative difference on values up to ~20), and these differ on few pixels."""
    grid = read_png(path)
    low, high = (image_grid(np.asarray(samples, np.float64) + s, num_levels, scale=scale).astype(int)
                 for s in (-3e-3, 3e-3))
    assert grid.shape == low.shape and np.all(low <= grid) and np.all(grid <= high)
    assert np.mean(low != high) < 0.2


@pytest.fixture(scope="module")
def mixerflow_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mixerflow")
    args = ["train", "--model", "mixerflow", "--patch-size", "2", "--depth", "1", "--hidden-channels", "8",
            *TINY, "--out", str(out)]
    assert cli.main(args) == 0
    return out


@pytest.fixture(scope="module")
def glow_emerging_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("glow_emerging")
    args = ["train", "--levels", "1", "--steps-per-level", "1", "--hidden-channels", "8", "--linear", "emerging",
            "--coupling", "additive", "--temperature", "0.5", *TINY, "--out", str(out)]
    assert cli.main(args) == 0
    return out


# ----------------------------------------------------------------------------- train options
def test_train_mixerflow(mixerflow_run):
    model = tfinv.load_model(mixerflow_run / "model.keras")
    assert type(model).__name__ == "MixerFlow" and model.get_config()["num_blocks"] == 1
    metrics = json.loads((mixerflow_run / "metrics.json").read_text())
    assert metrics["model"] == "mixerflow" and metrics["num_parameters"] == model.count_params()
    assert_png_shows(mixerflow_run / "samples.png", model.sample(4, temperature=0.7, seed=0), 17)


def test_train_linear_coupling_and_temperature_reach_the_model(glow_emerging_run):
    model = tfinv.load_model(glow_emerging_run / "model.keras")
    config = model.get_config()
    assert config["linear"] == "emerging" and config["coupling"] == "additive"
    step_layers = {type(l).__name__ for l in model._flatten_layers()}
    # linear="emerging" is the paper's 1x1 convolution followed by EmergingConv
    assert {"EmergingConv", "AdditiveCoupling", "InvConv1x1"} <= step_layers
    # samples.png holds samples at --temperature 0.5 (not the default 0.7).
    assert_png_shows(glow_emerging_run / "samples.png", model.sample(4, temperature=0.5, seed=0), 17)
    default = np.asarray(model.sample(4, temperature=0.7, seed=0))
    with pytest.raises(AssertionError):
        assert_png_shows(glow_emerging_run / "samples.png", default, 17)


def test_sample_num_levels_overrides_the_models(glow_emerging_run, tmp_path):
    out = tmp_path / "grid.png"
    args = ["sample", "--model", str(glow_emerging_run / "model.keras"), "--n", "4", "--seed", "2",
            "--num-levels", "5", "--out", str(out)]
    assert cli.main(args) == 0
    model = tfinv.load_model(glow_emerging_run / "model.keras")
    assert_png_shows(out, model.sample(4, temperature=0.7, seed=2), 5)


def test_a_registered_model_trains_through_the_cli_and_divergence_exits_1(tmp_path, capsys):
    """One run, two paths: a model added with `register_model` is built and trained by ``tfinv
    train``; at ``--lr 1e30`` its training diverges, which is exit status 1 with one line on stderr
    (the outputs are still written, their non-finite figures as JSON nulls)."""
    built = []

    def build(args, input_shape, num_levels):
        built.append((input_shape, num_levels))
        return tfinv.models.Glow(input_shape, levels=1, steps_per_level=1, hidden_channels=4,
                                 num_levels=num_levels, name="tiny")

    cli.register_model("tiny-test-flow", "a test model")(build)
    try:
        out = tmp_path / "run"
        assert cli.main(["train", "--model", "tiny-test-flow", *TINY, "--lr", "1e30", "--out", str(out)]) == 1
    finally:
        del cli.MODEL_BUILDERS["tiny-test-flow"]
    assert built == [((8, 8, 1), 17)]
    assert capsys.readouterr().err.strip() == \
        "tfinv train: training diverged (non-finite bits/dim); try a smaller --lr"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "tiny-test-flow" and metrics["config"]["cli"]["lr"] == 1e30
    assert metrics["train_bits_per_dim"] is None and metrics["test_bits_per_dim"] is None  # JSON has no NaN
    with pytest.raises(ValueError, match="task must be one of"):
        cli.register_model("x", "y", task="regression")


def test_register_linear_makes_a_glow_step_use_the_layer():
    name = "test-woodbury"
    glow_step.register_linear(name, lambda seed, name: layers.Woodbury(seed=seed, name=name))
    try:
        with pytest.raises(ValueError, match="already registered"):
            glow_step.register_linear(name, lambda seed, name: None)
        step = tfinv.blocks.GlowStep(hidden_channels=8, seed=1, linear=name)
        x = tf.random.stateless_normal((2, 4, 4, 4), [1, 2])
        step.build(tuple(x.shape))
        contract.perturb_weights(step, 0.1)
        assert any(isinstance(l, layers.Woodbury) for l in step._flatten_layers())
        contract.check_round_trip(step, x)
        contract.check_log_det(step, x)
    finally:
        del glow_step.LINEAR_LAYERS[name]


# ----------------------------------------------------------------------------- error paths
def test_lu_factorisation_of_a_singular_matrix_is_an_error():
    w = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 1.0, 1.0]])  # rows 1 and 2 are dependent
    with pytest.raises(ValueError, match="singular"):
        lu_factor_numpy(w)
    with pytest.raises(ValueError, match="square"):
        lu_factor_numpy(np.ones((2, 3)))
    p, lower, upper = lu_factor_numpy(w + np.eye(3))  # and a regular one is factored exactly
    np.testing.assert_allclose(p @ lower @ upper, w + np.eye(3), rtol=1e-12, atol=1e-12)


def test_export_flow_refuses_a_layer_that_is_not_a_flow(tmp_path):
    layer = layers.ActNorm()
    layer.build((None, 4, 4, 2))
    with pytest.raises(ExportError, match="exports a tfinv FlowModel, got ActNorm"):
        export_flow(layer, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# ----------------------------------------------------------------------------- export options, servers
def test_export_mixerflow_without_saved_model_at_opset_18_and_serve_it(mixerflow_run, tmp_path, capsys):
    from test_serving_onnx import running_server

    out = tmp_path / "export"
    model_path = str(mixerflow_run / "model.keras")
    # --tolerance reaches the parity check: no float32 graph matches TF to 1e-12.
    assert cli.main(["export", "--model", model_path, "--out", str(out), "--tolerance", "1e-12"]) == 2
    assert "above the tolerance 1e-12" in capsys.readouterr().err
    args = ["export", "--model", model_path, "--out", str(out), "--no-saved-model", "--opset", "18",
            "--tolerance", "1e-3", "--name", "mixer"]
    assert cli.main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert "saved_model" not in manifest and not (out / "saved_model").exists()
    assert "SavedModel" not in capsys.readouterr().out
    for direction in ("forward", "inverse"):
        graph = onnx.load(out / f"{direction}.onnx")
        assert {o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")} == {18}
    model = tfinv.load_model(model_path)
    with running_server(out, tmp_path / "server.log") as (_, url):
        with Client(url, model="mixer", timeout=60) as client:
            x, z = client.sample(3, seed=4, temperature=0.6, return_z=True)
            assert x.shape == (3, 8, 8, 1) and z.shape == (3, 64)  # a rank-changing flow: z is flat
            assert relative_error(x, model.sample(3, temperature=0.6, seed=4)) <= 1e-4
            z_tf, log_det_tf = model.forward(x)
            z_back, log_det = client.forward(x)
            assert relative_error(z_back, z_tf) <= 1e-4 and relative_error(log_det, log_det_tf) <= 1e-4
            assert relative_error(client.log_prob(x), model.log_prob(x)) <= 1e-4
        # `tfinv query` against it: status (after --wait), metadata, and a sample grid.
        capsys.readouterr()
        query = ["query", "--url", url, "--model", "mixer"]
        assert cli.main([*query, "--wait", "30", "status"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        assert cli.main([*query, "metadata"]) == 0
        assert json.loads(capsys.readouterr().out)["model_spec"]["name"] == "mixer"
        png = tmp_path / "served.png"
        assert cli.main([*query, "sample", "--n", "4", "--seed", "5", "--temperature", "0.6", "--out", str(png)]) == 0
        assert_png_shows(png, model.sample(4, temperature=0.6, seed=5), 17)


def test_export_glow_with_emerging_conv_to_a_saved_model_version_and_serve_it_over_grpc(glow_emerging_run, tmp_path):
    import fake_tf_serving

    out = tmp_path / "export"
    args = ["export", "--model", str(glow_emerging_run / "model.keras"), "--out", str(out), "--name", "digits",
            "--version", "3"]
    assert cli.main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["saved_model"] == "saved_model/digits/3"
    model = tfinv.load_model(glow_emerging_run / "model.keras")
    x_tf = np.asarray(model.sample(4, temperature=0.8, seed=6))
    with fake_tf_serving.serve_grpc(out / "saved_model" / "digits" / "3", "digits") as grpc_url:
        with Client(grpc_url, model="digits", version=3, transport="grpc", timeout=60) as client:
            x, z = client.sample(4, seed=6, temperature=0.8, return_z=True)
            assert relative_error(x, x_tf) <= 1e-4
            assert relative_error(client.inverse(z), x_tf) <= 1e-4
            assert relative_error(client.log_prob(x_tf), model.log_prob(x_tf)) <= 1e-4


# ----------------------------------------------------------------------------- bits/dim, --jit, divergence
def _tiny_glow():
    model = tfinv.models.Glow((4, 4, 1), levels=1, steps_per_level=1, hidden_channels=4, num_levels=17, seed=3)
    model.initialize(tf.random.stateless_uniform((8, 4, 4, 1), [3, 4], 0.5, 16.5))
    contract.perturb_weights(model, 0.05)
    return model


def test_bits_per_dim_is_the_mean_over_examples_and_an_empty_dataset_is_an_error():
    from tfinv import training

    model = _tiny_glow()
    x = tf.random.stateless_uniform((5, 4, 4, 1), [5, 6], 0.5, 16.5)
    expected = float(np.mean(np.asarray(model.bits_per_dim(x), np.float64)))
    # batches of 3 and 2: the mean over the 5 examples, not over the 2 batch means
    got = training.evaluate_bits_per_dim(model, tf.data.Dataset.from_tensor_slices(x).batch(3))
    assert got == pytest.approx(expected, rel=1e-6)
    labelled = tf.data.Dataset.from_tensor_slices((x, tf.zeros(5))).batch(2)  # (x, y) batches too
    assert training.evaluate_bits_per_dim(model, labelled) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="cannot evaluate bits/dim on an empty dataset"):
        training.evaluate_bits_per_dim(model, tf.data.Dataset.from_tensor_slices(x).batch(3).take(0))
    with pytest.raises(ValueError, match="empty dataset"):
        training.dataset_bits_per_dim(model, np.zeros((0, 4, 4, 1), np.int64))


def test_train_jit_reaches_the_compiled_train_step_and_evaluation(tmp_path, monkeypatch):
    """``--jit`` trains with an XLA train step and evaluates bits/dim with XLA; the reported
    figures equal the saved model's bits/dim recomputed in graph mode (no XLA) to 1e-5 relative."""
    from tfinv import data, training

    path = tmp_path / "tiny.npz"
    np.savez(path, images=np.random.default_rng(0).integers(0, 4, (40, 4, 4, 1)))
    seen = []
    fit_flow, evaluate = training.fit_flow, training.evaluate_bits_per_dim

    def recording_fit(model, *args, **kwargs):
        result = fit_flow(model, *args, **kwargs)
        seen.append(("fit", kwargs["jit_compile"], model.jit_compile))
        return result

    def recording_evaluate(model, dataset, jit_compile=False):
        seen.append(("evaluate", jit_compile))
        return evaluate(model, dataset, jit_compile)

    monkeypatch.setattr(training, "fit_flow", recording_fit)
    monkeypatch.setattr(training, "evaluate_bits_per_dim", recording_evaluate)
    out = tmp_path / "run"
    args = ["train", "--dataset", str(path), "--num-levels", "4", "--levels", "1", "--steps-per-level", "1",
            "--hidden-channels", "4", "--epochs", "1", "--verbose", "0", "--batch-size", "16", "--num-samples", "4",
            "--jit", "--out", str(out)]
    assert cli.main(args) == 0
    assert seen == [("fit", True, True), ("evaluate", True), ("evaluate", True)]
    metrics = json.loads((out / "metrics.json").read_text())
    model = tfinv.load_model(out / "model.keras")
    for split in ("train", "test"):
        images, _ = data.load_arrays(str(path), split, num_levels=4)
        expected = evaluate(model, data.dequantized_dataset(images, batch_size=16, seed=0, shuffle=False,
                                                             fixed_noise=True), jit_compile=False)
        assert metrics[f"{split}_bits_per_dim"] == pytest.approx(expected, rel=1e-5)
    # --no-jit is False (graph mode), no flag is None (FlowModel.compile's "auto").
    jit = [cli.build_parser().parse_args(["train", "--out", "o", *flag]).jit for flag in (["--no-jit"], [], ["--jit"])]
    assert jit == [False, None, True]


# ----------------------------------------------------------------------------- missing extras
def test_a_stage_whose_module_cannot_be_imported_is_a_stub_naming_the_extras(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tfinv.serving.cli", None)  # as if the serving stage could not load
    assert cli.main(["--help"]) == 0
    assert re.search(r"serve\s+\(unavailable: ", capsys.readouterr().out)
    for argv in (["serve", "--export-dir", "x", "--port", "0"], ["query", "--help"], ["serve-config"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"tfinv {argv[0]}: error: 'tfinv {argv[0]}' needs extra dependencies: ") and \
            "tfinv.serving.cli" in err and "pip install 'tfinv[export,serving]'" in err and "\n" not in err, err
    assert cli.main(["export", "--help"]) == 0  # the export stage still loads
    capsys.readouterr()


@pytest.mark.parametrize("missing, argv", [
    ("uvicorn", ["serve", "--port", "0", "--export-dir", "{export}"]),
    ("tf2onnx", ["export", "--model", "{model}", "--out", "{out}"]),
])
def test_a_missing_extra_at_first_use_is_one_line_naming_it(tmp_path, monkeypatch, capsys, missing, argv):
    """The extras are imported on first use (the stage's module loads without them): a missing one
    is the same one-line error, not a traceback, and nothing is written."""
    model_path = tmp_path / "model.keras"
    if missing == "tf2onnx":
        _tiny_glow().save(model_path)
    monkeypatch.setitem(sys.modules, missing, None)
    argv = [a.format(export=tmp_path, model=model_path, out=tmp_path / "out") for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tfinv {argv[0]}: error: 'tfinv {argv[0]}' needs extra dependencies: ") and \
        missing in err and "pip install 'tfinv[export,serving]'" in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()
