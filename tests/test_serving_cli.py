"""`tfinv serve` / `tfinv query` and the demo's serve-and-sample step, against the real server process."""

import contextlib
import socket

import numpy as np
import pytest
import tensorflow as tf

from tfinv import cli
from tfinv.data import image_grid
from tfinv.serving.demo import serve_and_sample


@contextlib.contextmanager
def _closed_port():
    """A loopback port that refuses connections for the whole block (bound, never listening)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture(scope="module")
def exported(onnx_glow):
    return onnx_glow  # conftest.py: a small Glow and its ONNX export, shared read-only


def test_demo_serves_a_sample_that_matches_the_model(exported, tmp_path):
    model, export_dir = exported
    png = tmp_path / "served.png"
    summary = serve_and_sample(str(export_dir), str(png), n=8, seed=3, temperature=0.7)
    assert summary["server_exit_code"] == 0 and summary["samples"] == 8
    assert summary["round_trip_relative_error"] <= 1e-4
    grid = tf.io.decode_png(tf.io.read_file(str(png))).numpy().astype(int)
    # The PNG shows the TF model's samples for that seed: the server's samples match them to 1e-4
    # relative (< 3e-3 on values up to ~20), so every pixel lies between the grids of the TF samples
    # moved down and up by 3e-3 (the grid's mapping is monotone), which differ only at rounding edges.
    x_tf = np.asarray(model.sample(8, temperature=0.7, seed=3), np.float64)
    low, high = (image_grid(x_tf + shift, 17).astype(int) for shift in (-3e-3, 3e-3))
    assert grid.shape == low.shape and np.all(low <= grid) and np.all(grid <= high)
    assert np.mean(low != high) < 0.2 and grid.std() > 0


def test_query_reports_connection_errors_cleanly(capsys):
    with _closed_port() as port:
        code = cli.main(["query", "--url", f"http://127.0.0.1:{port}", "--model", "digits", "status"])
    assert code == 2
    assert "tfinv query: error:" in capsys.readouterr().err


def test_serve_rejects_a_directory_without_an_export(tmp_path, capsys):
    assert cli.main(["serve", "--export-dir", str(tmp_path), "--port", "0"]) == 2
    assert "cannot serve" in capsys.readouterr().err
