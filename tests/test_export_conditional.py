"""Conditioning and pluggable bases through export and serving: a conditional Glow with a Gaussian
mixture base exported by the full package (ONNX graphs with a ``context`` input, ``sample.onnx`` and
``log_prob.onnx`` for the base, SavedModel signatures taking ``context``) and served by the ONNX
server answers as the TF model does; the same seed gives ``model.sample``'s samples."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import tensorflow as tf

from tfinv import cli
from tfinv.export import export_flow
from tfinv.export.manifest import read_manifest
from tfinv.export.signatures import graph_signatures, signatures
from tfinv.models import Glow
from tfinv.serving import Client, create_app
from tfinv.testing.contract import perturb_weights, relative_error

N, SEED, TEMPERATURE = 5, 3, 0.7
TOL = 1e-4  # ONNX-vs-TF parity (relative), as the export's own check


@pytest.fixture(scope="module")
def glow():
    model = Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=8, num_levels=17, context_shape=(10,),
                 base="mixture", name="digits")
    labels = np.arange(16) % 10
    model.initialize(tf.random.stateless_uniform((16, 8, 8, 1), [1, 2], 0.5, 16.5), np.eye(10, dtype=np.float32)[labels])
    perturb_weights(model, 0.05)
    return model


@pytest.fixture(scope="module")
def exported(glow, tmp_path_factory):
    out = tmp_path_factory.mktemp("conditional_export")
    manifest = export_flow(glow, out, saved_model=True)
    return out, manifest


def _context(n, seed=0):
    return np.eye(10, dtype=np.float32)[np.random.default_rng(seed).integers(0, 10, n)]


def test_graphs_and_manifest_carry_the_context_and_the_base(glow, exported):
    out, manifest = exported
    assert sorted(p.name for p in out.iterdir()) == ["forward.onnx", "inverse.onnx", "log_prob.onnx", "manifest.json",
                                                    "sample.onnx", "saved_model"]
    assert manifest["format"] == 2 and manifest["context_shape"] == [10]
    assert manifest["base"] == {"class": "GaussianMixture", "noise_shape": [65]}
    contract = graph_signatures((8, 8, 1), (64,), (10,), (65,))
    for kind, sig in contract.items():
        proto = onnx.load(out / f"{kind}.onnx")
        assert [i.name for i in proto.graph.input] == list(sig.input_names), kind
        assert [o.name for o in proto.graph.output] == list(sig.output_names), kind
    assert contract["forward"].input_names == ("x", "context") and contract["inverse"].input_names == ("z", "context")
    assert read_manifest(out).signatures == signatures((8, 8, 1), (64,), (10,))


def test_saved_model_signatures_take_the_context(glow, exported):
    out, manifest = exported
    loaded = tf.saved_model.load(str(out / manifest["saved_model"]))
    c = _context(N)
    got = loaded.signatures["sample"](n=tf.constant(N), seed=tf.constant(SEED), temperature=tf.constant(TEMPERATURE),
                                      context=tf.constant(c))
    assert relative_error(got["x"], glow.sample(N, TEMPERATURE, SEED, context=c)) <= 1e-5
    x = got["x"].numpy()
    assert relative_error(loaded.signatures["log_prob"](x=tf.constant(x), context=tf.constant(c))["log_prob"],
                          glow.log_prob(x, c)) <= 1e-5
    z, log_det = glow.forward(x, c)
    fwd = loaded.signatures["forward"](x=tf.constant(x), context=tf.constant(c))
    assert relative_error(fwd["z"], z) <= 1e-5 and relative_error(fwd["log_det"], log_det) <= 1e-5
    with pytest.raises(tf.errors.InvalidArgumentError, match="one context row per sample"):
        loaded.signatures["sample"](n=tf.constant(N + 1), seed=tf.constant(SEED),
                                    temperature=tf.constant(TEMPERATURE), context=tf.constant(c))


def test_the_onnx_server_serves_the_conditional_model_with_its_base(glow, exported):
    from starlette.testclient import TestClient

    out, _ = exported
    c = _context(N, seed=1)
    with TestClient(create_app(out)) as http:
        client = Client("http://testserver", model="digits")
        client.transport._http = http  # the in-process app behind the REST transport
        x, z = client.sample(N, seed=SEED, temperature=TEMPERATURE, return_z=True, context=c)
        assert relative_error(x, glow.sample(N, TEMPERATURE, SEED, context=c)) <= TOL
        # The context changes the samples; the same seed and context give the same ones.
        assert relative_error(client.sample(N, seed=SEED, temperature=TEMPERATURE, context=c[::-1]), x) > 1e-3
        assert np.array_equal(client.sample(N, seed=SEED, temperature=TEMPERATURE, context=c), x)
        z_tf, log_det_tf = glow.forward(x, c)
        z_got, log_det = client.forward(x, context=c)
        assert relative_error(z_got, z_tf) <= TOL and relative_error(log_det, log_det_tf) <= TOL
        assert relative_error(z_got, z) <= TOL
        x_back, inv_log_det = client.inverse_and_log_det(z_tf, context=c)
        x_tf, inv_log_det_tf = glow.inverse_and_log_det(z_tf, c)
        assert relative_error(x_back, x_tf) <= TOL and relative_error(inv_log_det, inv_log_det_tf) <= TOL
        assert relative_error(client.log_prob(x, context=c), glow.log_prob(x, c)) <= TOL
        sigs = client.signatures()
        assert sigs["sample"]["inputs"]["context"] == ("DT_FLOAT", [-1, 10])
        assert sigs["forward"]["inputs"] == {"x": ("DT_FLOAT", [-1, 8, 8, 1]), "context": ("DT_FLOAT", [-1, 10])}
        # Bad context: missing, wrong shape, wrong count for sample.
        for body, message in [
            ({"signature_name": "forward", "inputs": {"x": x.tolist()}}, "missing ['context']"),
            ({"signature_name": "forward", "inputs": {"x": x.tolist(), "context": c[:, :9].tolist()}},
             "must have shape [-1, 10]"),
            ({"signature_name": "sample", "inputs": {"n": N + 1, "seed": 0, "temperature": 1.0,
                                                     "context": c.tolist()}}, "one row per sample"),
        ]:
            response = http.post("/v1/models/digits:predict", content=json.dumps(body))
            assert response.status_code == 400 and message in response.json()["error"], response.text


def test_query_passes_one_context_for_every_sample(glow, exported, tmp_path, capsys, monkeypatch):
    from starlette.testclient import TestClient

    import tfinv.serving.rest_transport as rest

    out, _ = exported
    app = create_app(out)
    original = rest.RestTransport.__init__

    def in_process(self, url, model, version=None, timeout=30.0):
        original(self, url, model, version, timeout)
        self._http = TestClient(app)

    monkeypatch.setattr(rest.RestTransport, "__init__", in_process)
    png = tmp_path / "grid.png"
    label = [0.0] * 10
    label[7] = 1.0
    assert cli.main(["query", "--model", "digits", "sample", "--n", "4", "--seed", "2", "--context",
                     json.dumps(label), "--out", str(png)]) == 0
    assert png.is_file()
    assert cli.main(["query", "--model", "digits", "sample", "--context", "[1, 2]", "--out", str(png)]) == 2
    assert "--context must have shape [10] or [64, 10]" in capsys.readouterr().err
