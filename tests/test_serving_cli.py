"""`tfinv serve` / `tfinv query` and the demo's serve-and-sample step, against the real server process."""

import socket

import pytest
import tensorflow as tf

from tfinv import cli
from tfinv.export import export_flow
from tfinv.models import Glow
from tfinv.serving.demo import serve_and_sample
from tfinv.testing.contract import perturb_weights


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=8)
    perturb_weights(model, 0.05)
    out = tmp_path_factory.mktemp("export")
    export_flow(model, out, name="digits")
    return model, out


def test_demo_serves_a_sample_that_matches_the_model(exported, tmp_path):
    model, export_dir = exported
    png = tmp_path / "served.png"
    summary = serve_and_sample(str(export_dir), str(png), n=8, seed=3, temperature=0.7)
    assert summary["server_exit_code"] == 0 and summary["samples"] == 8
    assert summary["round_trip_relative_error"] <= 1e-4
    grid = tf.io.decode_png(tf.io.read_file(str(png))).numpy()
    assert grid.ndim == 3 and grid.std() > 0


def test_query_reports_connection_errors_cleanly(capsys):
    code = cli.main(["query", "--url", f"http://127.0.0.1:{_free_port()}", "--model", "digits", "status"])
    assert code == 2
    assert "tfinv query: error:" in capsys.readouterr().err


def test_serve_rejects_a_directory_without_an_export(tmp_path, capsys):
    assert cli.main(["serve", "--export-dir", str(tmp_path), "--port", "0"]) == 2
    assert "cannot serve" in capsys.readouterr().err
