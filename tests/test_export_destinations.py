"""`tfinv export` / `export_flow`: names, versions and destinations are checked before any work,
nothing is written unless every part succeeded, files get the umask's permissions, and the ONNX
graphs and the manifest follow the deployment contract (`tfinv.export.signatures`)."""

import json
import os
import stat

import numpy as np
import onnx
import pytest
import tensorflow as tf

import tfinv.export.bundle as bundle_module
from tfinv import cli
from tfinv.export import inference_session
from tfinv.export.signatures import SIGNATURE_NAMES, signatures
from tfinv.models import Glow
from tfinv.testing.contract import perturb_weights


@pytest.fixture(scope="module")
def glow():
    model = Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=8, num_levels=17, name="digits")
    model.initialize(tf.random.stateless_uniform((16, 8, 8, 1), [1, 2], 0.5, 16.5))
    perturb_weights(model, 0.05)
    return model


@pytest.fixture(scope="module")
def model_file(glow, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.keras"
    glow.save(path)
    return path


def _tree(root):
    """Every path under ``root`` (relative), to compare before/after a refused export."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield 0o022
    os.umask(old)


def test_export_follows_the_contract_and_the_umask(glow, model_file, tmp_path, capsys, umask_022):
    out = tmp_path / "export"
    assert cli.main(["export", "--model", str(model_file), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["forward.onnx", "inverse.onnx", "manifest.json", "saved_model"]
    assert [p.name for p in (out / "saved_model" / "digits").iterdir()] == ["1"]
    # Permissions the umask gives (0644 files, 0755 folders), not mkstemp's 0600 / mkdtemp's 0700.
    for path in out.rglob("*"):
        expected = 0o755 if path.is_dir() else 0o644
        assert stat.S_IMODE(path.stat().st_mode) == expected, (path, oct(path.stat().st_mode))
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    # The contract: graph inputs and outputs (data output first), manifest signatures.
    manifest = json.loads((out / "manifest.json").read_text())
    contract = signatures((8, 8, 1), (64,))
    assert manifest["signatures"] == {k: s.as_dict() for k, s in contract.items()}
    assert list(manifest["signatures"]) == list(SIGNATURE_NAMES) and manifest["format"] == 1
    z = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    for direction, value in (("inverse", z), ("forward", glow.inverse(z).numpy())):
        proto = onnx.load(out / f"{direction}.onnx")
        sig = contract[direction]
        assert [o.name for o in proto.graph.output] == list(sig.output_names)  # x/z first, then log_det
        assert [i.name for i in proto.graph.input] == list(sig.input_names)
        session, _ = inference_session(str(out / f"{direction}.onnx"))
        assert [o.name for o in session.get_outputs()] == list(sig.output_names)
        first = session.run(None, {sig.input_names[0]: value})[0]
        assert first.shape == (2, *sig.outputs[0].shape[1:])
    # The SavedModel's signatures are the contract's, name for name and in order.
    loaded = tf.saved_model.load(str(out / "saved_model" / "digits" / "1"))
    assert sorted(loaded.signatures) == sorted(SIGNATURE_NAMES)
    for key, sig in contract.items():
        fn = loaded.signatures[key]
        assert sorted(fn.structured_input_signature[1]) == sorted(sig.input_names)
        assert sorted(fn.structured_outputs) == sorted(sig.output_names)
        for spec in sig.inputs:
            tf_spec = fn.structured_input_signature[1][spec.name]
            assert tf_spec.dtype.name == spec.dtype
            assert [-1 if d is None else d for d in tf_spec.shape.as_list()] == list(spec.shape)
    capsys.readouterr()


@pytest.mark.parametrize("case", ["name ../x", "name with slash", "version 0", "version -3", "existing version",
                                  "saved_model is a file", "out below a file", "out is a file",
                                  "graph path is a folder"])
def test_bad_names_versions_and_destinations_are_one_line_errors_and_write_nothing(model_file, tmp_path, capsys,
                                                                                    case):
    out = tmp_path / "export"
    args = ["export", "--model", str(model_file), "--out", str(out)]
    expected = {
        "name ../x": (["--name", "../x"], "model name must be"),
        "name with slash": (["--name", "a/b"], "model name must be"),
        "version 0": (["--version", "0"], "version must be a positive int, got 0"),
        "version -3": (["--version", "-3"], "version must be a positive int, got -3"),
        "existing version": ([], "saved_model/digits/1 already exist"),
        "saved_model is a file": ([], "saved_model is a file where the export needs a directory"),
        "out below a file": ([], "is a file, not a directory"),
        "out is a file": ([], "is a file, not a directory"),
        "graph path is a folder": (["--overwrite"], "forward.onnx is a directory where the export writes a file"),
    }[case]
    if case == "existing version":
        (out / "saved_model" / "digits" / "1").mkdir(parents=True)
    elif case == "saved_model is a file":
        out.mkdir()
        (out / "saved_model").write_text("not a folder")
    elif case == "out below a file":
        (tmp_path / "afile").write_text("x")
        args[args.index(str(out))] = str(tmp_path / "afile" / "sub")
    elif case == "out is a file":
        out.write_text("x")
    elif case == "graph path is a folder":
        (out / "forward.onnx").mkdir(parents=True)
    before = _tree(tmp_path)
    assert cli.main(args + expected[0]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfinv export: error: ") and expected[1] in err, err
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    assert _tree(tmp_path) == before, "a refused export wrote something"


def test_a_failure_after_conversion_writes_nothing_and_keeps_the_old_export(glow, tmp_path, monkeypatch):
    out = tmp_path / "export"
    out.mkdir()
    for name in ("forward.onnx", "inverse.onnx", "manifest.json"):  # a previous export
        (out / name).write_bytes(f"previous {name}".encode())
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    # One real conversion stands in for the export's own (the failure comes after it).
    converted = {d: bundle_module.prepare(glow, d) for d in ("forward", "inverse")}
    monkeypatch.setattr(bundle_module, "prepare", lambda model, direction, **kwargs: converted[direction])

    def broken(model, directory, max_batch=None):
        (directory / "saved_model.pb").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("tfinv.export.saved_model.write_archive", broken)
    with pytest.raises(OSError, match="disk full"):
        bundle_module.export_flow(glow, out, name="digits", overwrite=True, saved_model=True, version=2)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old, "the previous export changed"
    # Into a new folder: nothing at all (no folder, no staging leftovers).
    with pytest.raises(OSError, match="disk full"):
        bundle_module.export_flow(glow, tmp_path / "fresh" / "export", name="digits", saved_model=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
