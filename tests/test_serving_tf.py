"""TF Serving: the generated config and the Client's REST and gRPC transports, proven the way TF
Serving consumes them (the ``tensorflow_model_server`` binary and Docker are not available here).

* ``models.config`` / ``batching_parameters.txt`` parse with TF Serving's own protos
  (``ModelServerConfig`` from ``tensorflow-serving-api``; ``BatchingParameters`` is not shipped
  there, so its upstream definition is rebuilt below); the compose file and ``docker-run.sh``
  publish 8501/8500 and mount the SavedModel base and the config so that every container path the
  server reads resolves to the right host file.
* REST: the exact request bodies the Client sends are decoded as TF Serving does (JSON ->
  signature dtypes) and run through the SavedModel in a process where tfinv, TFP and Keras cannot
  be imported, and through ``saved_model_cli run --input_exprs`` (session-style loading, as TF
  Serving).
* gRPC: the Client drives `fake_tf_serving.serve_grpc` (TF Serving's gRPC services on the
  SavedModel) end to end, including the error mapping.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import pickle
import queue
import re
import socket
import subprocess
import sys
import threading

import httpx
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2

import fake_tf_serving
import tfinv
from test_export_saved_model import TOL, _assert_matches, _counts, _glow, _parse_run
from tfinv import cli
from tfinv.serving import Client, ServingError
from tfinv.serving.client import GrpcServingError
from tfinv.serving.tf_serving import DEFAULT_IMAGE, write_serving_config

NAME = "digits"
N, SEED, TEMPERATURE = 3, 5, 0.7
FAKE = pathlib.Path(fake_tf_serving.__file__)


def _env() -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`tfinv export` of a small perturbed Glow (``.keras`` -> ONNX + SavedModel), the loaded model,
    the inputs used against it and the expected outputs."""
    root = tmp_path_factory.mktemp("tf_serving")
    _glow().save(root / "model.keras")
    export_dir = root / "export"
    assert cli.main(["export", "--model", str(root / "model.keras"), "--out", str(export_dir), "--name", NAME]) == 0
    model = tfinv.load_model(root / "model.keras")  # exactly what was exported
    x = _counts(2)
    z = (0.7 * np.random.default_rng(1).standard_normal((2,) + tuple(model.latent_shape))).astype(np.float32)
    z_of_x, log_det = model.forward(x)
    x_of_z, log_det_inv = model.inverse_and_log_det(z)
    expected = {
        "forward": {"z": z_of_x.numpy(), "log_det": log_det.numpy()},
        "inverse": {"x": x_of_z.numpy(), "log_det": log_det_inv.numpy()},
        "sample": {"x": model.sample(N, TEMPERATURE, SEED).numpy(),
                   "z": (TEMPERATURE * tf.random.stateless_normal((N,) + tuple(model.latent_shape),
                                                                  seed=[SEED, 0])).numpy()},
        "log_prob": {"log_prob": model.log_prob(x).numpy()},
    }
    return dict(dir=export_dir, base=export_dir / "saved_model", version_dir=export_dir / "saved_model" / NAME / "1",
                model=model, x=x, z=z, expected=expected)


def _fake_base(tmp_path, versions=(1, 2, 3)) -> pathlib.Path:
    """A SavedModel base with empty version directories (enough for the config writer)."""
    base = tmp_path / "saved_model"
    for v in versions:
        (base / NAME / str(v)).mkdir(parents=True)
        (base / NAME / str(v) / "saved_model.pb").write_bytes(b"")
    return base


# ----------------------------------------------------------------------------- TF Serving's protos
def _batching_parameters_class():
    """``tensorflow.serving.BatchingParameters``: TF Serving's own module if installed, otherwise
    the message rebuilt from its upstream definition (tensorflow_serving/servables/tensorflow/
    session_bundle_config.proto: fields 1-7, same numbers, types and names) in a private pool."""
    with contextlib.suppress(ImportError):
        from tensorflow_serving.servables.tensorflow.session_bundle_config_pb2 import BatchingParameters

        return BatchingParameters
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.AddSerializedFile(wrappers.SerializeToString())
    fd = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto", package="tensorflow.serving",
        syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
    message = fd.message_type.add(name="BatchingParameters")
    field = descriptor_pb2.FieldDescriptorProto
    for number, name, label, kind, type_name in [
        (1, "max_batch_size", field.LABEL_OPTIONAL, field.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
        (2, "batch_timeout_micros", field.LABEL_OPTIONAL, field.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
        (3, "max_enqueued_batches", field.LABEL_OPTIONAL, field.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
        (4, "num_batch_threads", field.LABEL_OPTIONAL, field.TYPE_MESSAGE, ".google.protobuf.Int64Value"),
        (5, "thread_pool_name", field.LABEL_OPTIONAL, field.TYPE_MESSAGE, ".google.protobuf.StringValue"),
        (6, "allowed_batch_sizes", field.LABEL_REPEATED, field.TYPE_INT64, None),
        (7, "pad_variable_length_inputs", field.LABEL_OPTIONAL, field.TYPE_BOOL, None),
    ]:
        entry = message.field.add(name=name, number=number, label=label, type=kind, json_name=name)
        if type_name:
            entry.type_name = type_name
    pool.AddSerializedFile(fd.SerializeToString())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


@pytest.mark.parametrize("policy, which", [("latest", ("latest", None)), ("all", ("all", None)),
                                           ([3, 1], ("specific", [1, 3]))])
def test_models_config_parses_as_tf_serving_model_server_config(tmp_path, policy, which):
    base = _fake_base(tmp_path)
    paths = write_serving_config(base, tmp_path / "serving", NAME, version_policy=policy)
    config = text_format.Parse(paths["models_config"].read_text(), model_server_config_pb2.ModelServerConfig())
    assert config.WhichOneof("config") == "model_config_list"
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == (NAME, f"/models/{NAME}", "tensorflow")
    kind, versions = which
    assert model.model_version_policy.WhichOneof("policy_choice") == kind
    if kind == "latest":
        assert model.model_version_policy.latest.num_versions == 1
    if versions:
        assert list(model.model_version_policy.specific.versions) == versions


def test_batching_parameters_parse_as_tf_serving_batching_parameters(tmp_path):
    paths = write_serving_config(_fake_base(tmp_path), tmp_path / "serving", NAME, max_batch_size=32,
                                 batch_timeout_micros=500, num_batch_threads=3, max_enqueued_batches=7)
    params = text_format.Parse(paths["batching_parameters"].read_text(), _batching_parameters_class()())
    assert params.max_batch_size.value == 32 and params.batch_timeout_micros.value == 500
    assert params.num_batch_threads.value == 3 and params.max_enqueued_batches.value == 7
    assert not params.allowed_batch_sizes


# ----------------------------------------------------------------------------- compose file and docker run
def _compose(text: str) -> dict:
    """The generated compose file -> ``{"image", "ports", "volumes", "command"}`` (PyYAML when
    installed; otherwise read from the fixed layout, every scalar a JSON string)."""
    with contextlib.suppress(ImportError):
        import yaml

        (service,) = yaml.safe_load(text)["services"].values()
        return {"image": service["image"], "ports": service["ports"], "command": service["command"],
                "volumes": [(v["source"], v["target"], v["read_only"]) for v in service["volumes"]]}
    assert re.match(r"(#[^\n]*\n)*services:\n  [a-z0-9_-]+:\n    image: ", text), text

    def items(key):
        block = re.search(rf"\n    {key}:\n((?:      [^\n]*\n)+)", text).group(1)
        return [json.loads(line.strip()[2:]) for line in block.splitlines()]

    volumes = re.findall(r'      - type: bind\n        source: ("[^\n]*")\n        target: ("[^\n]*")\n'
                         r"        read_only: (true|false)\n", text)
    return {"image": json.loads(re.search(r"\n    image: (\"[^\n]*\")\n", text).group(1)),
            "ports": items("ports"), "command": items("command"),
            "volumes": [(json.loads(s), json.loads(t), r == "true") for s, t, r in volumes]}


def _host_path(container_path: str, mounts: list[tuple[pathlib.Path, str]]) -> pathlib.Path:
    """Where a container path lands on the host through bind mounts ``(host_dir, target)``."""
    for host, target in mounts:
        if container_path == target or container_path.startswith(target + "/"):
            return host / container_path[len(target):].lstrip("/")
    raise AssertionError(f"{container_path} is not under any mount {mounts}")


def _check_server_files(args: list[str], mounts: list[tuple[pathlib.Path, str]], base: pathlib.Path, batching: bool):
    """Every file the server reads (per its arguments and models.config) exists at the host path
    the mounts map it to."""
    flags = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
    config_file = _host_path(flags["model_config_file"], mounts)
    assert config_file.is_file(), config_file
    config = text_format.Parse(config_file.read_text(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert _host_path(model.base_path, mounts).resolve() == (base / NAME).resolve()
    assert ("--enable_batching" in args) == batching
    if batching:
        params = _host_path(flags["batching_parameters_file"], mounts)
        text_format.Parse(params.read_text(), _batching_parameters_class()())
    else:
        assert "batching_parameters_file" not in flags


@pytest.mark.parametrize("batching", [False, True])
def test_compose_file_publishes_the_ports_and_mounts_what_the_server_reads(tmp_path, batching):
    base = _fake_base(tmp_path)
    out = tmp_path / "serving"
    paths = write_serving_config(base, out, NAME, rest_port=18501, grpc_port=18500, enable_batching=batching)
    compose = _compose(paths["docker_compose"].read_text())
    assert compose["image"] == DEFAULT_IMAGE == "tensorflow/serving:2.21.0"
    # The image's entrypoint serves gRPC on 8500 and REST on 8501 inside the container.
    assert compose["ports"] == ["127.0.0.1:18501:8501", "127.0.0.1:18500:8500"]
    mounts = [((out / source).resolve(), target) for source, target, _ in compose["volumes"]]
    assert all(read_only for *_, read_only in compose["volumes"])
    assert [t for _, t in mounts] == ["/models", "/config"]
    assert not os.path.isabs(compose["volumes"][0][0]), "paths are relative to the compose file (relocatable)"
    _check_server_files(compose["command"], mounts, base, batching)


def test_docker_run_script_runs_the_same_server(tmp_path):
    base = _fake_base(tmp_path)
    out = tmp_path / "serving"
    paths = write_serving_config(base, out, NAME, enable_batching=True, bind_address=None)
    script = paths["docker_run"]
    assert os.access(script, os.X_OK)
    subprocess.run(["sh", "-n", str(script)], check=True)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "docker").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$DOCKER_ARGS"\n')
    (fake_bin / "docker").chmod(0o755)
    record = tmp_path / "args.txt"
    env = dict(os.environ, PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}", DOCKER_ARGS=str(record))
    # Run from elsewhere: the script finds its files relative to itself.
    subprocess.run([str(script), "--rest_api_timeout_in_ms=5000"], check=True, env=env, cwd=tmp_path.parent)
    args = record.read_text().splitlines()
    assert args[:2] == ["run", "--rm"]
    image_at = args.index(DEFAULT_IMAGE)
    options, server_args = args[:image_at], args[image_at + 1:]
    assert [options[i + 1] for i, a in enumerate(options) if a == "-p"] == ["8501:8501", "8500:8500"]
    volumes = [options[i + 1].rsplit(":", 2) for i, a in enumerate(options) if a == "-v"]
    assert all(mode == "ro" for *_, mode in volumes)
    mounts = [(pathlib.Path(host), target) for host, target, _ in volumes]
    assert all(host.is_absolute() for host, _ in mounts)
    _check_server_files(server_args, mounts, base, batching=True)
    assert server_args[-1] == "--rest_api_timeout_in_ms=5000"
    assert "docker run --rm" in paths["readme"].read_text()


# ----------------------------------------------------------------------------- writing and arguments
def test_existing_files_are_refused_then_replaced_with_overwrite(tmp_path):
    base = _fake_base(tmp_path)
    out = tmp_path / "serving"
    out.mkdir()
    (out / "models.config").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_serving_config(base, out, NAME)
    assert sorted(p.name for p in out.iterdir()) == ["models.config"]
    assert (out / "models.config").read_text() == "mine"
    paths = write_serving_config(base, out, NAME, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths.values()), "temporary files left"
    assert "model_config_list" in (out / "models.config").read_text()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"name": "a/b"}, ValueError, "model name"),
    ({"name": "di:gits"}, ValueError, "model name"),
    ({"name": "other"}, FileNotFoundError, "does not exist"),
    ({"rest_port": 0}, ValueError, "rest_port"),
    ({"grpc_port": 70000}, ValueError, "grpc_port"),
    ({"grpc_port": 8501}, ValueError, "differ"),
    ({"rest_port": "8501"}, TypeError, "rest_port"),
    ({"max_batch_size": 0}, ValueError, "max_batch_size"),
    ({"num_batch_threads": True}, TypeError, "num_batch_threads"),
    ({"batch_timeout_micros": -1}, ValueError, "batch_timeout_micros"),
    ({"version_policy": "newest"}, ValueError, "version_policy"),
    ({"version_policy": []}, TypeError, "version_policy"),
    ({"version_policy": [4]}, FileNotFoundError, "not exported"),
    ({"version_policy": [0]}, ValueError, "version"),
    ({"container_base": "models"}, ValueError, "container_base"),
    ({"container_base": "/config"}, ValueError, "container_base"),
    ({"bind_address": "localhost:1"}, ValueError, "bind_address"),
    ({"image": "tensorflow/serving 2"}, ValueError, "image"),
])
def test_bad_arguments_write_nothing(tmp_path, kwargs, error, match):
    base = _fake_base(tmp_path)
    kwargs = {"name": NAME, **kwargs}
    with pytest.raises(error, match=match):
        write_serving_config(base, tmp_path / "serving", **kwargs)
    assert not (tmp_path / "serving").exists()


def test_a_model_without_versions_is_refused(tmp_path):
    (tmp_path / "saved_model" / NAME / "1").mkdir(parents=True)  # no saved_model.pb
    with pytest.raises(FileNotFoundError, match="no version directory"):
        write_serving_config(tmp_path / "saved_model", tmp_path / "serving", NAME)


# ----------------------------------------------------------------------------- `tfinv serve-config`
def test_serve_config_cli_after_export(exported, tmp_path, capsys):
    export_dir = exported["dir"]
    assert cli.main(["serve-config", "--export-dir", str(export_dir)]) == 0
    out = export_dir / "serving"
    assert f"wrote {out / 'models.config'}" in capsys.readouterr().out
    config = text_format.Parse((out / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    assert config.model_config_list.config[0].name == NAME
    mounts = [((out / s).resolve(), t) for s, t, _ in _compose((out / "docker-compose.yml").read_text())["volumes"]]
    assert (_host_path(f"/models/{NAME}/1", mounts) / "saved_model.pb").is_file()
    # Again: refused without --overwrite; options go through.
    assert cli.main(["serve-config", "--export-dir", str(export_dir)]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert cli.main(["serve-config", "--export-dir", str(export_dir), "--overwrite", "--version-policy", "all",
                     "--enable-batching", "--rest-port", "9501", "--name", NAME]) == 0
    assert "all {}" in (out / "models.config").read_text()
    compose = _compose((out / "docker-compose.yml").read_text())
    assert "--enable_batching" in compose["command"] and "127.0.0.1:9501:8501" in compose["ports"]
    # User errors: exit code 2 and one line.
    custom = tmp_path / "cfg"
    for args, message in [
        (["--export-dir", str(tmp_path)], "manifest.json not found"),
        (["--export-dir", str(export_dir), "--name", "other", "--out", str(custom)], "differs"),
        (["--export-dir", str(export_dir), "--rest-port", "8500", "--out", str(custom)], "differ"),
        (["--export-dir", str(export_dir), "--version-policy", "7", "--out", str(custom)], "not exported"),
    ]:
        assert cli.main(["serve-config", *args]) == 2, args
        assert message in capsys.readouterr().err, args
    assert not custom.exists()
    assert cli.main(["serve-config", "--export-dir", str(export_dir), "--version-policy", "x,y"]) == 2


def test_serve_config_writes_the_lean_onnx_server_beside_tf_serving(exported, tmp_path):
    """Dockerfile.onnx installs exactly requirements-onnx.txt (the file the lean-install test uses)
    plus tfinv without dependencies, and its compose file mounts the ONNX export at /export."""
    import importlib.resources
    import shlex

    out = tmp_path / "cfg"
    assert cli.main(["serve-config", "--export-dir", str(exported["dir"]), "--out", str(out), "--onnx-port",
                     "18502"]) == 0
    requirements = importlib.resources.files("tfinv.serving").joinpath("requirements-onnx.txt").read_text()
    assert (out / "requirements-onnx.txt").read_text() == requirements
    pins = [line for line in requirements.splitlines() if line and not line.startswith("#")]
    assert sorted(p.split("==")[0] for p in pins) == ["httpx", "numpy", "onnxruntime-gpu", "starlette", "uvicorn"]
    dockerfile = (out / "Dockerfile.onnx").read_text()
    instructions = [line for line in dockerfile.replace("\\\n", " ").splitlines() if line and not line.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    run = next(line for line in instructions if line.startswith("RUN "))
    commands = [shlex.split(c) for c in run[4:].split("&&")]
    assert commands[0] == ["pip", "install", "--no-cache-dir", "-r", "requirements-onnx.txt"]
    assert commands[1] == ["pip", "install", "--no-cache-dir", "--no-deps", "$TFINV"]
    assert f"ARG TFINV=tfinv=={tfinv.__version__}" in instructions
    entry = json.loads(next(line for line in instructions if line.startswith("ENTRYPOINT "))[len("ENTRYPOINT "):])
    assert entry == ["tfinv-serve", "--export-dir", "/export", "--host", "0.0.0.0", "--port", "8501"]
    text = (out / "docker-compose.onnx.yml").read_text()
    # The fixed layout of the generated file (every scalar a JSON string).
    assert re.search(r'\n    build:\n      context: "\."\n      dockerfile: "Dockerfile.onnx"\n', text), text
    assert re.search(r'\n    ports:\n      - "127.0.0.1:18502:8501"\n', text), text
    volume = re.search(r'\n      - type: bind\n        source: ("[^\n]*")\n        target: "/export"\n'
                       r'        read_only: true\n', text)
    assert volume, text
    mounted = (out / json.loads(volume.group(1))).resolve()
    assert mounted == exported["dir"].resolve()
    assert {"manifest.json", "forward.onnx", "inverse.onnx"} <= {p.name for p in mounted.iterdir()}
    assert "Dockerfile.onnx" in (out / "SERVING.md").read_text()


# ----------------------------------------------------------------------------- REST
class _RestThroughSavedModel:
    """An httpx transport that hands each request the Client sends to `fake_tf_serving` in a
    subprocess where tfinv, TFP and Keras cannot be imported (TF Serving's JSON decoding, then
    the SavedModel's signature) and returns its answer; records the request bodies."""

    def __init__(self, version_dir: pathlib.Path, log: pathlib.Path):
        self._log = open(log, "wb")
        self.process = subprocess.Popen(
            [sys.executable, str(FAKE), "--rest-stdio", str(version_dir), "--name", NAME],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, env=_env())
        self.log, self.bodies = log, []
        # Lines are read on a thread into a queue, so a silent or stuck fake fails the test after
        # a bounded wait instead of blocking readline() forever.
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.ready = self._read(timeout=120)  # start-up loads TensorFlow and the SavedModel

    def _pump(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put("")  # end of output: the process exited

    def _read(self, timeout: float = 60) -> dict:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.process.kill()
            raise AssertionError(f"fake TF Serving sent no reply within {timeout} s:\n"
                                 f"{self.log.read_text()[-3000:]}") from None
        assert line, f"fake TF Serving exited:\n{self.log.read_text()[-3000:]}"
        return json.loads(line)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = request.content.decode() or None
        if body:
            self.bodies.append((request.url.path, json.loads(body)))
        self.process.stdin.write(json.dumps({"method": request.method, "path": request.url.path, "body": body}) + "\n")
        self.process.stdin.flush()
        reply = self._read()
        return httpx.Response(reply["status"], json=reply["body"])

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self._log.close()


def _saved_model_cli_run(version_dir: pathlib.Path, signature: str, inputs: dict, cwd) -> subprocess.Popen:
    """``saved_model_cli run --input_exprs`` with the REST body's JSON values as Python literals."""
    exprs = ";".join(f"{key}={json.dumps(value)}" for key, value in inputs.items())
    args = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "run", "--dir", str(version_dir),
            "--tag_set", "serve", "--signature_def", signature, "--input_exprs", exprs]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=_env())


def test_rest_request_tensors_run_through_the_saved_model_without_tfinv(exported, tmp_path):
    version_dir, expected, x, z = exported["version_dir"], exported["expected"], exported["x"], exported["z"]
    fake = _RestThroughSavedModel(version_dir, tmp_path / "fake.log")
    try:
        assert fake.ready == {"ready": True, "imported": []}
        client = Client("http://tf-serving.test:8501", model=NAME)
        # The REST transport as is; only its HTTP connection goes to the fake instead of a socket.
        client.transport._http = httpx.Client(base_url="http://tf-serving.test:8501",
                                              transport=httpx.MockTransport(fake))
        x_s, z_s = client.sample(N, seed=SEED, temperature=TEMPERATURE, return_z=True)
        _assert_matches({"x": x_s, "z": z_s}, expected["sample"], "REST sample")
        _assert_matches(dict(zip(("x", "log_det"), client.inverse_and_log_det(z))), expected["inverse"], "REST inverse")
        _assert_matches(dict(zip(("z", "log_det"), client.forward(x))), expected["forward"], "REST forward")
        _assert_matches({"log_prob": client.log_prob(x)}, expected["log_prob"], "REST log_prob")
        rows = Client("http://tf-serving.test:8501", model=NAME, row_format=True)
        rows.transport._http = client.transport._http
        _assert_matches(dict(zip(("z", "log_det"), rows.forward(x))), expected["forward"], "REST rows forward")
        _assert_matches({"log_prob": rows.log_prob(x)}, expected["log_prob"], "REST rows log_prob")
        assert set(client.signatures()) == {"forward", "inverse", "sample", "log_prob", "serving_default"}
        with pytest.raises(ServingError) as bad:
            client.sample(0, seed=1)
        assert bad.value.status == 400 and "n >= 1" in bad.value.message
    finally:
        fake.close()

    # The same bodies, as Python literals, through session-style loading (saved_model_cli run).
    bodies = {}
    for path, body in fake.bodies:  # the first (valid) request of each signature
        if path == f"/v1/models/{NAME}:predict" and "inputs" in body:
            bodies.setdefault(body["signature_name"], body["inputs"])
    assert bodies["sample"] == {"n": N, "seed": SEED, "temperature": TEMPERATURE}
    runs = {key: _saved_model_cli_run(version_dir, key, bodies[key], tmp_path) for key in ("sample", "inverse")}
    for key, process in runs.items():
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, f"saved_model_cli run {key} failed:\n{stderr[-3000:]}"
        printed = _parse_run(stdout)
        got = {k: printed[k].reshape(v.shape) for k, v in expected[key].items()}
        _assert_matches(got, expected[key], f"saved_model_cli run {key} with the REST body")


# ----------------------------------------------------------------------------- gRPC
@pytest.fixture(scope="module")
def grpc_url(exported):
    with fake_tf_serving.serve_grpc(exported["version_dir"], NAME) as url:
        yield url


def test_grpc_client_matches_the_model(exported, grpc_url):
    expected, x, z = exported["expected"], exported["x"], exported["z"]
    with Client(grpc_url, model=NAME, transport="grpc") as client:
        status = client.wait_until_available(timeout=10)
        assert status == {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                                    "status": {"error_code": "OK", "error_message": ""}}]}
        x_s, z_s = client.sample(N, seed=SEED, temperature=TEMPERATURE, return_z=True)
        assert x_s.dtype == np.float32 and x_s.shape == (N, 8, 8, 1)
        _assert_matches({"x": x_s, "z": z_s}, expected["sample"], "gRPC sample")
        _assert_matches(dict(zip(("x", "log_det"), client.inverse_and_log_det(z))), expected["inverse"], "gRPC inverse")
        assert np.allclose(client.inverse(z), expected["inverse"]["x"], rtol=TOL, atol=TOL)
        _assert_matches(dict(zip(("z", "log_det"), client.forward(x))), expected["forward"], "gRPC forward")
        _assert_matches({"log_prob": client.log_prob(x)}, expected["log_prob"], "gRPC log_prob")
        _assert_matches(client.predict("serving_default", {"x": tf.constant(x)}), expected["log_prob"], "default")
        meta = client.metadata()
        assert meta["model_spec"]["name"] == NAME and meta["model_spec"]["version"] == "1"
        signatures = client.signatures()
        assert signatures["sample"]["inputs"] == {"n": ("DT_INT32", []), "seed": ("DT_INT32", []),
                                                  "temperature": ("DT_FLOAT", [])}
        assert signatures["inverse"]["outputs"]["x"] == ("DT_FLOAT", [-1, 8, 8, 1])
    with Client(grpc_url, model=NAME, version=1, transport="grpc") as pinned:
        _assert_matches({"log_prob": pinned.log_prob(x)}, expected["log_prob"], "gRPC version 1")


def test_grpc_input_dtypes_of_unknown_signatures_come_from_the_metadata(exported, grpc_url, monkeypatch):
    import tfinv.serving.grpc_transport as client_module

    monkeypatch.setattr(client_module, "_INPUT_DTYPES", {})  # as if `sample` were a signature it does not know
    with Client(grpc_url, model=NAME, transport="grpc") as client:
        x_s = client.predict("sample", {"n": N, "seed": SEED, "temperature": TEMPERATURE})["x"]
        _assert_matches({"x": x_s}, {"x": exported["expected"]["sample"]["x"]}, "gRPC sample, dtypes from metadata")


def _grpc_error(call) -> GrpcServingError:
    with pytest.raises(GrpcServingError) as caught:
        call()
    assert isinstance(caught.value, ServingError)
    return caught.value


def test_grpc_errors_map_to_serving_error(exported, grpc_url):
    x = exported["x"]
    with Client(grpc_url, model=NAME, transport="grpc") as client:
        err = _grpc_error(lambda: client.sample(0, seed=1))
        assert (err.code, err.status) == ("INVALID_ARGUMENT", 400) and "n >= 1" in err.message
        err = _grpc_error(lambda: client.predict("nope", {"x": x}))
        assert (err.code, err.status) == ("FAILED_PRECONDITION", 400) and "nope" in err.message
        err = _grpc_error(lambda: client.forward(x[:, :4]))
        assert (err.code, err.status) == ("INVALID_ARGUMENT", 400)
        err = _grpc_error(lambda: client.predict("forward", {"x": x, "y": x}))
        assert err.code == "INVALID_ARGUMENT" and "Sent extra: {y}" in err.message
        err = _grpc_error(lambda: client.predict("sample", {"n": 2, "seed": 1.5, "temperature": 1.0}))  # not int32
        assert (err.code, err.status) == ("INVALID_ARGUMENT", 400) and "int32" in err.message
        err = _grpc_error(lambda: client.sample(2, seed=2**31))
        assert err.code == "INVALID_ARGUMENT"
    for kwargs, message in [({"model": "other"}, "Latest(other)"),
                            ({"model": NAME, "version": 2}, f"Specific({NAME}, 2)")]:
        with Client(grpc_url, transport="grpc", **kwargs) as client:
            err = _grpc_error(lambda: client.log_prob(x))
            assert (err.code, err.status) == ("NOT_FOUND", 404) and message in err.message
            assert _grpc_error(client.status).status == 404
            assert _grpc_error(client.metadata).code == "NOT_FOUND"
    assert pickle.loads(pickle.dumps(err)).code == "NOT_FOUND"
    assert str(err).startswith("gRPC NOT_FOUND: ")
    with socket.socket() as s:  # bound and never listening for the whole block: refuses connections
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
        with Client(closed, model=NAME, transport="grpc", timeout=5) as client:
            err = _grpc_error(client.status)
            assert (err.code, err.status) == ("UNAVAILABLE", 503)
    with pytest.raises(ValueError, match="host:port"):
        Client("http://127.0.0.1:8500", model=NAME, transport="grpc")


def test_client_default_urls_follow_the_transport():
    with Client(model=NAME, transport="grpc") as client:
        assert client.url == "127.0.0.1:8500"
    with Client(model=NAME) as client:
        assert client.url == "http://127.0.0.1:8501"
