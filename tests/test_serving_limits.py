"""The ONNX server sheds what it must: slow or idle clients are cut off after bounded times and a
connection limit holds, while other clients are served (uvicorn's settings plus a header and a
body timeout). A server on a port the OS picks (``--port 0``)."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from tfinv.serving import Client
from tfinv.serving.demo import start_server

HEADER_TIMEOUT, BODY_TIMEOUT, KEEP_ALIVE, MAX_CONNECTIONS = 1.0, 1.0, 1, 6
# A slow client is cut off after its timeout; the bound allows for a loaded 2-core machine.
CUT_OFF_WITHIN = 8.0


@pytest.fixture(scope="module")
def server(onnx_glow, tmp_path_factory):
    export_dir = onnx_glow[1]  # conftest.py: a small Glow's ONNX export, shared read-only
    log = open(tmp_path_factory.mktemp("log") / "server.log", "wb")
    process, url = start_server(str(export_dir), "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout",
                                str(BODY_TIMEOUT), "--keep-alive", str(KEEP_ALIVE), "--max-connections",
                                str(MAX_CONNECTIONS), log=log)
    with Client(url, model="digits") as client:
        client.wait_until_available(timeout=30)
    yield url
    process.terminate()
    process.wait(15)
    log.close()


def _connect(url: str) -> socket.socket:
    host, port = url.rsplit("/", 1)[-1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=CUT_OFF_WITHIN + 5)
    return sock


def _held(sock: socket.socket, trickle: bytes, interval: float = 0.2) -> tuple[float, bytes]:
    """Sends ``trickle`` one byte per ``interval`` until the server closes the connection; returns
    ``(seconds held, what the server answered)``."""
    start = time.monotonic()
    answer = b""
    sock.setblocking(False)
    for byte in trickle:
        try:
            sock.send(bytes([byte]))
        except OSError:
            break
        time.sleep(interval)
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            break
        answer += chunk
        if not chunk or answer.endswith(b"}"):
            break
        if time.monotonic() - start > CUT_OFF_WITHIN + 5:
            break
    sock.setblocking(True)
    sock.settimeout(CUT_OFF_WITHIN + 5)
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except OSError:
        pass
    return time.monotonic() - start, answer


def test_slow_and_idle_clients_are_cut_off_while_others_are_served(server):
    body = json.dumps({"signature_name": "log_prob", "inputs": [[[[3.5]] * 8] * 8]}).encode()
    slow_body = (b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode())
    slow_headers = b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200
    results: dict[str, tuple[float, bytes]] = {}

    def run(key, trickle, preamble=b""):
        sock = _connect(server)
        if preamble:
            sock.sendall(preamble)
        with sock:
            results[key] = _held(sock, trickle)

    jobs = [("slow body 1", body, slow_body), ("slow body 2", body, slow_body),
            ("slow headers 1", slow_headers, b""), ("slow headers 2", slow_headers, b"")]
    threads = [threading.Thread(target=run, args=job, daemon=True) for job in jobs]
    idle = _connect(server)
    start = time.monotonic()
    for t in threads:
        t.start()
    # Meanwhile another client is served, more than once.
    time.sleep(0.3)
    with Client(server, model="digits", timeout=10) as client:
        for seed in range(3):
            assert client.sample(2, seed=seed).shape == (2, 8, 8, 1)
    idle.settimeout(CUT_OFF_WITHIN + 5)
    assert idle.recv(1) == b"", "the idle socket got data instead of being closed"
    idle_held = time.monotonic() - start
    idle.close()
    for t in threads:
        t.join(CUT_OFF_WITHIN + 10)
    assert not any(t.is_alive() for t in threads)
    print({k: round(v[0], 2) for k, v in results.items()}, "idle", round(idle_held, 2))
    assert HEADER_TIMEOUT * 0.9 <= idle_held <= CUT_OFF_WITHIN
    for key, (held, answer) in results.items():
        assert held <= CUT_OFF_WITHIN, (key, held)
        if key.startswith("slow body"):
            # Answered 408 with TF Serving's JSON error, then closed.
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert b"did not arrive within 1 s (body_timeout)" in answer
            assert held >= BODY_TIMEOUT * 0.9
        else:  # never sent a whole request: closed without an answer
            assert answer == b"", answer[:200]
            assert held >= HEADER_TIMEOUT * 0.9


def test_an_idle_keep_alive_connection_is_closed(server):
    with httpx.Client(base_url=server) as http:
        assert http.get("/healthz").status_code == 200
        time.sleep(KEEP_ALIVE + 1.5)
        # The pooled connection was closed by the server; httpx reconnects transparently.
        assert http.get("/healthz").status_code == 200
    sock = _connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    start = time.monotonic()
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    assert data.startswith(b"HTTP/1.1 200 ") and KEEP_ALIVE * 0.9 <= time.monotonic() - start <= CUT_OFF_WITHIN
    sock.close()


def test_connections_beyond_the_limit_get_503_until_slots_free(server):
    held = [_connect(server) for _ in range(MAX_CONNECTIONS)]
    time.sleep(0.2)
    try:
        response = httpx.get(f"{server}/healthz", timeout=10)
        assert response.status_code == 503  # uvicorn's limit_concurrency answer
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert httpx.get(f"{server}/healthz", timeout=10).status_code == 200
