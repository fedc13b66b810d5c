"""What a first-day user hits: each test reproduces a failure found by trying tfinv as a new user
(README journeys with their own data, the CLI's defaults, the server's start-up) and checks the fix.
Tiny shapes; no training beyond a step or two."""

from __future__ import annotations

import numpy as np
import pytest

from tfinv.models.flow_gmm import semi_supervised_labels


def test_all_labels_kept_whatever_the_class_sizes():
    # `tfinv train --model flowgmm` keeps every label by default; the embedded digits' classes
    # differ in size (139..155 of 1437), which used to fail "class 0 has 139 examples, fewer than
    # the 143 labels asked per class".
    labels = np.array([0] * 2 + [1] * 5 + [2] * 3)
    kept = semi_supervised_labels(labels, len(labels), 3, seed=0)
    assert kept.dtype == np.int64 and np.array_equal(kept, labels)
    kept[0] = 2  # a copy, not the caller's array
    assert labels[0] == 0
    # Dropping labels still needs the class-balanced share of every class.
    with pytest.raises(ValueError, match="class 0 has 2 examples, fewer than the 3 labels asked per class"):
        semi_supervised_labels(labels, 9, 3)


def test_a_failed_first_fit_leaves_the_model_trainable():
    import tensorflow as tf

    from tfinv import FlowModel, layers

    model = FlowModel([layers.VectorActNorm(), layers.VectorInvLinear(seed=1)], input_shape=(3,))
    model.compile(optimizer="adam")
    with pytest.raises(TypeError, match=r"x must be floating point, got dtype int32 \(integer pixel counts need "
                       r"dequantisation noise: tfinv.training.fit_flow"):
        model.fit(np.ones((8, 3), np.int32), epochs=1, batch_size=4, verbose=0)
    before = [w.numpy().copy() for w in model.trainable_weights]
    # The corrected call used to fail: "Creating variables on a non-first call to a function
    # decorated with tf.function" (Keras kept the failed trace of the first call).
    history = model.fit(tf.random.stateless_normal((8, 3), seed=[1, 2]), epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))


def _tiny_glow(num_levels=17):
    from tfinv.models import Glow

    return Glow((4, 4, 1), levels=1, steps_per_level=1, hidden_channels=4, num_levels=num_levels)


@pytest.mark.parametrize("images, message", [
    # the usual mistake: images already scaled to [0, 1] trained silently (bits/dim 0.78 looked great)
    (np.full((4, 4, 4, 1), 0.5), r"fit_flow images: expected integer pixel counts in \[0, 16\] \(num_levels=17\), "
                                 r"got non-integer values \(e.g. 0.5\); pass raw counts"),
    (np.full((4, 4, 4, 1), 40), r"got values in \[40, 40\] \(pass the matching num_levels\)"),  # trained to NaN
    (np.full((4, 4, 4, 1), np.nan), r"got 64 NaN/Inf value\(s\)"),  # trained to NaN
    (np.zeros((0, 4, 4, 1), np.uint8), r"an empty dataset \(0 images"),
])
def test_fit_flow_checks_its_images_are_counts_before_training(images, message):
    from tfinv import training

    model = _tiny_glow()
    weights = [w.numpy().copy() for w in model.weights]
    with pytest.raises(ValueError, match=message):
        training.fit_flow(model, images, epochs=1, batch_size=2)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(weights, model.weights))  # not initialised either
    with pytest.raises(ValueError, match=message.replace("fit_flow images", "dataset_bits_per_dim images")):
        training.dataset_bits_per_dim(model, images)


def test_fit_flow_takes_counts_without_a_channel_axis():
    from tfinv import training

    from tfinv import FlowModel, layers

    images = np.random.default_rng(0).integers(0, 17, (6, 4, 4))  # (N, H, W) grey images
    model = FlowModel([layers.LogitPreprocess(17), layers.ActNorm()], input_shape=(4, 4, 1))
    training.fit_flow(model, images, epochs=1, batch_size=3, validation_images=images[:2])
    assert np.isfinite(training.dataset_bits_per_dim(model, images))


def test_serve_on_a_busy_or_bad_port_is_one_line_exit_2(onnx_glow, capsys):
    """A port in use used to end `tfinv serve` with uvicorn's multi-line log and exit code 3; a port
    above 65535 with an OverflowError traceback."""
    import socket

    from tfinv.serving import cli

    _, export_dir = onnx_glow
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["--export-dir", str(export_dir), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"tfinv serve: error: cannot serve '{export_dir}': cannot listen on "
                                                   f"127.0.0.1:{port}: Address already in use (another process"), err
    assert cli.main(["--export-dir", str(export_dir), "--port", "0", "--host", "192.0.2.1"]) == 2  # TEST-NET-1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot listen on 192.0.2.1:0: Cannot assign requested address" in err, err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--export-dir", str(export_dir), "--port", "99999"])
    assert exit_.value.code == 2
    assert "argument --port: expected a port in [0, 65535] (0: a free port), got '99999'" in capsys.readouterr().err


def test_flow_model_from_a_keras_sequential_and_from_plain_keras_layers():
    import keras
    import tensorflow as tf

    from tfinv import FlowModel, layers

    stack = keras.Sequential([layers.VectorActNorm(), layers.VectorInvLinear(seed=3)])
    model = FlowModel(stack, input_shape=(3,))  # used to fail: "'Sequential' object is not iterable"
    x = tf.random.stateless_normal((5, 3), seed=[3, 4])
    z, log_det = model.forward(x)
    reference = [layers.VectorActNorm(), layers.VectorInvLinear(seed=3)]
    expected = FlowModel(reference, input_shape=(3,))
    expected.set_weights(model.get_weights())
    z_ref, log_det_ref = expected.forward(x)
    assert np.allclose(z, z_ref, rtol=0, atol=1e-6) and np.allclose(log_det, log_det_ref, rtol=0, atol=1e-6)
    assert np.max(np.abs(model.inverse(z) - x)) <= 1e-5
    with pytest.raises(TypeError, match="takes InvertibleLayer instances, got Dense"):
        FlowModel(keras.Sequential([layers.VectorActNorm(), keras.layers.Dense(3)]), input_shape=(3,))
    with pytest.raises(TypeError, match=r"needs an InvertibleLayer, a list of them or a keras.Sequential of them "
                                        r"\(tfinv.layers\), got Dense"):
        FlowModel(keras.layers.Dense(3), input_shape=(3,))


@pytest.mark.parametrize("channels", [1, 3])
def test_png_grids_are_encoded_exactly_without_tensorflow(tmp_path, channels):
    import tensorflow as tf

    from tfinv.data import save_image_grid

    images = np.random.default_rng(channels).uniform(-1.0, 18.0, (5, 4, 3, channels))  # overshoots clipped
    grid = save_image_grid(images, tmp_path / "grid.png", num_levels=17)
    decoded = tf.io.decode_png((tmp_path / "grid.png").read_bytes()).numpy()
    assert decoded.dtype == np.uint8 and np.array_equal(decoded, grid) and grid.shape[-1] == channels


def test_writing_a_png_grid_and_checking_counts_import_no_tensorflow(tmp_path):
    """`tfinv query ... sample` writes its PNG through `tfinv.data`, which used to import TensorFlow
    (its start-up lines on stderr, and a failure in the lean ONNX install, which has none)."""
    import subprocess
    import sys

    script = (
        "import sys, numpy as np\n"
        "from tfinv.data import save_image_grid, validate_images\n"
        f"save_image_grid(validate_images(np.ones((2, 4, 4)), 17), {str(tmp_path / 'g.png')!r}, 17)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tensorflow_probability')))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]" and (tmp_path / "g.png").is_file()


def test_query_sample_refuses_a_non_png_destination_before_any_request(tmp_path, capsys):
    from tfinv.cli import main

    # Port 1: nothing listens there, so reaching the server would fail with "connection refused".
    argv = ["query", "--url", "http://127.0.0.1:1", "--model", "digits", "sample", "--out"]
    assert main(argv + [str(tmp_path / "grid.jpg")]) == 2  # used to write a PNG named .jpg
    assert capsys.readouterr().err == (f"tfinv query: error: --out '{tmp_path / 'grid.jpg'}' must end in .png "
                                       f"(the samples are written as a PNG grid)\n")
    assert main(argv + [str(tmp_path)]) == 2
    assert "must end in .png" in capsys.readouterr().err
    assert main(argv + [str(tmp_path / "new" / "grid.png")]) == 2  # a good destination: the request fails
    assert "Connection refused" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_ctrl_c_while_the_command_starts_is_one_line(monkeypatch, capsys):
    """Ctrl-C during the seconds TensorFlow takes to load printed a 40-line KeyboardInterrupt traceback."""
    from tfinv import cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["train", "--out", "runs/never"]) == 130
    assert capsys.readouterr().err == "tfinv train: interrupted\n"


def test_train_reads_labels_of_a_keras_style_npz_with_label_key(tmp_path, capsys):
    """An .npz as `keras.datasets` store them (x_train, y_train): labels had no option to name them."""
    from tfinv import data
    from tfinv.cli import main

    rng = np.random.default_rng(0)
    path = tmp_path / "mnist_like.npz"
    np.savez(path, x_train=rng.integers(0, 256, (12, 4, 4), dtype=np.uint8), y_train=rng.integers(0, 3, 12))
    argv = ["train", "--model", "revvit", "--dataset", str(path), "--key", "x_train", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    assert ("needs a label array 'labels'; the file holds ['x_train', 'y_train'] (name the label array with "
            "label_key=..., tfinv train's --label-key)") in capsys.readouterr().err
    assert main(argv + ["--label-key", "y_test"]) == 2  # the option reaches the loader
    assert "needs a label array 'y_test'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    images, labels = data.load_arrays(path, "all", key="x_train", label_key="y_train", with_labels=True)
    assert images.shape == (12, 4, 4, 1) and labels.shape == (12,)
    with pytest.raises(ValueError, match=r"no array 'images'; the file holds \['x_train', 'y_train'\] "
                                         r"\(name the image array with key=..., tfinv's --key\)"):
        data.load_arrays(path, "all")


def test_fit_on_a_dataset_warns_nothing_about_shuffle():
    """The README's `model.fit(train)` printed Keras's "`shuffle=True` was passed, but will be ignored"."""
    import warnings

    import tensorflow as tf

    from tfinv import FlowModel, layers

    model = FlowModel([layers.VectorActNorm()], input_shape=(2,))
    model.compile(optimizer="adam")
    dataset = tf.data.Dataset.from_tensor_slices(tf.random.stateless_normal((4, 2), seed=[5, 6])).batch(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(dataset, epochs=1, verbose=0)
    assert not [w for w in caught if "shuffle" in str(w.message)], [str(w.message) for w in caught]


def test_vector_layers_in_an_image_rank_composition_say_how_to_fix_it():
    import tensorflow as tf

    from tfinv import layers
    from tfinv.core import InvertibleSequential

    x = tf.random.stateless_normal((4, 6), seed=[7, 8])
    with pytest.raises(ValueError, match=r"expects inputs of rank >= 4 \(batch \+ event of rank 3\), got shape "
                                         r"\(4, 6\); give InvertibleSequential event_ndims, the rank of one example "
                                         r"\(1 for vectors, 3 for images; default 3\)"):
        InvertibleSequential([layers.VectorActNorm(), layers.VectorInvLinear()]).forward_and_log_det(x)
    z, log_det = InvertibleSequential([layers.VectorActNorm(), layers.VectorInvLinear()],
                                      event_ndims=1).forward_and_log_det(x)
    assert z.shape == (4, 6) and log_det.shape == (4,)
