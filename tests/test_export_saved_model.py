"""tfinv.export.saved_model: TF Serving layout, the five signatures, loading without tfinv/TFP/Keras
in a fresh process, session-style runs (through `saved_model_cli` once, in-process for every
signature), atomic writes, and bad input."""

import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfinv.export.saved_model as saved_model_module
from tfinv import layers
from tfinv.blocks import InvertibleSequential
from tfinv.core.flow_model import FlowModel
from tfinv.export.saved_model import SIGNATURES, to_saved_model
from tfinv.models import Glow
from tfinv.testing.contract import perturb_weights, relative_error

TOL = 1e-5
N, SEED, TEMPERATURE = 3, 5, 0.7
SHAPE = (8, 8, 1)


def _glow(seed=0):
    model = Glow(SHAPE, levels=2, steps_per_level=1, hidden_channels=8, num_levels=17, seed=seed)
    perturb_weights(model, 0.05, seed=seed)  # not at identity / initial values
    return model


def _counts(n, seed=0):
    return np.random.default_rng(seed).uniform(0.2, 16.8, (n,) + SHAPE).astype(np.float32)


def _run(args, cwd, timeout=120):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("PYTHONPATH", None)
    out = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert out.returncode == 0, f"{args[:4]} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return out.stdout


def _saved_model_cli(*args, cwd):
    # The module form works in any venv that has TensorFlow (the console script may not be on PATH).
    return _run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", *args], cwd=cwd)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export of a small perturbed Glow, the inputs used against it, and the expected values."""
    base = tmp_path_factory.mktemp("serving")
    model = _glow()
    path = to_saved_model(model, base, "glow", version=3)
    x = _counts(2)
    z_in = (0.7 * np.random.default_rng(1).standard_normal((2,) + model.latent_shape)).astype(np.float32)
    z, log_det = model.forward(x)
    x_inv, log_det_inv = model.inverse_and_log_det(z_in)
    x_sample = model.sample(N, TEMPERATURE, SEED)
    z_sample = TEMPERATURE * tf.random.stateless_normal((N,) + model.latent_shape, seed=[SEED, 0])
    expected = {
        "forward": {"z": z.numpy(), "log_det": log_det.numpy()},
        "inverse": {"x": x_inv.numpy(), "log_det": log_det_inv.numpy()},
        "sample": {"x": x_sample.numpy(), "z": z_sample.numpy()},
        "log_prob": {"log_prob": model.log_prob(x).numpy()},
    }
    expected["serving_default"] = expected["log_prob"]
    for outputs in expected.values():
        for value in outputs.values():
            assert np.all(np.isfinite(value))
    return dict(model=model, base=base, path=path, x=x, z=z_in, expected=expected)


def _assert_matches(got: dict, expected: dict, where: str):
    assert sorted(got) == sorted(expected), f"{where}: outputs {sorted(got)} != {sorted(expected)}"
    for key, value in expected.items():
        actual = np.asarray(got[key], np.float64).reshape(np.shape(got[key]))
        err = relative_error(actual, value)
        assert err <= TOL, f"{where}: output {key} differs from the model by {err:.2e}"


# ----------------------------------------------------------------------------- layout
def test_tf_serving_layout_and_nothing_else(exported):
    path, base = exported["path"], exported["base"]
    assert path == base / "glow" / "3"
    assert sorted(p.name for p in (base / "glow").iterdir()) == ["3"], "temporary directories left behind"
    assert sorted(p.name for p in base.iterdir()) == ["glow"]
    assert (path / "saved_model.pb").is_file() and (path / "variables").is_dir()
    # Readable by a server running as another user: permissions follow the umask (no 0700 temp dir).
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o777 & ~umask


# ----------------------------------------------------------------------------- fresh process
_FRESH_PROCESS = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tfinv", "tensorflow_probability"):
                raise ImportError(f"{name} is blocked in this process")
            return None

    sys.meta_path.insert(0, Blocked())
    # TensorFlow probes for Keras while importing; make it look absent rather than raise.
    sys.modules["keras"] = None
    sys.modules["tf_keras"] = None

    import numpy as np
    import tensorflow as tf

    for name in ("tfinv", "tensorflow_probability", "keras"):
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"{name} was importable; the block did not work")

    inputs = np.load(sys.argv[2])
    loaded = tf.saved_model.load(sys.argv[1])
    calls = {
        "forward": dict(x=inputs["x"]),
        "inverse": dict(z=inputs["z"]),
        "log_prob": dict(x=inputs["x"]),
        "serving_default": dict(x=inputs["x"]),
        "sample": dict(n=tf.constant(int(inputs["n"]), tf.int32), seed=tf.constant(int(inputs["seed"]), tf.int32),
                       temperature=tf.constant(float(inputs["temperature"]), tf.float32)),
    }
    result = {"signatures": sorted(loaded.signatures)}
    for key, kwargs in calls.items():
        kwargs = {k: tf.constant(v) for k, v in kwargs.items()}
        result[key] = {k: v.numpy().tolist() for k, v in loaded.signatures[key](**kwargs).items()}
    again = loaded.signatures["sample"](**{k: tf.constant(v) for k, v in calls["sample"].items()})
    result["sample_repeat_equal"] = bool(np.array_equal(again["x"].numpy(), np.asarray(result["sample"]["x"])))
    mods = [m for m in ("tfinv", "tensorflow_probability", "keras", "tf_keras") if sys.modules.get(m) is not None]
    result["imported"] = mods
    print(json.dumps(result))
    """
)


def test_loads_and_runs_in_a_fresh_process_without_tfinv_tfp_or_keras(exported, tmp_path):
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, x=exported["x"], z=exported["z"], n=N, seed=SEED, temperature=TEMPERATURE)
    script = tmp_path / "probe.py"
    script.write_text(_FRESH_PROCESS)
    stdout = _run([sys.executable, str(script), str(exported["path"]), str(inputs)], cwd=tmp_path)
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["signatures"] == sorted(SIGNATURES)
    assert result["imported"] == []
    assert result["sample_repeat_equal"], "sample is not reproducible for a fixed seed"
    for key in SIGNATURES:
        _assert_matches(result[key], exported["expected"][key], f"fresh process, signature {key}")


# ----------------------------------------------------------------------------- saved_model_cli
def _parse_show(text: str) -> dict:
    """``saved_model_cli show --all`` -> {signature: {"inputs"/"outputs": {key: (dtype, shape)}}}."""
    signatures = {}
    blocks = re.split(r"signature_def\['([^']+)'\]:", text.split("Concrete Functions:")[0])
    for key, block in zip(blocks[1::2], blocks[2::2]):
        entry = {"inputs": {}, "outputs": {}, "method": None}
        for kind, name, dtype, shape in re.findall(
            r"(inputs|outputs)\['([^']+)'\] tensor_info:\s+dtype: (\w+)\s+shape: ([^\n]+)", block
        ):
            entry[kind][name] = (dtype, shape.strip())
        method = re.search(r"Method name is: ([^\n]*)", block)
        entry["method"] = method.group(1).strip() if method else None
        signatures[key] = entry
    return signatures


def test_saved_model_cli_show_lists_five_signatures_with_dynamic_batch(exported, tmp_path):
    text = _saved_model_cli("show", "--dir", str(exported["path"]), "--all", cwd=tmp_path)
    shown = _parse_show(text)
    data, latent = "(-1, 8, 8, 1)", "(-1, 64)"
    want = {
        "forward": ({"x": ("DT_FLOAT", data)}, {"z": ("DT_FLOAT", latent), "log_det": ("DT_FLOAT", "(-1)")}),
        "inverse": ({"z": ("DT_FLOAT", latent)}, {"x": ("DT_FLOAT", data), "log_det": ("DT_FLOAT", "(-1)")}),
        "sample": (
            {"n": ("DT_INT32", "()"), "seed": ("DT_INT32", "()"), "temperature": ("DT_FLOAT", "()")},
            {"x": ("DT_FLOAT", data), "z": ("DT_FLOAT", latent)},
        ),
        "log_prob": ({"x": ("DT_FLOAT", data)}, {"log_prob": ("DT_FLOAT", "(-1)")}),
        "serving_default": ({"x": ("DT_FLOAT", data)}, {"log_prob": ("DT_FLOAT", "(-1)")}),
    }
    assert set(want) <= set(shown), f"signatures shown: {sorted(shown)}"
    for key, (inputs, outputs) in want.items():
        assert shown[key]["inputs"] == inputs, (key, shown[key]["inputs"])
        assert shown[key]["outputs"] == outputs, (key, shown[key]["outputs"])
        assert shown[key]["method"] == "tensorflow/serving/predict", (key, shown[key]["method"])


_NUMBER = re.compile(r"[-+]?(?:nan|inf|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)")


def _parse_run(text: str) -> dict:
    """The ``Result for output key K:`` blocks printed by ``saved_model_cli run`` -> flat arrays."""
    parts = re.split(r"Result for output key (\S+):\n", text)
    results = {}
    for key, body in zip(parts[1::2], parts[2::2]):
        body = body.split("\nOutput ")[0]  # lines printed by --outdir
        assert "..." not in body, f"output {key} was summarised by numpy; keep the test arrays small"
        results[key] = np.array([float(v) for v in _NUMBER.findall(body)])
    return results


def test_saved_model_cli_run_matches_the_model(exported, tmp_path):
    """The tool itself, once (``saved_model_cli run`` in its own process, session-style loading as
    TF Serving does): the inverse signature from an ``.npy`` file, printed and written with
    ``--outdir``. Every other signature runs through the same session-style loading in-process
    (`test_session_style_run_matches_the_model`)."""
    np.save(tmp_path / "z.npy", exported["z"])
    args = ["run", "--dir", str(exported["path"]), "--tag_set", "serve", "--signature_def", "inverse",
            "--inputs", f"z={tmp_path / 'z.npy'}", "--outdir", str(tmp_path / "out")]
    printed = _parse_run(_saved_model_cli(*args, cwd=tmp_path))
    expected = exported["expected"]["inverse"]
    got = {}
    for key, value in expected.items():
        assert key in printed, f"inverse: output {key} not printed; got {sorted(printed)}"
        assert printed[key].size == value.size, ("inverse", key, printed[key].size, value.shape)
        got[key] = printed[key].reshape(value.shape)
    _assert_matches(got, expected, "saved_model_cli run inverse")
    # --outdir writes the full-precision arrays too
    _assert_matches({k: np.load(tmp_path / "out" / f"{k}.npy") for k in expected}, expected, "--outdir")


@pytest.fixture(scope="module")
def session_outputs(exported):
    """What ``saved_model_cli run`` (and TF Serving) do, for every signature: the ``serve`` tag
    set loaded once into a TF1 session of a fresh graph, each signature run by the tensor names in
    its SignatureDef."""
    feeds = {"forward": {"x": exported["x"]}, "inverse": {"z": exported["z"]},
             "sample": {"n": np.int32(N), "seed": np.int32(SEED), "temperature": np.float32(TEMPERATURE)},
             "log_prob": {"x": exported["x"]}, "serving_default": {"x": exported["x"]}}
    outputs = {}
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(exported["path"]))
        for name, feed in feeds.items():
            sig = meta_graph.signature_def[name]
            assert sorted(sig.inputs) == sorted(feed), (name, sorted(sig.inputs))
            fetches = {key: info.name for key, info in sig.outputs.items()}
            outputs[name] = session.run(fetches, feed_dict={sig.inputs[k].name: v for k, v in feed.items()})
    return outputs


@pytest.mark.parametrize("signature", ["forward", "inverse", "sample", "log_prob", "serving_default"])
def test_session_style_run_matches_the_model(session_outputs, exported, signature):
    _assert_matches(session_outputs[signature], exported["expected"][signature], f"session-style run {signature}")


# ----------------------------------------------------------------------------- max_batch and run-time checks
def test_max_batch_and_sample_arguments_are_checked_at_run_time(tmp_path):
    model = _glow(seed=2)
    path = to_saved_model(model, tmp_path, "glow", max_batch=2)
    loaded = tf.saved_model.load(str(path))
    assert loaded.signatures["forward"].structured_input_signature[1]["x"].shape.as_list() == [None, *SHAPE]
    x = _counts(2, seed=3)
    z, log_det = model.forward(x)
    got = loaded.signatures["forward"](x=tf.constant(x))
    _assert_matches(got, {"z": z.numpy(), "log_det": log_det.numpy()}, "max_batch forward")
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_batch=2"):
        loaded.signatures["log_prob"](x=tf.constant(_counts(3)))

    def sample(n, seed=1, temperature=1.0):
        return loaded.signatures["sample"](
            n=tf.constant(n), seed=tf.constant(seed), temperature=tf.constant(temperature)
        )

    assert sample(2)["x"].shape == (2, *SHAPE)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_batch=2"):
        sample(3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="n >= 1"):
        sample(0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="temperature > 0"):
        sample(1, temperature=0.0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="temperature > 0"):
        sample(1, temperature=-1.0)
    # 1e39 sent as JSON reaches the signature as float32 inf; NaN fails every comparison.
    for bad in (float("inf"), float("nan"), float("-inf")):
        with pytest.raises(tf.errors.InvalidArgumentError, match="finite temperature"):
            sample(1, temperature=bad)
    with pytest.raises(tf.errors.InvalidArgumentError, match="overflows float32"):
        sample(2, temperature=3e38)


# ----------------------------------------------------------------------------- atomic writes
def test_existing_version_is_refused_and_left_untouched(tmp_path):
    version_dir = tmp_path / "glow" / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "marker").write_text("old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        to_saved_model(_glow(), tmp_path, "glow", version=1)
    assert sorted(p.name for p in (tmp_path / "glow").iterdir()) == ["1"]
    assert sorted(p.name for p in version_dir.iterdir()) == ["marker"]


def test_overwrite_replaces_the_version(tmp_path):
    version_dir = tmp_path / "glow" / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "marker").write_text("old")
    model = _glow(seed=4)
    assert to_saved_model(model, tmp_path, "glow", version=1, overwrite=True) == version_dir
    assert sorted(p.name for p in (tmp_path / "glow").iterdir()) == ["1"]
    assert not (version_dir / "marker").exists()
    x = _counts(2, seed=5)
    got = tf.saved_model.load(str(version_dir)).signatures["log_prob"](x=tf.constant(x))
    _assert_matches(got, {"log_prob": model.log_prob(x).numpy()}, "overwritten export")


@pytest.mark.parametrize("existing", [False, True])
def test_failed_export_leaves_nothing_behind(tmp_path, monkeypatch, existing):
    def broken(model, directory, max_batch):
        (directory / "saved_model.pb").write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(saved_model_module, "write_archive", broken)
    if existing:
        (tmp_path / "glow" / "1").mkdir(parents=True)
        (tmp_path / "glow" / "1" / "marker").write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        to_saved_model(_glow(), tmp_path, "glow", version=1, overwrite=existing)
    if not existing:  # nothing at all is written, not even the model folder
        assert sorted(p.name for p in tmp_path.iterdir()) == []
        return
    left = sorted(p.name for p in (tmp_path / "glow").iterdir())
    assert left == ["1"], left
    if existing:
        assert sorted(p.name for p in (tmp_path / "glow" / "1").iterdir()) == ["marker"]


# ----------------------------------------------------------------------------- bad arguments
class _UnbuiltFlow(FlowModel):
    """A FlowModel whose layers are never built (FlowModel builds itself in ``__init__``; this
    subclass skips it and resets Keras's ``built`` flag)."""

    def __init__(self):
        super().__init__(InvertibleSequential([layers.ActNorm()], event_ndims=3), input_shape=(4, 4, 1),
                         name="unbuilt_flow")
        self.built = False

    def build(self, input_shape=None):
        pass


def _dense():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])


@pytest.fixture(scope="module")
def small_glow():
    return _glow()


@pytest.mark.parametrize(
    "make_model, kwargs, error, match",
    [
        (_dense, {}, TypeError, "FlowModel"),
        (lambda: "glow.keras", {}, TypeError, "FlowModel"),
        (_UnbuiltFlow, {}, ValueError, "not built"),
        (None, {"version": 0}, ValueError, "positive int"),
        (None, {"version": -2}, ValueError, "positive int"),
        (None, {"version": "1"}, TypeError, "positive int"),
        (None, {"version": 1.0}, TypeError, "positive int"),
        (None, {"version": True}, TypeError, "positive int"),
        (None, {"name": ""}, ValueError, "name"),
        (None, {"name": "a/b"}, ValueError, "name"),
        (None, {"name": ".."}, ValueError, "name"),
        (None, {"max_batch": 0}, ValueError, "max_batch"),
        (None, {"max_batch": 2.5}, TypeError, "max_batch"),
    ],
)
def test_bad_arguments_raise_before_anything_is_written(tmp_path, small_glow, make_model, kwargs, error, match):
    model = small_glow if make_model is None else make_model()
    base = tmp_path / "serving"
    kwargs = {"name": "glow", **kwargs}
    with pytest.raises(error, match=match):
        to_saved_model(model, base, **kwargs)
    assert not base.exists(), "something was written before the argument check"
