"""The ONNX server end to end: a real server process on a free loopback port, driven by the Client
(and by raw HTTP for TF Serving's formats and the bad-input cases)."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import tensorflow as tf

from tfinv.serving import Client, ServingError
from tfinv.serving.cli import main as server_main
from tfinv.serving.rng import stateless_normal
from tfinv.testing.contract import relative_error

LIMITS = {"max_batch": 32, "max_n": 64, "max_body_bytes": 200_000}


@contextlib.contextmanager
def closed_port():
    """A loopback port that refuses connections for the whole block: bound, never listening (a
    released port could be taken by another process between the check and its use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Polls ``predicate()`` until it returns a true value (returned) or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)


_LISTENING = re.compile(r"tfinv serve: listening on (http://127\.0\.0\.1:\d+)")


@contextlib.contextmanager
def running_server(export_dir, log_path, **limits):
    """Starts ``python -m tfinv.serving --port 0`` (the OS picks a free port, the server
    prints it); yields ``(process, url)`` once ``/healthz`` answers; kills the process if it is
    still alive after."""
    args = [sys.executable, "-m", "tfinv.serving", "--export-dir", str(export_dir), "--port", "0"]
    for key, value in limits.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    log_path = pathlib.Path(log_path)
    with open(log_path, "wb") as log:  # a file, not a pipe: a full pipe would block the server
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)

    def listening():
        assert process.poll() is None, f"server exited early:\n{log_path.read_text()[-3000:]}"
        match = _LISTENING.search(log_path.read_text(errors="replace"))
        return match and match.group(1)

    def healthy():
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        assert process.poll() is None, f"server exited early:\n{log_path.read_text()[-3000:]}"
        return False

    try:
        url = wait_for(listening, 90, "the server to report its port")
        wait_for(healthy, 30, "/healthz")
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def glow(onnx_glow):
    return onnx_glow[0]  # conftest.py: a small Glow and its ONNX export, shared read-only


@pytest.fixture(scope="module")
def export_dir(onnx_glow):
    return onnx_glow[1]


@pytest.fixture(scope="module")
def server(export_dir, tmp_path_factory):
    with running_server(export_dir, tmp_path_factory.mktemp("log") / "server.log", **LIMITS) as (process, url):
        yield url


@pytest.fixture(scope="module")
def client(server):
    with Client(server, model="digits", timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def data(glow):
    return np.asarray(glow.sample(6, temperature=0.8, seed=11), np.float32)


def predict(url, body, model="digits", **kwargs):
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(f"{url}/v1/models/{model}:predict", content=content, timeout=30, **kwargs)


# --------------------------------------------------------------------------- RNG
@pytest.mark.parametrize("seed, shape", [((0, 0), (5, 64)), ((3, 0), (7, 3)), ((-5, 0), (64, 64)),
                                         ((2**31 - 1, 0), (2, 3, 5)), ((12, 34), (1,))])
def test_numpy_rng_reproduces_tf_stateless_normal(seed, shape):
    expected = tf.random.stateless_normal(shape, seed=tf.constant(seed, tf.int32)).numpy()
    np.testing.assert_allclose(stateless_normal(shape, seed), expected, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- the API
def test_status_metadata_and_health(server, client):
    expected_status = {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert client.status() == expected_status
    assert Client(server, model="digits", version=1).status() == expected_status
    assert client.wait_until_available(timeout=5) == expected_status
    metadata = client.metadata()
    assert metadata["model_spec"] == {"name": "digits", "signature_name": "", "version": "1"}
    x, z, scalar = [-1, 8, 8, 1], [-1, 64], []
    assert client.signatures() == {
        "forward": {"inputs": {"x": ("DT_FLOAT", x)}, "outputs": {"z": ("DT_FLOAT", z), "log_det": ("DT_FLOAT", [-1])}},
        "inverse": {"inputs": {"z": ("DT_FLOAT", z)}, "outputs": {"x": ("DT_FLOAT", x), "log_det": ("DT_FLOAT", [-1])}},
        "sample": {"inputs": {"n": ("DT_INT32", scalar), "seed": ("DT_INT32", scalar),
                              "temperature": ("DT_FLOAT", scalar)},
                   "outputs": {"x": ("DT_FLOAT", x), "z": ("DT_FLOAT", z)}},
        "log_prob": {"inputs": {"x": ("DT_FLOAT", x)}, "outputs": {"log_prob": ("DT_FLOAT", [-1])}},
        "serving_default": {"inputs": {"x": ("DT_FLOAT", x)}, "outputs": {"log_prob": ("DT_FLOAT", [-1])}},
    }
    health = httpx.get(f"{server}/healthz").json()
    assert health["status"] == "ok" and health["provider"] in ("CPUExecutionProvider", "CUDAExecutionProvider")


@pytest.mark.parametrize("row_format", [False, True])
def test_sample_forward_inverse_round_trip_and_same_samples_as_tf(glow, server, row_format):
    client = Client(server, model="digits", row_format=row_format)
    x, z = client.sample(8, seed=3, temperature=0.7, return_z=True)
    assert x.shape == (8, 8, 8, 1) and z.shape == (8, 64) and x.dtype == z.dtype == np.float32
    z_back, log_det = client.forward(x)
    assert relative_error(z_back, z) <= 1e-4 and log_det.shape == (8,)
    assert relative_error(client.inverse(z_back), x) <= 1e-4
    # The server's noise is TF's stateless draw: the samples are the TF model's for the seed.
    assert relative_error(z, 0.7 * tf.random.stateless_normal((8, 64), seed=[3, 0])) <= 1e-6
    assert relative_error(x, glow.sample(8, temperature=0.7, seed=3)) <= 1e-4
    assert np.array_equal(client.sample(8, seed=3, temperature=0.7), x)
    assert not np.allclose(client.sample(8, seed=4, temperature=0.7), x)


@pytest.mark.parametrize("row_format", [False, True])
def test_forward_inverse_and_log_prob_equal_the_tf_model(glow, client, data, row_format):
    z, log_det = client.predict("forward", {"x": data}, row_format=row_format).values()
    z_tf, log_det_tf = glow.forward(data)
    assert relative_error(z, z_tf) <= 1e-4 and relative_error(log_det, log_det_tf) <= 1e-4
    out = client.predict("inverse", {"z": z_tf}, row_format=row_format)
    x_tf, inv_log_det_tf = glow.inverse_and_log_det(z_tf)
    assert relative_error(out["x"], x_tf) <= 1e-4 and relative_error(out["log_det"], inv_log_det_tf) <= 1e-4
    log_prob = client.predict("log_prob", {"x": data}, row_format=row_format)["log_prob"]
    assert log_prob.shape == (6,) and relative_error(log_prob, glow.log_prob(data)) <= 1e-4
    assert relative_error(client.log_prob(data), glow.log_prob(data)) <= 1e-4


def test_tf_serving_request_and_response_formats(server, glow, data):
    rows = data[:2].tolist()
    # Row format, plain values -> a list of {output: value} per instance (several outputs).
    forward = predict(server, {"signature_name": "forward", "instances": rows}).json()["predictions"]
    assert len(forward) == 2 and set(forward[0]) == {"z", "log_det"} and np.shape(forward[0]["z"]) == (64,)
    # Row format, named instances; versioned URL.
    named = predict(server, {"signature_name": "forward", "instances": [{"x": r} for r in rows]},
                    model="digits/versions/1").json()["predictions"]
    assert named == forward
    # Columnar: a dict of named inputs or a bare value -> {"outputs": {name: value}}.
    columns = predict(server, {"signature_name": "forward", "inputs": {"x": rows}}).json()["outputs"]
    assert predict(server, {"signature_name": "forward", "inputs": rows}).json()["outputs"] == columns
    assert columns["z"] == [p["z"] for p in forward] and columns["log_det"] == [p["log_det"] for p in forward]
    # A single output: bare values; serving_default is log_prob and the default signature.
    expected = np.asarray(glow.log_prob(data[:2]))
    for body, key in [({"instances": rows}, "predictions"), ({"inputs": rows}, "outputs"),
                      ({"signature_name": "log_prob", "instances": rows}, "predictions")]:
        response = predict(server, body)
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        assert relative_error(response.json()[key], expected) <= 1e-4
    sample = predict(server, {"signature_name": "sample", "inputs": {"n": 2, "seed": 1, "temperature": 0.7}}).json()
    assert set(sample["outputs"]) == {"x", "z"} and np.shape(sample["outputs"]["x"]) == (2, 8, 8, 1)


def _bad(value):
    return {"signature_name": "forward", "inputs": {"x": value}}


def _sample(**inputs):
    return {"signature_name": "sample", "inputs": {"n": 2, "seed": 0, "temperature": 1.0, **inputs}}


GOOD_X = np.full((1, 8, 8, 1), 3.5).tolist()
BAD_REQUESTS = {
    "malformed json": ("{bad json", {}, 400, "JSON Parse error"),
    "not utf-8": (b"\xff\xfe{", {}, 400, "JSON Parse error"),
    "body not an object": ("[1, 2]", {}, 400, "must be a JSON object"),
    "unknown model": (_bad(GOOD_X), {"model": "nope"}, 404, "Servable not found for request: Latest(nope)"),
    "unknown version": (_bad(GOOD_X), {"model": "digits/versions/7"}, 404,
                        "Servable not found for request: Specific(digits, 7)"),
    "unknown signature": ({"signature_name": "nope", "inputs": GOOD_X}, {}, 400,
                          'Serving signature key "nope" not found'),
    "no inputs": ({"signature_name": "forward"}, {}, 400, "Missing 'inputs' or 'instances' key"),
    "both formats": ({"instances": GOOD_X, "inputs": GOOD_X}, {}, 400, "exactly one of"),
    "unknown input name": ({"signature_name": "forward", "inputs": {"y": GOOD_X}}, {}, 400, "missing ['x']"),
    "wrong shape": (_bad(np.zeros((2, 8, 8)).tolist()), {}, 400, "must have shape [-1, 8, 8, 1]"),
    "wrong latent shape": ({"signature_name": "inverse", "inputs": np.zeros((2, 63)).tolist()}, {}, 400,
                           "must have shape [-1, 64]"),
    "empty batch": ({"signature_name": "forward", "instances": []}, {}, 400, "non-empty"),
    "ragged": (_bad([np.zeros((8, 8, 1)).tolist(), np.zeros((8, 7, 1)).tolist()]), {}, 400, "ragged"),
    "strings": (_bad([[[["1.5"] * 1] * 8] * 8]), {}, 400, "must be numbers of dtype DT_FLOAT"),
    "booleans mixed in": (_bad([[[[True]] + [[1.0]] * 7] * 8]), {}, 400, "must be numbers"),
    "null": (_bad([[[[None]] * 8] * 8]), {}, 400, "must be numbers"),
    "NaN": (json.dumps(_bad(np.full((1, 8, 8, 1), np.nan).tolist())), {}, 400, "NaN or Inf"),
    "Infinity": (json.dumps(_bad(np.full((1, 8, 8, 1), np.inf).tolist())), {}, 400, "NaN or Inf"),
    "beyond float32": (_bad(np.full((1, 8, 8, 1), 1e39).tolist()), {}, 400, "NaN or Inf"),
    "batch over limit": (_bad(np.full((33, 8, 8, 1), 3.5).tolist()), {}, 400, "batch size 33 exceeds"),
    "row batch over limit": ({"signature_name": "forward", "instances": np.full((33, 8, 8, 1), 3.5).tolist()},
                             {}, 400, "batch size 33 exceeds"),
    "n over limit": (_sample(n=65), {}, 400, "must be in [1, 64]"),
    "n zero": (_sample(n=0), {}, 400, "must be in [1, 64]"),
    "n float": (_sample(n=2.5), {}, 400, "must be an int32 scalar"),
    "n not a scalar": (_sample(n=[2]), {}, 400, "must be an int32 scalar"),
    "seed string": (_sample(seed="1"), {}, 400, "must be an int32 scalar"),
    "seed beyond int32": (_sample(seed=2**31), {}, 400, "must be an int32 scalar"),
    "temperature zero": (_sample(temperature=0), {}, 400, "must be > 0"),
    "temperature negative": (_sample(temperature=-0.5), {}, 400, "must be > 0"),
    "temperature beyond float32": (_sample(temperature=1e39), {}, 400, "finite float32 scalar"),
    "temperature overflowing the noise": (_sample(temperature=1e38), {}, 400, "not finite"),
    "temperature string": (_sample(temperature="0.7"), {}, 400, "finite float32 scalar"),
    "n bool": (_sample(n=True), {}, 400, "must be an int32 scalar"),
    "n string": (_sample(n="3"), {}, 400, "must be an int32 scalar"),
    "n negative": (_sample(n=-2), {}, 400, "must be in [1, 64]"),
    "x outside the domain": (_bad(np.full((1, 8, 8, 1), -5.0).tolist()), {}, 400, "outside the model's domain"),
    "signature_name not a string": ({"signature_name": 3, "inputs": GOOD_X}, {}, 400, "must be a string"),
    "method not allowed": (None, {"method": "PUT"}, 405, "Malformed request"),
    "version beyond int64": (_bad(GOOD_X), {"model": "digits/versions/9999999999999999999"}, 404,
                             "Malformed request"),
    "temperature NaN": ('{"signature_name": "sample", "inputs": {"n": 2, "seed": 0, "temperature": NaN}}',
                        {}, 400, "finite float32 scalar"),
    "sample missing seed": ({"signature_name": "sample", "inputs": {"n": 2, "temperature": 1.0}}, {}, 400,
                            "missing ['seed']"),
    "sample row format": ({"signature_name": "sample", "instances": [{"n": 2, "seed": 0, "temperature": 1.0}]},
                          {}, 400, 'columnar "inputs" form'),
    "oversized body": (b'{"inputs": [' + b"1.0," * 60_000 + b"1.0]}", {}, 413, "exceeds this server's limit"),
    "oversized streamed body": (None, {}, 413, "exceeds this server's limit"),
    "classify": (_bad(GOOD_X), {"model": "digits:classify", "_raw_path": True}, 400, "use :predict"),
}


@pytest.fixture(scope="module")
def samples_after_errors(glow):
    return np.asarray(glow.sample(2, temperature=1.0, seed=5))


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_tf_serving_errors_and_the_server_keeps_serving(server, client, case,
                                                                          samples_after_errors):
    body, options, status, message = BAD_REQUESTS[case]
    model = options.get("model", "digits")
    if case == "oversized streamed body":  # chunked: no Content-Length, the received size counts
        def chunks():
            yield b'{"inputs": ['
            for _ in range(30):
                yield b"1.0," * 2_000
            yield b"1.0]}"
        response = httpx.post(f"{server}/v1/models/digits:predict", content=chunks(), timeout=30)
    elif options.get("method"):
        response = httpx.request(options["method"], f"{server}/v1/models/digits:predict", timeout=30)
    elif options.get("_raw_path"):
        response = httpx.post(f"{server}/v1/models/{model}", content=json.dumps(body), timeout=30)
    else:
        response = predict(server, body, model=model)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert set(error) == {"error"} and isinstance(error["error"], str)
    if message:
        assert message in error["error"]
    # Still serving, and correctly: the TF model's samples for that seed.
    assert relative_error(client.sample(2, seed=5), samples_after_errors) <= 1e-4


def test_client_raises_serving_error_with_message_and_status(server, client):
    with pytest.raises(ServingError, match=re.escape("Servable not found for request: Latest(nope)")) as info:
        Client(server, model="nope").sample(2)
    assert info.value.status == 404
    with pytest.raises(ServingError) as info:
        client.forward(np.zeros((2, 8, 8), np.float32))
    assert info.value.status == 400 and "must have shape [-1, 8, 8, 1]" in info.value.message
    with pytest.raises(ServingError) as info:
        client.sample(65)
    assert info.value.status == 400
    for path, status in [("/nothing", 404), ("/v1/models/digits/labels/stable", 404)]:
        response = httpx.get(server + path)
        assert response.status_code == status and "Malformed request" in response.json()["error"]
    assert httpx.put(f"{server}/healthz").status_code == 405
    with closed_port() as port:
        closed = Client(f"http://127.0.0.1:{port}", model="digits", timeout=2)
        with pytest.raises(ServingError) as info:
            closed.status()
    assert info.value.status is None
    with pytest.raises(ValueError, match="transport 'soap' is not available"):
        Client(server, model="digits", transport="soap")
    with pytest.raises(ValueError, match="host:port"):  # gRPC is TF Serving's, on another port
        Client(server, model="digits", transport="grpc")


def test_concurrent_load_has_no_errors_and_no_dropped_requests(server):
    threads, per_thread = 8, 25
    z = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    results: list[tuple[int, int, str]] = []
    lock = threading.Lock()

    def worker(index):
        with Client(server, model="digits", timeout=30) as c:
            for i in range(per_thread):
                try:
                    if (index + i) % 2:
                        shape = c.sample(4, seed=index * 1000 + i).shape
                    else:
                        shape = c.inverse(z).shape
                    outcome = "ok" if shape == (4, 8, 8, 1) else f"bad shape {shape}"
                except Exception as err:  # counted, not raised: the assertion reports them all
                    outcome = f"{type(err).__name__}: {err}"
                with lock:
                    results.append((index, i, outcome))

    pool = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
    start = time.monotonic()
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=max(1.0, 60 - (time.monotonic() - start)))
    assert not any(t.is_alive() for t in pool), "load test did not finish within 60 s"
    errors = [r for r in results if r[2] != "ok"]
    assert not errors, errors[:5]
    assert len(results) == threads * per_thread
    assert len({(k, i) for k, i, _ in results}) == threads * per_thread


def test_sigterm_shuts_down_gracefully(export_dir, tmp_path):
    with running_server(export_dir, tmp_path / "server.log") as (process, url):
        assert Client(url, model="digits").sample(2).shape == (2, 8, 8, 1)
        # A request in flight when SIGTERM arrives (its body still streaming) is finished.
        first_part_sent, release, responses = threading.Event(), threading.Event(), []

        def slow_body():
            yield b'{"signature_name": "log_prob", '
            first_part_sent.set()  # httpx asks for the next part only after writing this one
            release.wait(30)
            yield b'"inputs": ' + json.dumps(GOOD_X).encode() + b"}"

        in_flight = threading.Thread(target=lambda: responses.append(
            httpx.post(f"{url}/v1/models/digits:predict", content=slow_body(), timeout=30)))
        in_flight.start()
        assert first_part_sent.wait(15), "the request's first part was not sent within 15 s"
        log_path = tmp_path / "server.log"
        process.send_signal(signal.SIGTERM)
        # The server has begun its shutdown (it logs it) and is still alive, waiting for the request.
        wait_for(lambda: "Shutting down" in log_path.read_text(errors="replace"), 15, "the shutdown to begin")
        assert process.poll() is None, "the server exited with a request in flight"
        release.set()
        in_flight.join(15)
        assert responses and responses[0].status_code == 200, responses and responses[0].text
        assert np.shape(responses[0].json()["outputs"]) == (1,)
        assert process.wait(timeout=15) == 0, (tmp_path / "server.log").read_text()[-3000:]
        # In this order: shutdown began, the request was finished (200 above), the process ended
        # by itself -- not by uvicorn cancelling the request when the graceful timeout ran out.
        log = (tmp_path / "server.log").read_text()
        assert log.index("Shutting down") < log.index("Finished server process"), log[-3000:]
        assert "graceful shutdown exceeded" not in log and "Cancel" not in log, log[-3000:]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz", timeout=2)


def test_bad_export_dir_fails_with_a_clear_message(tmp_path, capsys):
    assert server_main(["--export-dir", str(tmp_path), "--port", "0"]) == 2
    assert "manifest.json not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- in-process: app and client
@pytest.mark.parametrize("option, value, message", [
    ("max_concurrency", 0, "max_concurrency must be a positive int, got 0"),
    ("max_concurrency", True, "max_concurrency must be a positive int, got True"),
    ("max_concurrency", 2.0, "max_concurrency must be a positive int, got 2.0"),
    ("max_body_bytes", -1, "max_body_bytes must be a positive int, got -1"),
    ("body_timeout", 0, "body_timeout must be a positive number of seconds, got 0"),
    ("body_timeout", float("nan"), "body_timeout must be a positive number of seconds, got nan"),
    ("max_batch", 0, "max_batch must be a positive int, got 0"),
    ("max_n", "64", "max_n must be a positive int, got '64'"),
    ("version", 0, "version must be a positive int, got 0"),
])
def test_create_app_rejects_bad_configuration(export_dir, option, value, message):
    from tfinv.serving import create_app

    with pytest.raises(ValueError, match=re.escape(message)):
        create_app(export_dir, **{option: value})


@pytest.mark.parametrize("argv, message", [
    (["--max-concurrency", "0"], "max_concurrency must be a positive int, got 0"),
    (["--header-timeout", "0"], "header_timeout must be a positive number of seconds, got 0.0"),
    (["--graceful-timeout", "-1"], "graceful_timeout must be a positive number of seconds, got -1.0"),
    (["--max-connections", "0"], "max_connections must be a positive int, got 0"),
    (["--keep-alive", "0"], "keep_alive must be a positive int, got 0"),
    (["--name", "../x"], "../x"),
])
def test_server_configuration_errors_are_one_line_before_serving(export_dir, capsys, argv, message):
    assert server_main(["--export-dir", str(export_dir), *argv]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith(f"tfinv serve: error: cannot serve {str(export_dir)!r}: ") and "\n" not in err, err
    assert message in err and "listening" not in captured.out


@pytest.mark.parametrize("port", ["-2", "65536", "http"])
def test_server_port_outside_the_range_is_a_usage_error(export_dir, capsys, port):
    """``--port`` is checked while parsing: argparse's one usage line and exit code 2, nothing served."""
    with pytest.raises(SystemExit) as exit_info:
        server_main(["--export-dir", str(export_dir), "--port", port])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    last = captured.err.strip().splitlines()[-1]
    assert last.endswith(f"argument --port: expected a port in [0, 65535] (0: a free port), got {port!r}"), last
    assert "listening" not in captured.out and "Traceback" not in captured.err


@pytest.mark.parametrize("limit", [1, 3])
def test_max_concurrency_bounds_the_inference_runs_at_once(export_dir, limit):
    """Eight concurrent requests; each inference run holds until ``limit`` runs are in progress
    or every request has started one (10 s at most): the most seen at once is exactly ``limit``
    (the semaphore lets that many in, and no more), and every request is answered correctly."""
    import asyncio

    from tfinv.serving import create_app

    app = create_app(export_dir, max_concurrency=limit)
    servable = app.state.servable
    total, run, condition = 8, servable.run, threading.Condition()
    state = {"active": 0, "most": 0, "started": 0}

    def counting_run(sig, inputs):
        with condition:
            state["active"] += 1
            state["started"] += 1
            state["most"] = max(state["most"], state["active"])
            condition.notify_all()
            condition.wait_for(lambda: state["active"] >= limit or state["started"] == total, timeout=10)
        try:
            return run(sig, inputs)
        finally:
            with condition:
                state["active"] -= 1

    servable.run = counting_run
    body = {"signature_name": "sample", "inputs": {"n": 2, "seed": 7, "temperature": 0.7}}

    async def requests():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app", timeout=60) as http:
            return await asyncio.gather(*[http.post("/v1/models/digits:predict", json=body) for _ in range(total)])

    responses = asyncio.run(requests())
    assert [r.status_code for r in responses] == [200] * total
    assert state["most"] == limit and state["active"] == 0 and state["started"] == total
    first = np.asarray(responses[0].json()["outputs"]["x"])
    assert all(np.array_equal(np.asarray(r.json()["outputs"]["x"]), first) for r in responses)


def test_client_wait_until_available_polls_and_times_out(server, monkeypatch):
    loading = {"model_version_status": [{"version": "1", "state": "LOADING"}]}
    client = Client(server, model="digits", timeout=30)
    answers = [loading, loading]
    real_status = client.status
    monkeypatch.setattr(client, "status", lambda: answers.pop(0) if answers else real_status())
    # Polls past two LOADING answers to the server's AVAILABLE one.
    assert client.wait_until_available(timeout=30, interval=0.01)["model_version_status"][0]["state"] == "AVAILABLE"
    assert answers == []
    # Never AVAILABLE: a TimeoutError naming the model and the last status.
    monkeypatch.setattr(client, "status", lambda: loading)
    with pytest.raises(TimeoutError, match=r"model 'digits' not AVAILABLE after 0.05 s: .*LOADING"):
        client.wait_until_available(timeout=0.05, interval=0.01)
    # Nothing listening: the last connection error, as a ServingError without an HTTP status.
    with closed_port() as port:
        with pytest.raises(ServingError) as info:
            Client(f"http://127.0.0.1:{port}", model="digits", timeout=2).wait_until_available(timeout=0.05,
                                                                                               interval=0.01)
    assert info.value.status is None
