"""`tfinv export` (registered by the export stage through the `tfinv.commands` entry point)."""

import json

import numpy as np
import onnx

import tfinv
from tfinv import cli
from tfinv.export import inference_session
from tfinv.testing.contract import relative_error

TINY = ["--levels", "2", "--steps-per-level", "1", "--hidden-channels", "8", "--epochs", "1", "--verbose", "0",
        "--max-train", "128", "--max-test", "32", "--num-samples", "4"]


def test_train_then_export_writes_onnx_savedmodel_and_manifest(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", *TINY, "--out", str(run)]) == 0
    out = tmp_path / "export"
    assert cli.main(["export", "--model", str(run / "model.keras"), "--out", str(out), "--name", "digits"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["name"] == "digits" and manifest["saved_model"] == "saved_model/digits/1"
    assert (out / "saved_model" / "digits" / "1" / "saved_model.pb").is_file()
    for direction in ("forward", "inverse"):
        onnx.checker.check_model(onnx.load(out / f"{direction}.onnx"), full_check=True)
        assert manifest["graphs"][direction]["max_relative_error"] <= 1e-4
    assert "max relative error vs TF" in capsys.readouterr().out
    # The exported sampling graph reproduces the trained model's samples from the same noise.
    model = tfinv.load_model(run / "model.keras")
    z = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32) * 0.7
    session, _ = inference_session(str(out / "inverse.onnx"))
    assert relative_error(session.run(["x"], {"z": z})[0], model.inverse(z)) <= 1e-4
    # A second export into the same directory is refused without --overwrite.
    args = ["export", "--model", str(run / "model.keras"), "--out", str(out)]
    assert cli.main(args) == 2
    assert "overwrite" in capsys.readouterr().err
    assert cli.main(args + ["--overwrite", "--name", "digits"]) == 0


def test_export_rejects_non_tfinv_files(tmp_path, capsys):
    bogus = tmp_path / "m.keras"
    bogus.write_text("nope")
    assert cli.main(["export", "--model", str(bogus), "--out", str(tmp_path / "o")]) == 2
    assert "is not a .keras model archive" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
