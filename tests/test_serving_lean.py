"""Lean ONNX serving: the server and the client run without TensorFlow, TFP or Keras.

* In a fresh interpreter of the full install, importing `tfinv.serving` (and the export's
  manifest reader), serving every signature and running ``tfinv serve``/``query``/``serve-config``
  through the ``tfinv`` command leaves no TensorFlow/Keras/TFP in ``sys.modules``.
* The lean install (``pip install -r requirements-onnx.txt`` + ``pip install --no-deps tfinv``, as
  the generated ``Dockerfile.onnx`` does) in a new venv with nothing else serves a model exported
  by the full package: every signature answers as the TF model does, seeds give
  ``model.sample``'s samples.
* A manifest from a newer tfinv is refused, naming both versions.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from tfinv.export import export_flow
from tfinv.export.manifest import FORMAT, ManifestError, read_manifest
from tfinv.models import Glow
from tfinv.serving import Client
from tfinv.testing.contract import perturb_weights, relative_error

REPO = pathlib.Path(__file__).resolve().parents[1]
HEAVY = ("tensorflow", "keras", "tensorflow_probability", "tf_keras")
# Local wheels for the lean venv, kept between runs (the first run downloads them).
WHEELS = pathlib.Path(os.environ.get("TFINV_TEST_WHEELS", pathlib.Path.home() / ".cache" / "tfinv-test-wheels"))


@pytest.fixture(scope="module")
def glow():
    model = Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=8, num_levels=17)
    model.initialize(tf.random.stateless_uniform((16, 8, 8, 1), [1, 2], 0.5, 16.5))
    perturb_weights(model, 0.05)
    return model


@pytest.fixture(scope="module")
def export_dir(glow, tmp_path_factory):
    out = tmp_path_factory.mktemp("lean_export")
    export_flow(glow, out, name="digits")
    return out


_FRESH = textwrap.dedent("""
    import json, sys
    HEAVY = {heavy!r}

    def heavy():
        return sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)

    import tfinv.serving, tfinv.serving.client, tfinv.serving.server, tfinv.serving.app, tfinv.serving.cli
    import tfinv.serving.rng, tfinv.serving.errors, tfinv.serving.tf_serving, tfinv.export.manifest
    from tfinv.serving import Client, ServingError, create_app
    after_import = heavy()
    from starlette.testclient import TestClient

    app = create_app({export_dir!r})
    x = [[[[3.5]] * 8] * 8] * 2
    requests = {{
        "forward": {{"inputs": {{"x": x}}}},
        "inverse": {{"inputs": {{"z": [[0.1] * 64] * 2}}}},
        "sample": {{"inputs": {{"n": 2, "seed": 1, "temperature": 0.7}}}},
        "log_prob": {{"instances": x}},
        "serving_default": {{"inputs": x}},
    }}
    statuses = {{}}
    with TestClient(app) as http:
        statuses["status"] = http.get("/v1/models/digits").status_code
        statuses["metadata"] = http.get("/v1/models/digits/metadata").status_code
        for key, body in requests.items():
            statuses[key] = http.post("/v1/models/digits:predict", json={{"signature_name": key, **body}}).status_code
    after_serving = heavy()
    # The `tfinv` console command's serving subcommands build and parse without TensorFlow too.
    import contextlib, io
    from tfinv.cli import main
    sys.argv = ["tfinv"]
    codes = {{}}
    for command in ("serve", "query", "serve-config"):
        with contextlib.redirect_stdout(io.StringIO()):
            codes[command] = main([command, "--help"])
    codes["serve-missing"] = main(["serve", "--export-dir", {missing!r}, "--port", "0"])
    print(json.dumps({{"after_import": after_import, "after_serving": after_serving, "statuses": statuses,
                      "cli_codes": codes, "after_cli": heavy()}}))
""")


def test_serving_every_signature_loads_no_tensorflow(export_dir):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = _FRESH.format(heavy=HEAVY, export_dir=str(export_dir), missing=str(export_dir / "missing"))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["after_import"] == [] and result["after_serving"] == [] and result["after_cli"] == [], result
    assert result["cli_codes"] == {"serve": 0, "query": 0, "serve-config": 0, "serve-missing": 2}, result
    assert "tfinv serve: error: cannot serve" in out.stderr and "missing" in out.stderr, out.stderr[-2000:]
    assert set(result["statuses"].values()) == {200}, result["statuses"]
    assert set(result["statuses"]) == {"status", "metadata", "forward", "inverse", "sample", "log_prob",
                                       "serving_default"}


def test_a_manifest_from_a_newer_tfinv_is_refused_naming_both_versions(export_dir, tmp_path, capsys):
    import tfinv
    from tfinv.serving.cli import main as serve_main

    newer = tmp_path / "newer"
    shutil.copytree(export_dir, newer)
    manifest = json.loads((newer / "manifest.json").read_text())
    manifest.update(format=FORMAT + 1, tfinv_version="9.3.0")
    (newer / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=rf"written by tfinv 9\.3\.0 \(manifest format {FORMAT + 1}\); this is "
                                            rf"tfinv {tfinv.__version__}, which reads manifest formats up to {FORMAT}"):
        read_manifest(newer)
    assert serve_main(["--export-dir", str(newer), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "tfinv 9.3.0" in err and f"tfinv {tfinv.__version__}" in err and len(err.strip().splitlines()) == 1
    assert read_manifest(export_dir).format == 1  # the same export as written is accepted


# --------------------------------------------------------------------------- the lean install
def _pip(*args, timeout=300):
    out = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"pip {' '.join(args[:3])} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


@contextlib.contextmanager
def _lean_server(venv: pathlib.Path, export_dir: pathlib.Path, log_path: pathlib.Path):
    port_file = log_path.with_name("port")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(venv / "bin" / "tfinv-serve"), "--export-dir", str(export_dir), "--port", "0",
                                    "--port-file", str(port_file), "--log-level", "warning"],
                                   stdout=log, stderr=subprocess.STDOUT, env=env, cwd=log_path.parent)
    try:
        deadline = time.monotonic() + 60
        while not port_file.is_file():
            assert process.poll() is None, f"lean server exited:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"lean server did not listen:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{int(port_file.read_text())}", process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(15)


def test_lean_install_serves_a_model_exported_by_the_full_package(glow, export_dir, tmp_path):
    requirements = importlib.resources.files("tfinv.serving").joinpath("requirements-onnx.txt")
    requirements_path = tmp_path / "requirements-onnx.txt"
    requirements_path.write_text(requirements.read_text())
    # Wheels: the pinned requirements (downloaded once, then reused) and tfinv built from this tree.
    _pip("download", "-q", "-d", str(WHEELS), "-r", str(requirements_path))
    _pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(REPO))
    (wheel,) = (tmp_path / "dist").glob("tfinv-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # What Dockerfile.onnx runs, from local wheels only.
    _pip("--python", str(python), "install", "-q", "--no-index", "--find-links", str(WHEELS), "-r",
         str(requirements_path))
    _pip("--python", str(python), "install", "-q", "--no-deps", str(wheel))
    installed = subprocess.run([python, "-c", "import importlib.metadata as m; "
                                "print(sorted(d.metadata['Name'].lower() for d in m.distributions()))"],
                               capture_output=True, text=True, check=True).stdout
    names = set(json.loads(installed.replace("'", '"')))
    assert {"onnxruntime-gpu", "numpy", "starlette", "uvicorn", "httpx", "tfinv"} <= names
    assert not names & {"tensorflow", "keras", "tensorflow-probability", "tf-keras", "onnxruntime"}, names

    with _lean_server(venv, export_dir, tmp_path / "server.log") as (url, process):
        with Client(url, model="digits") as client:
            client.wait_until_available(timeout=30)
            x, z = client.sample(8, seed=3, temperature=0.7, return_z=True)
            # Seeds give model.sample's samples (ONNX-vs-TF parity, 1e-4 relative).
            assert relative_error(x, glow.sample(8, temperature=0.7, seed=3)) <= 1e-4
            assert relative_error(z, 0.7 * tf.random.stateless_normal((8, 64), seed=[3, 0])) <= 1e-6
            z_tf, log_det_tf = glow.forward(x)
            z_back, log_det = client.forward(x)
            assert relative_error(z_back, z_tf) <= 1e-4 and relative_error(log_det, log_det_tf) <= 1e-4
            x_back, inv_log_det = client.inverse_and_log_det(z_tf)
            x_tf, inv_log_det_tf = glow.inverse_and_log_det(z_tf)
            assert relative_error(x_back, x_tf) <= 1e-4 and relative_error(inv_log_det, inv_log_det_tf) <= 1e-4
            assert relative_error(client.log_prob(x), glow.log_prob(x)) <= 1e-4
            assert np.array_equal(client.sample(8, seed=3, temperature=0.7), x)
        # The server process itself never mapped TensorFlow.
        maps = pathlib.Path(f"/proc/{process.pid}/maps")
        if maps.exists():
            assert "libtensorflow" not in maps.read_text()


def test_export_and_serving_use_only_tfinvs_public_api():
    """export/ and serving/ import tfinv through its packages' public names (`tfinv`, `tfinv.core`,
    `tfinv.data`, ...), never `tfinv.cli` nor a private module like `tfinv.core.flow_model`."""
    import ast

    public = {"tfinv", "tfinv.core", "tfinv.data", "tfinv.layers", "tfinv.models", "tfinv.blocks", "tfinv.testing"}
    offenders = []
    for folder in ("export", "serving"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for name in names:
                    own = name.startswith(("tfinv.export", "tfinv.serving"))
                    if name.split(".")[0] == "tfinv" and not own and name not in public:
                        offenders.append(f"{path.relative_to(REPO)}: {name}")
    assert not offenders, offenders
