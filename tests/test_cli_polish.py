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
