"""``tfinv train --model cinn`` and ``tfinv sample --context`` (issue 15), in-process through
`tfinv.cli.main` with a tiny conditional Glow trained for one epoch on 64 digits."""

import json
import math

import numpy as np
import pytest
import tensorflow as tf

import tfinv
from tfinv import cli
from tfinv import inverse_problems as ip
from tfinv.data.digits import DIGITS_NUM_LEVELS, digits_arrays

TINY = ["--levels", "1", "--steps-per-level", "1", "--hidden-channels", "8", "--epochs", "1", "--verbose", "0",
        "--no-jit", "--batch-size", "32", "--max-train", "64", "--max-test", "16", "--posterior-samples", "4"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cinn_run")
    assert cli.main(["train", "--model", "cinn", "--task", "superres", "--noise-std", "0.1", *TINY,
                     "--out", str(out)]) == 0
    return out


def test_train_writes_the_posterior_metrics_and_observations(trained):
    assert sorted(p.name for p in trained.iterdir()) == sorted(cli.INVERSE_RUN_FILES)
    metrics = json.loads((trained / "metrics.json").read_text())
    assert (metrics["model"], metrics["task"], metrics["observation_shape"]) == ("cinn", "superres", [4, 4, 1])
    assert (metrics["num_train"], metrics["num_test"], metrics["posterior_samples"]) == (64, 16, 4)
    # The observations are the operator's, seeded by --seed + 1, on the test digits in [0, 1].
    test_counts, _ = digits_arrays("test", with_labels=False)
    u = test_counts[:16].astype(np.float32) / (DIGITS_NUM_LEVELS - 1)
    y = ip.SuperResolution(0.1)(u, seed=1)
    np.testing.assert_array_equal(np.load(trained / "observations.npy"), y[:8])
    naive = np.clip(np.repeat(np.repeat(y, 2, axis=1), 2, axis=2), 0, 1)
    assert metrics["psnr_naive_estimate"] == pytest.approx(ip.psnr(naive, u, 1.0), rel=1e-12)
    assert math.isfinite(metrics["psnr_posterior_mean"]) and math.isfinite(metrics["test_bits_per_dim"])
    calibration = metrics["calibration"]
    assert calibration["levels"] == pytest.approx([q / 10 for q in range(1, 10)])
    assert all(0.0 <= c <= 1.0 for c in calibration["coverage"]) and np.all(np.diff(calibration["coverage"]) >= 0)
    assert calibration["error"] == pytest.approx(
        np.mean(np.abs(np.array(calibration["coverage"]) - np.array(calibration["levels"]))), rel=1e-12)
    chart = tf.io.decode_png(tf.io.read_file(str(trained / "calibration.png"))).numpy()
    assert chart.shape == (360, 320, 3) and chart.min() < 100  # drawn, not blank
    # The CNN regressor: the widest plain CNN within the cINN's trainable parameters, same pairs.
    cnn = metrics["cnn_regressor"]
    assert math.isfinite(metrics["psnr_cnn_regressor"]) and cnn["epochs"] == 1 and cnn["preprocessing"] is None
    model = tfinv.load_model(trained / "model.keras")
    budget = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert cnn["cinn_trainable_parameters"] == budget

    def count(width):
        return sum(int(np.prod(w.shape)) for w in ip.cnn_regressor((4, 4, 1), (8, 8, 1), width).trainable_weights)

    assert cnn["trainable_parameters"] == count(cnn["width"]) <= budget < count(cnn["width"] + 1)
    assert metrics["config"]["cli"]["coupling"] == "soft_clamp"  # the cINN default
    # 8 test digits per row; rows: naive, truth, 4 samples, mean, std (8 rows of 8x8 at scale 4, padding 4 after scaling).
    png = tf.io.decode_png(tf.io.read_file(str(trained / "posterior.png"))).numpy()
    assert png.shape[:2] == (8 * 36 + 4, 8 * 36 + 4)


def test_sample_context_draws_the_models_posterior_samples(trained, tmp_path, capsys):
    png, npy = tmp_path / "posterior.png", tmp_path / "posterior.npy"
    context = trained / "observations.npy"
    assert cli.main(["sample", "--model", str(trained / "model.keras"), "--context", str(context), "--n", "3",
                     "--temperature", "0.9", "--seed", "7", "--out", str(png), "--npy", str(npy)]) == 0
    assert "3 posterior samples (temperature 0.9) for each of 8 observation(s)" in capsys.readouterr().out
    model = tfinv.load_model(trained / "model.keras")
    expected = model.posterior_samples(np.load(context), k=3, temperature=0.9, seed=7)
    got = np.load(npy)
    assert got.shape == (3, 8, 8, 8, 1)
    np.testing.assert_array_equal(got, expected)
    grid = tf.io.decode_png(tf.io.read_file(str(png))).numpy()
    assert grid.shape[:2] == (8 * 36 + 4, 3 * 36 + 4)  # one row per observation, its 3 samples side by side
    # One observation alone (shape (4, 4, 1)) is accepted as N = 1.
    one = tmp_path / "one.npy"
    np.save(one, np.load(context)[2])
    assert cli.main(["sample", "--model", str(trained / "model.keras"), "--context", str(one), "--n", "2",
                     "--out", str(png)]) == 0


def _write(tmp_path, name, value):
    path = tmp_path / name
    if isinstance(value, bytes):
        path.write_bytes(value)
    else:
        np.save(path, value, allow_pickle=True)
    return path


@pytest.mark.parametrize("context, message", [
    (None, r"is a conditional model: pass --context FILE, a \.npy array of float observations of shape "
           r"\(N, 4, 4, 1\) or \(4, 4, 1\)"),
    (np.zeros((2, 8, 8, 1), np.float32), r"has shape \(2, 8, 8, 1\); expected a \.npy array"),
    (np.zeros((0, 4, 4, 1), np.float32), r"is empty \(shape \(0, 4, 4, 1\)\)"),
    (np.full((1, 4, 4, 1), np.nan, np.float32), "holds non-finite values"),
    (np.array([{"y": 1}], dtype=object), "is not a readable .npy array"),
    (np.zeros((1, 4, 4, 1), bool), "has dtype bool"),
    (b"not an array", "is not a readable .npy array"),
    ("missing", "does not exist"),
])
def test_sample_context_errors_name_what_was_expected(trained, tmp_path, capsys, context, message):
    args = ["sample", "--model", str(trained / "model.keras"), "--out", str(tmp_path / "x.png")]
    if isinstance(context, str):
        args += ["--context", str(tmp_path / "missing.npy")]
    elif context is not None:
        args += ["--context", str(_write(tmp_path, "y.npy", context))]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfinv sample: error: ") and "\n" not in err.strip() and "Traceback" not in err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "x.png").exists()


def test_context_for_an_unconditional_model_and_task_for_another_model_are_refused(tmp_path, capsys):
    from tfinv.models import Glow

    glow = Glow((8, 8, 1), levels=1, steps_per_level=1, hidden_channels=4, num_levels=17)
    glow.save(tmp_path / "glow.keras")
    context = _write(tmp_path, "y.npy", np.zeros((1, 4, 4, 1), np.float32))
    assert cli.main(["sample", "--model", str(tmp_path / "glow.keras"), "--context", str(context),
                     "--out", str(tmp_path / "x.png")]) == 2
    assert "is not a conditional model (it takes no observation); drop --context" in capsys.readouterr().err
    assert cli.main(["train", "--model", "glow", "--task", "ct", "--out", str(tmp_path / "run")]) == 2
    assert "--task ct applies to a conditional model (--model cinn), not --model glow" in capsys.readouterr().err
    # CT needs square single-channel images: refused before training.
    path = tmp_path / "rgb.npz"
    np.savez(path, images=np.random.default_rng(0).integers(0, 4, (40, 4, 4, 2)))
    assert cli.main(["train", "--model", "cinn", "--task", "ct", "--dataset", str(path), "--num-levels", "4",
                     *TINY, "--out", str(tmp_path / "run")]) == 2
    assert r"square single-channel images (H, H, 1), got (4, 4, 2)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra, message", [
    (["--task", "ct", "--photons", "0"], r"argument --photons: expected a finite number > 0, got 0"),
    (["--task", "ct", "--photons", "nan"], r"argument --photons: expected a finite number > 0"),
    (["--task", "superres", "--photons", "100"], r"--photons \(low-dose Poisson noise\) applies to --model cinn "
                                                  r"--task ct, not --model cinn --task superres"),
    (["--task", "ct", "--photons", "100", "--noise-std", "0.1"], "either --noise-std .* or --photons .*, not both"),
    (["--task", "ct", "--noise-std", "0"], r"argument --noise-std: expected a finite number > 0, got 0"),
])
def test_bad_noise_options_are_refused_before_training(tmp_path, capsys, extra, message):
    assert cli.main(["train", "--model", "cinn", *extra, *TINY, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "run").exists()


def test_ct_photons_give_the_poisson_operator():
    args = cli.build_parser().parse_args(["train", "--model", "cinn", "--task", "ct", "--photons", "500",
                                          "--angles", "3", "--out", "unused"])
    operator = cli._inverse_operator(args)
    assert isinstance(operator, ip.Tomography) and operator.photons == 500.0 and operator.noise_std is None
