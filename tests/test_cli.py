"""The `tfinv` command line, run in-process through `tfinv.cli.main` with tiny settings."""

import hashlib
import json
import math
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

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


# ---------------------------------------------------------------- files never half-written
TFINV = os.path.join(os.path.dirname(sys.executable), "tfinv")
SMALL = [*TINY, "--max-train", "32", "--max-test", "16", "--batch-size", "16", "--num-samples", "4"]


def run_python(code, timeout=300):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


def folder_digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def assert_one_line_error(err, command):
    err = err.strip()
    assert err.startswith(f"tfinv {command}: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_sigkill_during_the_final_save_leaves_the_previous_run_intact(trained, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = folder_digest(out)
    # The new run dies (SIGKILL) while writing its outputs: model.keras is written, samples.png is not.
    code = (
        "import os, signal, sys\n"
        "from tfinv import cli, data\n"
        "data.save_image_grid = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"sys.exit(cli.main({['train', *SMALL, '--seed', '1', '--out', str(out)]!r}))\n"
    )
    killed = run_python(code)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    staging = [p for p in tmp_path.iterdir() if p.name.startswith(".run.staging-")]
    assert len(staging) == 1 and (staging[0] / "model.keras").is_file()  # it died mid-save
    assert folder_digest(out) == before  # the previous run's files, byte for byte
    assert sorted(p.name for p in out.iterdir()) == ["backup", "metrics.json", "model.keras", "samples.png"]

    # Without --resume the backup of the killed run is not silently discarded.
    assert cli.main(["train", *SMALL, "--seed", "1", "--out", str(out)]) == 2
    assert "pass --resume" in assert_one_line_error(capsys.readouterr().err, "train")
    assert cli.main(["train", *SMALL, "--seed", "2", "--resume", "--out", str(out)]) == 2
    assert "--seed 1 -> 2" in assert_one_line_error(capsys.readouterr().err, "train")
    # Resuming finishes the killed run (its one epoch is backed up) and swaps the new folder in.
    assert cli.main(["train", *SMALL, "--seed", "1", "--resume", "--out", str(out)]) == 0
    assert "resumed after epoch 1" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.keras", "samples.png"]
    after = folder_digest(out)
    assert all(after[name] != before[name] for name in after)
    assert json.loads((out / "metrics.json").read_text())["config"]["cli"]["seed"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # the abandoned staging folder is gone
    # --resume with nothing left to resume refuses instead of replacing the finished run.
    assert cli.main(["train", *SMALL, "--seed", "1", "--resume", "--out", str(out)]) == 2
    assert "holds a finished run" in assert_one_line_error(capsys.readouterr().err, "train")
    assert folder_digest(out) == after


def test_train_on_an_npz_file_outputs_get_the_umask_permissions_and_foreign_files_stay(tmp_path):
    """One run checks both: training on an .npz file (its key, pixel levels and split), and the
    outputs written with the umask's permissions beside the folder's foreign files."""
    path = tmp_path / "tiny.npz"
    np.savez(path, pixels=np.random.default_rng(0).integers(0, 4, (40, 4, 4, 2)))
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "samples.png").write_text("stale output of an earlier run")
    args = ["train", *TINY, "--dataset", str(path), "--key", "pixels", "--num-levels", "4", "--batch-size", "16"]
    previous = os.umask(0o027)
    try:
        assert cli.main([*args, "--num-samples", "4", "--out", str(out)]) == 0
    finally:
        os.umask(previous)
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["num_train"], metrics["num_test"], metrics["num_levels"]) == (32, 8, 4)
    assert metrics["input_shape"] == [4, 4, 2] and math.isfinite(metrics["test_bits_per_dim"])
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.keras", "notes.txt", "samples.png"]
    assert (out / "notes.txt").read_text() == "mine" and read_png(out / "samples.png").ndim == 3
    for name in ("metrics.json", "model.keras", "samples.png"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o640, name
    assert stat.S_IMODE(out.stat().st_mode) == 0o750


@pytest.mark.parametrize(
    "out, message",
    [
        ("afile/sub", "is a file, not a folder"),
        ("afile", "is an existing file, not a folder"),
        ("/proc/tfinv-run", "no write permission in '/proc'"),
    ],
)
def test_train_checks_its_destination_before_training(tmp_path, capsys, out, message):
    (tmp_path / "afile").write_text("x")
    out = out if out.startswith("/") else str(tmp_path / out)
    assert cli.main(["train", *SMALL, "--out", out]) == 2
    captured = capsys.readouterr()
    assert message in assert_one_line_error(captured.err, "train") and captured.out == ""


@pytest.mark.parametrize(
    "out, message",
    [("folder", "is a folder; expected a file path"), ("afile/x.png", "is a file, not a folder"),
     ("/proc/x.png", "no write permission in '/proc'"), ("grid.jpg", "must end in .png")],
)
def test_sample_checks_its_destination(trained, tmp_path, capsys, out, message):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "folder").mkdir()
    out = out if out.startswith("/") else str(tmp_path / out)
    assert cli.main(["sample", "--model", str(trained / "model.keras"), "--out", out]) == 2
    assert message in assert_one_line_error(capsys.readouterr().err, "sample")


def test_train_on_a_corrupt_npz_is_one_line(tmp_path, capsys):
    path = tmp_path / "corrupt.npz"
    np.savez(path, images=np.random.default_rng(0).integers(0, 17, (40, 8, 8)))
    raw = bytearray(path.read_bytes())
    raw[200] ^= 0xFF  # inside the stored images.npy: the CRC check fails on read
    path.write_bytes(bytes(raw))
    assert cli.main(["train", *SMALL, "--dataset", str(path), "--num-levels", "17", "--out", str(tmp_path / "o")]) == 2
    err = assert_one_line_error(capsys.readouterr().err, "train")
    assert "corrupt .npz archive" in err and "Bad CRC-32" in err and not (tmp_path / "o").exists()


# ---------------------------------------------------------------- signals and start-up logging (subprocesses)
def test_sigint_ends_training_with_one_line_and_a_usable_backup(tmp_path):
    out = tmp_path / "run"
    args = [*TINY[:-4], "--epochs", "200", "--verbose", "0", "--max-train", "32", "--max-test", "16",
            "--batch-size", "16", "--num-samples", "4"]
    process = subprocess.Popen([TFINV, "train", *args, "--out", str(out)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        metadata = out / "backup" / "state" / "training_metadata.json"
        deadline = time.monotonic() + 240
        while not metadata.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err[-2000:]
    # The whole stderr of the run is that one line: TensorFlow's start-up and runtime logging
    # (TensorFlow is imported by the `tfinv` command here) is dropped without --verbose.
    err = err.strip()
    assert err.startswith("tfinv train: interrupted; ") and "--resume" in err and "\n" not in err, err
    done = json.loads(metadata.read_text())["epoch"]
    assert 1 <= done < 200 and not (out / "model.keras").exists()
    # The backup is usable: a resumed run with a budget of 1 more epoch continues from it.
    resumed = [*args[:args.index("--epochs")], "--epochs", str(done + 1), *args[args.index("--epochs") + 2:]]
    assert cli.main(["train", *resumed, "--resume", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_at_epoch"] == done and metrics["epochs"] == done + 1


def test_start_up_logging_is_shown_with_verbose(tmp_path):
    """``tfinv --verbose`` shows TensorFlow's start-up lines. Without it they are dropped: the
    SIGINT test above runs ``tfinv train`` in a fresh process (TensorFlow imported by the command)
    and its whole stderr is the one interruption line. (``--help`` imports no TensorFlow: a
    command that runs does.)"""
    from tfinv._startup import NOISE

    argv = [TFINV, "--verbose", "sample", "--model", str(tmp_path / "missing.keras")]
    verbose = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert verbose.returncode == 2 and any(marker in verbose.stderr for marker in NOISE), verbose.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--seed", "-1"], "expected a seed in [0, 2**32 - 1], got -1"),
        (["train", "--lr", "inf"], "expected a finite number > 0, got inf"),
        (["train", "--temperature", "1e39"], "expected a temperature <= 3.403e+38 (float32), got 1e39"),
        (["train", "--batch-size", "0"], "expected an integer >= 1, got 0"),
        (["train", "--model", "resnet"], "invalid choice: 'resnet'"),
        (["sample", "--model", "m.keras", "--n", "2.7"], "expected an integer >= 1, got '2.7'"),
        (["sample", "--model", "m.keras", "--temperature", "nan"], "expected a finite number > 0, got nan"),
    ],
)
def test_bad_options_are_one_line_before_any_work(tmp_path, capsys, argv, message):
    out = [] if argv[0] == "sample" else ["--out", str(tmp_path / "o")]
    assert cli.main([*argv, *out]) == 2
    err = assert_one_line_error(capsys.readouterr().err, argv[0])
    assert message in err and f"see 'tfinv {argv[0]} --help'" in err and not (tmp_path / "o").exists()


def test_strategy_tpu_without_a_tpu_is_one_line(tmp_path, capsys):
    assert cli.main(["train", *SMALL, "--strategy", "tpu", "--out", str(tmp_path / "o")]) == 2
    assert "--strategy tpu: no TPU found" in assert_one_line_error(capsys.readouterr().err, "train")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, message", [
    (["--model", "glow", "--heads", "3"], "--heads does not apply to --model glow (its model options: --levels, "),
    (["--model", "revvit", "--lev", "3", "--coupling", "additive"],  # abbreviations count as given
     "--levels, --coupling do not apply to --model revvit (its model options: --patch-size, --dim"),
    (["--model", "flowgmm", "--linear", "butterfly"], "--linear does not apply to --model flowgmm"),
    (["--model", "mixerflow", "--noise-std", "0.1"], "--noise-std does not apply to --model mixerflow"),
    (["--model", "cinn", "--task", "superres", "--angles", "8"], "--angles applies to --model cinn --task ct, not --task superres"),
    (["--model", "cinn", "--task", "ct", "--hole", "2"], "--hole applies to --model cinn --task inpaint, not --task ct"),
])
def test_options_of_another_model_are_refused_not_ignored(argv, message, tmp_path, capsys):
    """A model-specific option the chosen model does not read is a usage error (exit 2, one
    line naming the model's own options) before anything is loaded or written."""
    out = tmp_path / "run"
    assert cli.main(["train", *argv, "--epochs", "1", "--out", str(out)]) == 2
    assert message in assert_one_line_error(capsys.readouterr().err, "train")
    assert not out.exists()


def test_every_model_option_is_read_by_its_builder():
    """The registry's option lists name real train options, and every model-specific option of
    the parser belongs to at least one model (so none can be given without effect)."""
    train = cli.build_parser().train_parser
    dests = {action.dest for action in train._actions}
    specific = {option for builder in cli.MODEL_BUILDERS.values() for option in builder.options}
    assert specific <= dests
    generic = {"help", "model", "dataset", "key", "label_key", "num_levels", "epochs", "batch_size", "lr", "seed",
               "jit", "strategy", "mixed_precision", "max_train", "max_test", "num_samples", "temperature",
               "verbose", "out", "resume"}
    assert dests - generic == specific, dests - generic ^ specific
