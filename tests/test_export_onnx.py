"""ONNX export: files, manifest, standard-only graphs, parity, and clear errors with nothing written."""

import json

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf

from tfinv import layers
from tfinv.export import ExportError, export_flow, inference_session, to_onnx
from tfinv.models import Glow
from tfinv.testing.contract import perturb_weights, relative_error


@pytest.fixture(scope="module")
def glow():
    model = Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=8, num_levels=17)
    model.initialize(tf.random.stateless_uniform((16, 8, 8, 1), [1, 2], 0.5, 16.5))
    perturb_weights(model, 0.05)
    return model


def test_export_flow_writes_graphs_and_manifest_that_run_in_onnxruntime(glow, tmp_path):
    manifest = export_flow(glow, tmp_path, name="digits")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forward.onnx", "inverse.onnx", "manifest.json"]
    assert json.loads((tmp_path / "manifest.json").read_text()) == json.loads(json.dumps(manifest))
    assert manifest["name"] == "digits" and manifest["opset"] == 17
    assert manifest["latent_shape"] == [64]
    for direction in ("forward", "inverse"):
        proto = onnx.load(tmp_path / f"{direction}.onnx")
        onnx.checker.check_model(proto, full_check=True)
        assert {n.domain for n in proto.graph.node} <= {""}
        # Parameter-only inverses were folded: no solver or inverse op reached the graph.
        assert not {n.op_type for n in proto.graph.node} & {"Inverse", "MatrixInverse", "Einsum"}
        assert manifest["graphs"][direction]["max_relative_error"] <= 1e-4
        assert manifest["graphs"][direction]["provider"] in ("CPUExecutionProvider", "CUDAExecutionProvider")
    # Sampling through ONNX: the noise is an input; batch is dynamic.
    z = np.random.default_rng(3).standard_normal((5, 64)).astype(np.float32) * 0.7
    session, _ = inference_session(str(tmp_path / "inverse.onnx"))
    x_onnx, log_det = (dict(zip([o.name for o in session.get_outputs()], session.run(None, {"z": z})))[k]
                       for k in ("x", "log_det"))
    x_tf, log_det_tf = glow.inverse_and_log_det(z)
    assert relative_error(x_onnx, x_tf) <= 1e-4 and relative_error(log_det, log_det_tf) <= 1e-4
    forward, _ = inference_session(str(tmp_path / "forward.onnx"))
    z_back = forward.run(["z"], {"x": x_onnx})[0]
    assert relative_error(z_back, z) <= 1e-4


def test_opset_18_and_single_direction(glow, tmp_path):
    info = to_onnx(glow, tmp_path / "inv.onnx", "inverse", opset=18)
    assert info.opset == 18 and onnx.load(tmp_path / "inv.onnx").opset_import[0].version == 18


def test_existing_path_is_refused_unless_overwrite(glow, tmp_path):
    path = tmp_path / "f.onnx"
    path.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        to_onnx(glow, path)
    assert path.read_bytes() == b"keep me"
    to_onnx(glow, path, overwrite=True)
    onnx.checker.check_model(onnx.load(path))
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(FileExistsError):
        export_flow(glow, tmp_path)


@pytest.mark.parametrize("kwargs, message", [
    ({"direction": "sideways"}, "direction must be one of"),
    ({"opset": 19}, "opset 19 is not supported: tf2onnx 1.17 converts opsets <= 18"),
    ({"opset": 13}, "opset 13 is not supported"),
])
def test_bad_arguments(glow, tmp_path, kwargs, message):
    with pytest.raises(ExportError, match=message):
        to_onnx(glow, tmp_path / "m.onnx", **kwargs)
    assert not list(tmp_path.iterdir())


def test_unbuilt_and_foreign_subjects(tmp_path):
    with pytest.raises(ExportError, match="ActNorm '.*' is not built"):
        to_onnx(layers.ActNorm(), tmp_path / "a.onnx")
    with pytest.raises(ExportError, match="exports a tfinv InvertibleLayer or FlowModel, got Dense"):
        to_onnx(keras.layers.Dense(3), tmp_path / "a.onnx")
    assert not list(tmp_path.iterdir())


@keras.saving.register_keras_serializable(package="tfinv_tests")
class Log1pConditioner(keras.layers.Layer):
    """A user conditioner with an op (Log1p) tf2onnx cannot convert."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels

    def build(self, shape):
        self.kernel = self.add_weight(shape=(int(shape[-1]), self.channels), initializer="ones")

    def call(self, x):
        return tf.math.log1p(tf.abs(tf.tensordot(x, self.kernel, 1)))

    def compute_output_shape(self, shape):
        return tuple(shape[:-1]) + (self.channels,)


def test_unconvertible_custom_layer_names_layer_and_op_and_writes_nothing(tmp_path):
    flow = layers.AffineCoupling(conditioner=Log1pConditioner(4), name="my_coupling")
    flow.build((None, 4, 4, 4))
    with pytest.raises(ExportError, match=r"layer 'my_coupling[^']*' op ai.onnx:Log1p"):
        to_onnx(flow, tmp_path / "c.onnx")
    assert not list(tmp_path.iterdir())


def test_parity_failure_is_an_error(glow, tmp_path, monkeypatch):
    """A real mismatch: the graph is frozen from weights 1e-3 away from the model's (converted with
    perturbed weights, which are then put back), so onnxruntime and TF differ; nothing is written."""
    import tfinv.export.onnx as onnx_export

    real_convert = onnx_export.convert

    def convert_other_weights(subject, *args, **kwargs):
        weights = subject.get_weights()
        perturb_weights(subject, 1e-3, seed=99)
        try:
            return real_convert(subject, *args, **kwargs)
        finally:
            subject.set_weights(weights)

    monkeypatch.setattr(onnx_export, "convert", convert_other_weights)
    x = np.asarray(glow.sample(2, seed=1), np.float32)
    with pytest.raises(ExportError, match="above the tolerance 0.0001"):
        to_onnx(glow, tmp_path / "f.onnx", test_input=x)
    assert not list(tmp_path.iterdir())
