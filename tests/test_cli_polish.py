"""Small CLI fixes from a newcomer's review: `tfinv query` takes the served model's pixel levels."""

from __future__ import annotations

import json
import shutil

import pytest

from tfinv import cli


@pytest.fixture
def in_process_rest(monkeypatch):
    """Routes `RestTransport` to an in-process `create_app(export_dir)` (set by the returned function)."""
    from starlette.testclient import TestClient

    import tfinv.serving.rest_transport as rest
    from tfinv.serving import create_app

    original = rest.RestTransport.__init__
    apps = {}

    def in_process(self, url, model, version=None, timeout=30.0):
        original(self, url, model, version, timeout)
        self._http = TestClient(apps["app"])

    monkeypatch.setattr(rest.RestTransport, "__init__", in_process)

    def serve(export_dir):
        apps["app"] = create_app(export_dir)

    return serve


def test_query_sample_uses_the_served_models_pixel_levels(onnx_glow, tmp_path, in_process_rest, capsys):
    from tfinv.data import save_image_grid
    from tfinv.serving import Client

    _, export_dir = onnx_glow
    assert json.loads((export_dir / "manifest.json").read_text())["num_levels"] == 17  # export records it
    # The same graphs, declared as a 256-level model (the PNG scaling is all that changes).
    served = tmp_path / "export"
    shutil.copytree(export_dir, served)
    manifest = json.loads((served / "manifest.json").read_text())
    manifest["num_levels"] = 256
    (served / "manifest.json").write_text(json.dumps(manifest))
    in_process_rest(served)
    with Client("http://in-process", model="digits") as client:
        assert client.metadata()["metadata"]["tfinv"] == {"num_levels": 256}
        assert client.num_levels() == 256
        x = client.sample(4, seed=3, temperature=0.7)
    save_image_grid(x, str(tmp_path / "want256.png"), 256)
    save_image_grid(x, str(tmp_path / "want17.png"), 17)
    query = ["query", "--model", "digits", "sample", "--n", "4", "--seed", "3", "--temperature", "0.7", "--out"]
    assert cli.main([*query, str(tmp_path / "got.png")]) == 0
    assert (tmp_path / "got.png").read_bytes() == (tmp_path / "want256.png").read_bytes()
    # --num-levels still overrides the served value.
    assert cli.main([*query, str(tmp_path / "got17.png"), "--num-levels", "17"]) == 0
    assert (tmp_path / "got17.png").read_bytes() == (tmp_path / "want17.png").read_bytes()


def test_query_sample_asks_for_num_levels_when_the_server_does_not_report_them(onnx_glow, tmp_path,
                                                                                in_process_rest, capsys):
    _, export_dir = onnx_glow
    served = tmp_path / "export"
    shutil.copytree(export_dir, served)
    manifest = json.loads((served / "manifest.json").read_text())
    del manifest["num_levels"]  # as TF Serving: metadata with signatures only
    manifest["model_config"].pop("num_levels", None)
    (served / "manifest.json").write_text(json.dumps(manifest))
    in_process_rest(served)
    capsys.readouterr()
    assert cli.main(["query", "--model", "digits", "sample", "--out", str(tmp_path / "grid.png")]) == 2
    err = capsys.readouterr().err
    assert "does not report its pixel levels" in err and "pass --num-levels" in err, err
    assert not (tmp_path / "grid.png").exists()


def test_step_names_equal_the_glow_step_registries():
    from tfinv.blocks import glow_step
    from tfinv.step_names import ATTENTION_NAMES, COUPLING_NAMES, LINEAR_NAMES

    registered = set(glow_step.LINEAR_LAYERS) - set(LINEAR_NAMES)  # register_linear'd by other tests
    assert sorted(set(glow_step.LINEAR_LAYERS) - registered) == sorted(LINEAR_NAMES)
    assert all(callable(glow_step.LINEAR_LAYERS[n]) for n in LINEAR_NAMES)
    assert sorted(glow_step.COUPLINGS) == sorted(COUPLING_NAMES)
    assert sorted(glow_step.ATTENTION_LAYERS) == sorted(ATTENTION_NAMES)


def test_help_and_usage_errors_do_not_import_tensorflow():
    import subprocess
    import sys

    script = (
        "import contextlib, io, json, sys\n"
        "from tfinv.cli import main\n"
        "codes = []\n"
        "for argv in (['--help'], ['train', '--help'], ['train', '--out', 'x', '--linear', 'nope'], ['sample']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "        codes.append(main(argv))\n"
        "print(json.dumps([codes, 'tensorflow' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[0, 0, 2, 2], False]


def test_a_registered_linear_is_a_linear_choice(capsys):
    from tfinv.blocks import glow_step
    from tfinv.layers.inv_conv1x1 import InvConv1x1

    glow_step.register_linear("polish_test_linear", lambda seed, name: InvConv1x1(seed=seed, name=name))
    try:
        args = cli.build_parser().parse_args(["train", "--out", "x", "--linear", "polish_test_linear"])
        assert args.linear == "polish_test_linear"
    finally:
        del glow_step.LINEAR_LAYERS["polish_test_linear"]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--out", "x", "--linear", "polish_test_linear"])
    assert "invalid choice: 'polish_test_linear'" in capsys.readouterr().err


# /proc: a folder no one (root included, for whom os.access says yes) can create files in.
UNWRITABLE = "/proc/tfinv-polish-out"


def test_unwritable_export_and_serve_config_destinations_say_what_was_expected(tmp_path, capsys):
    from tfinv.export.files import check_destination
    from tfinv.serving.tf_serving import write_serving_config

    with pytest.raises(PermissionError, match="/proc is not writable; expected a writable output folder"):
        check_destination(UNWRITABLE, ["manifest.json"], overwrite=False)
    base = tmp_path / "saved_model"
    (base / "digits" / "1").mkdir(parents=True)
    (base / "digits" / "1" / "saved_model.pb").write_bytes(b"")
    with pytest.raises(PermissionError, match="/proc is not writable; expected a writable output folder"):
        write_serving_config(base, UNWRITABLE, "digits")
    assert cli.main(["export", "--model", "m.keras", "--out", UNWRITABLE]) == 2
    err = capsys.readouterr().err
    assert "expected a writable output folder" in err and "Errno" not in err, err


def test_multiscale_shape_errors_are_grammatical_and_say_what_to_do():
    from tfinv.models import Glow
    from tfinv.models.glow import multiscale_shape_error

    with pytest.raises(ValueError) as caught:
        Glow((7, 8, 1), levels=1, steps_per_level=1, hidden_channels=4)
    assert str(caught.value) == ("Glow with 1 level needs H and W divisible by 2, got (H, W) = (7, 8): "
                                 "pad the images to (8, 8) or crop them to (6, 8)")
    assert multiscale_shape_error("Glow", 3, 8, 12, 16) == (
        "Glow with 3 levels needs H and W divisible by 8, got (H, W) = (12, 16): "
        "pad the images to (16, 16) or crop them to (8, 16), or use levels <= 2")
    # ResidualFlow's factor is 2**(levels - 1): one level always fits.
    assert multiscale_shape_error("ResidualFlow", 2, 2, 7, 8).endswith(", or use levels <= 1")
