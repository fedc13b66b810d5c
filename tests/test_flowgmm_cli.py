"""`tfinv train --model flowgmm` and `tfinv ood`, in-process with a tiny FlowGMM (issue 17)."""

import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinv import cli, data, ood

TINY = ["--model", "flowgmm", "--levels", "1", "--steps-per-level", "1", "--hidden-channels", "8", "--epochs", "1",
        "--verbose", "0", "--max-train", "64", "--max-test", "32", "--no-jit"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("flowgmm")
    code = cli.main(["train", *TINY, "--labels", "10", "--consistency-weight", "0.5", "--num-samples", "20",
                     "--out", str(out)])
    assert code == 0
    return out


def test_train_flowgmm_reports_what_the_saved_model_computes(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["task"] == "semi_supervised" and metrics["num_classes"] == 10
    assert metrics["num_labelled"] == 10 and metrics["num_unlabelled"] == 54
    model = keras.saving.load_model(trained / "model.keras", safe_mode=True)
    assert model.consistency_weight == 0.5 and model.num_levels == 17
    images, labels = data.load_arrays("digits", "test", num_levels=17, with_labels=True)
    images, labels = images[:32], labels[:32]
    noise = np.random.default_rng(0).uniform(0.0, 1.0, images.shape).astype(np.float32)
    accuracy = np.mean(model.predict_classes(images + noise) == labels)
    assert metrics["test_accuracy"] == pytest.approx(float(accuracy), abs=1e-12)
    # one row of two class-conditional samples per class: 10 rows x 2 columns of 8x8 tiles
    grid = tf.io.decode_png(tf.io.read_file(str(trained / "samples.png"))).numpy()
    assert grid.shape == ((10 * 9 + 1) * 4, (2 * 9 + 1) * 4, 1)
    samples = np.asarray(model.sample_classes(np.repeat(np.arange(10), 2), temperature=0.7, seed=0), np.float64)
    low, high = (data.image_grid(samples + s, 17, columns=2).astype(int) for s in (-1e-3, 1e-3))
    assert np.all(low <= grid) and np.all(grid <= high)


def test_train_flowgmm_rejects_bad_label_counts(tmp_path, capsys):
    assert cli.main(["train", *TINY, "--labels", "500", "--out", str(tmp_path / "a")]) == 2
    assert "--labels 500: expected at most the 64 training images" in capsys.readouterr().err
    assert cli.main(["train", "--model", "glow", "--labels", "5", "--out", str(tmp_path / "b")]) == 2
    assert "--labels applies to semi-supervised models" in capsys.readouterr().err
    assert cli.main(["train", *TINY, "--labels", "-3", "--out", str(tmp_path / "c")]) == 2
    assert "expected an integer >= 0" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")


def test_ood_writes_the_auroc_report_and_histogram(trained, tmp_path):
    out, picture = tmp_path / "report.json", tmp_path / "scores.png"
    code = cli.main(["ood", "--model", str(trained / "model.keras"), "--data", "digits", "--ood", "inverted",
                     "constant", "--typicality-m", "5", "--seed", "3", "--out", str(out), "--histogram", str(picture)])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["auroc"]) == set(cli.OOD_SCORES)
    assert set(report["auroc"]["log_likelihood"]) == {"inverted", "constant"}
    # recompute the likelihood and complexity AUROCs with the same noise draws (seed 3, same order)
    model = keras.saving.load_model(trained / "model.keras", safe_mode=True)
    train_x, _ = data.load_arrays("digits", "train", num_levels=17)
    test_x, _ = data.load_arrays("digits", "test", num_levels=17)
    rng = np.random.default_rng(3)
    half = len(test_x) // 2
    for counts in (train_x, test_x[:half]):
        rng.uniform(0.0, 1.0, counts.shape)
    inside = test_x[half:] + rng.uniform(0.0, 1.0, test_x[half:].shape).astype(np.float32)
    inverted = ood.synthetic_ood_set("inverted", test_x, 17, seed=3)
    outside = inverted + rng.uniform(0.0, 1.0, inverted.shape).astype(np.float32)
    log_in, log_out = model.log_prob(inside).numpy(), model.log_prob(outside).numpy()
    assert report["auroc"]["log_likelihood"]["inverted"] == pytest.approx(ood.auroc(log_in, log_out), abs=1e-3)
    expected = ood.auroc(log_in / math.log(2) + ood.complexity_bits(inside, 17),
                         log_out / math.log(2) + ood.complexity_bits(outside, 17))
    assert report["auroc"]["complexity_corrected"]["inverted"] == pytest.approx(expected, abs=1e-3)
    assert report["num_in_distribution_scored"] == len(test_x) - half and report["typicality"]["M"] == 5
    # four panels of 90 rows with 4-row gaps, 240 wide, RGB; the folder holds nothing else
    assert tf.io.decode_png(tf.io.read_file(str(picture))).numpy().shape == (4 * 90 + 3 * 4, 240, 3)
    assert sorted(os.listdir(tmp_path)) == ["report.json", "scores.png"]


def test_ood_rejects_a_set_of_another_shape(trained, tmp_path, capsys):
    path = tmp_path / "small.npz"
    np.savez(path, images=np.zeros((12, 4, 4, 1), np.uint8))
    out = tmp_path / "r.json"
    code = cli.main(["ood", "--model", str(trained / "model.keras"), "--ood", str(path), "--typicality-m", "2",
                     "--num-levels", "17", "--out", str(out)])
    assert code == 2
    assert "OOD set 'small.npz' must have shape (N, 8, 8, 1) like the model's data, got (12, 4, 4, 1)" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main(["ood", "--model", str(trained / "model.keras"), "--ood", "blur", "--out", str(out)]) == 2
    assert "expected inverted, uniform_noise, constant, shuffled" in capsys.readouterr().err
