"""The `tfinv` command line, run in-process through `tfinv.cli.main` with tiny settings."""

import json
import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfinv
from tfinv import cli, data

TINY = ["--levels", "1", "--steps-per-level", "1", "--hidden-channels", "8", "--epochs", "1", "--verbose", "0"]


def read_png(path):
    return tf.io.decode_png(tf.io.read_file(str(path))).numpy()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = cli.main(["train", *TINY, "--max-train", "128", "--max-test", "64", "--num-samples", "16", "--out", str(out)])
    assert code == 0
    return out


def test_train_writes_model_samples_and_metrics(trained):
    grid = read_png(trained / "samples.png")
    assert grid.shape == ((4 * 9 + 1) * 4, (4 * 9 + 1) * 4, 1)  # 16 samples of 8x8, padding 1, scale 4
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["num_train"] == 128 and metrics["num_test"] == 64
    # Each reported figure is the value it names, recomputed here from the saved model and the
    # same splits (fixed dequantisation noise, so the figures are reproducible).
    model = keras.saving.load_model(trained / "model.keras", safe_mode=True)
    options = metrics["config"]["cli"]
    evaluation = dict(batch_size=options["batch_size"], seed=options["seed"], shuffle=False, fixed_noise=True)
    for split, limit in (("train", 128), ("test", 64)):
        images, _ = data.load_arrays(options["dataset"], split, key=options["key"], num_levels=17)
        batches = data.dequantized_dataset(images[:limit], **evaluation)
        expected = np.concatenate([model.bits_per_dim(x).numpy() for x in batches]).mean()
        assert metrics[f"{split}_bits_per_dim"] == pytest.approx(float(expected), rel=1e-5)
    assert metrics["num_parameters"] == model.count_params()
    # samples.png shows the saved model's 16 samples (seed 0, temperature 0.7): every pixel lies
    # between the grids of those samples moved by -/+1e-3 (the grid's mapping is monotone).
    samples = np.asarray(model.sample(16, temperature=0.7, seed=0), np.float64)
    low, high = (data.image_grid(samples + s, 17).astype(int) for s in (-1e-3, 1e-3))
    assert np.all(low <= grid) and np.all(grid <= high) and np.mean(low != high) < 0.2
    assert 0 < metrics["fit_seconds"] <= metrics["wall_seconds"]  # fit is one part of the run
    assert metrics["config"]["model"]["num_levels"] == 17 and metrics["config"]["cli"]["levels"] == 1
    assert (trained / "model.keras").stat().st_size > 0


def test_sample_from_the_saved_model(trained, tmp_path, capsys):
    out = tmp_path / "grid.png"
    args = ["sample", "--model", str(trained / "model.keras"), "--n", "4", "--seed", "3", "--out", str(out)]
    assert cli.main(args) == 0
    first = read_png(out)
    assert first.shape == ((2 * 9 + 1) * 4, (2 * 9 + 1) * 4, 1)
    assert cli.main(args) == 0
    np.testing.assert_array_equal(read_png(out), first)  # seeded
    assert "wrote 4 samples" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"not a zip", None])
def test_sample_rejects_a_bad_model_file_with_exit_code_2(tmp_path, capsys, content):
    path = tmp_path / "bad.keras"
    if content is not None:
        path.write_bytes(content)
    assert cli.main(["sample", "--model", str(path), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfinv sample: error: ") and "bad.keras" in err and "\n" not in err
    assert "Traceback" not in err and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((8, 4, 4), np.nan, np.float32), "1?NaN/Inf value"),
        (np.full((8, 4, 4), 300, np.int64), r"got values in \[300, 300\]"),
    ],
)
def test_train_rejects_bad_data_before_training(tmp_path, capsys, array, message):
    path = tmp_path / "bad.npz"
    np.savez(path, images=array)
    out = tmp_path / "out"
    assert cli.main(["train", *TINY, "--dataset", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfinv train: error: ") and "bad.npz, key 'images'" in err
    assert "integer pixel counts in [0, 255]" in err
    assert re.search(message, err) and not out.exists()


def test_train_on_an_npz_file(tmp_path):
    path = tmp_path / "tiny.npz"
    np.savez(path, pixels=np.random.default_rng(0).integers(0, 4, (40, 4, 4, 2)))
    out = tmp_path / "out"
    args = ["train", *TINY, "--dataset", str(path), "--key", "pixels", "--num-levels", "4", "--batch-size", "16"]
    assert cli.main([*args, "--num-samples", "4", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["num_train"], metrics["num_test"], metrics["num_levels"]) == (32, 8, 4)
    assert metrics["input_shape"] == [4, 4, 2] and math.isfinite(metrics["test_bits_per_dim"])


def test_usage_errors(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert cli.main(["train", "--model", "resnet", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'resnet'" in err and "glow" in err
    assert cli.main(["train", "--num-levels", "256", "--out", out]) == 2
    assert "dataset 'digits' has 17 pixel levels" in capsys.readouterr().err
    assert cli.main(["train", "--levels", "4", "--out", out]) == 2  # 8x8 images allow at most 3 levels
    assert "needs H and W divisible by 16" in capsys.readouterr().err
    assert cli.main(["train", "--dataset", str(tmp_path / "none.npz"), "--out", out]) == 2
    assert "no .npz file" in capsys.readouterr().err
    assert cli.main(["train", "--epochs", "0", "--out", out]) == 2
    assert cli.main([]) == 2


def test_model_registry_is_extensible():
    assert "glow" in cli.MODEL_BUILDERS
    with pytest.raises(ValueError, match="already registered"):
        cli.register_model("glow", "again")(lambda args, shape, levels: None)


@pytest.mark.parametrize("jit", [False, True])
def test_evaluate_bits_per_dim_is_the_mean_over_every_example(jit):
    model = tfinv.models.Glow((8, 8, 1), levels=1, steps_per_level=1, hidden_channels=8, num_levels=17)
    images, labels = data.digits_arrays("test")
    dataset = data.dequantized_dataset(images[:50], labels[:50], batch_size=16, shuffle=False, fixed_noise=True, with_labels=True)
    expected = np.concatenate([model.bits_per_dim(x).numpy() for x, _ in dataset]).mean()
    assert cli.evaluate_bits_per_dim(model, dataset, jit_compile=jit) == pytest.approx(expected, rel=1e-5)
