"""Running the ONNX server: uvicorn with bounded connections, read timeouts and graceful shutdown.

What bounds a slow or idle client (uvicorn 0.54's own settings where it has them):

* ``max_connections`` (uvicorn's ``limit_concurrency``, set to ``max_connections + 1`` because
  uvicorn counts the requesting connection): a request that arrives while more than
  ``max_connections`` connections are open (its own included) is answered uvicorn's
  ``503 Service Unavailable`` (text) and its connection closed;
* ``timeout_keep_alive`` (uvicorn): an idle keep-alive connection is closed after this many
  seconds;
* ``h11_max_incomplete_event_size`` (uvicorn/h11): request line + headers larger than this are
  refused (400);
* header timeout (here: uvicorn has none): a connection whose request line and headers have not
  all arrived ``header_timeout`` seconds after it opened (or after its previous response) is
  closed; this covers idle sockets that never send anything;
* body timeout (`tfinv.serving.app`): a request body that has not arrived within
  ``body_timeout`` seconds is answered 408 and the connection closed.

``port=0`` binds a free port chosen by the OS; the port obtained is printed
(``tfinv serve: listening on http://HOST:PORT``) and written to ``port_file`` if given.
"""

from __future__ import annotations

import math
import os
import pathlib
import signal
import sys
import threading

from tfinv.serving.app import DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONCURRENCY, create_app
from tfinv.serving.options import port_number, positive_int, positive_seconds
from tfinv.serving.servable import DEFAULT_MAX_BATCH, DEFAULT_MAX_N

__all__ = ["DEFAULT_HEADER_TIMEOUT", "DEFAULT_MAX_CONNECTIONS", "serve"]

DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_KEEP_ALIVE = 5
DEFAULT_MAX_HEADER_BYTES = 64 * 1024


def _protocol_class(header_timeout: float):
    """uvicorn's h11 protocol plus a deadline for the request line and headers."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        _header_deadline = None

        def _arm(self) -> None:
            self._disarm()
            self._header_deadline = self.loop.call_later(header_timeout, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_too_slow(self) -> None:
            self._header_deadline = None
            waiting = self.cycle is None or self.cycle.response_complete  # no request being handled
            if waiting and self.conn.their_state is not h11.SEND_BODY and not self.transport.is_closing():
                self.logger.info("closing a connection whose request headers took over %g s", header_timeout)
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state not in (h11.IDLE, h11.DONE):  # headers complete: the body's turn
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


def serve(
    export_dir: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8501,
    name: str | None = None,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_n: int = DEFAULT_MAX_N,
    version: int = 1,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    keep_alive: int = DEFAULT_KEEP_ALIVE,
    threads: int | None = None,
    graceful_timeout: float = 10.0,
    port_file: str | os.PathLike | None = None,
    log_level: str = "info",
    access_log: bool = False,
) -> None:
    """Serves an ONNX flow export with uvicorn until SIGTERM/SIGINT; returns after a graceful
    shutdown (no new connections, in-flight requests finished, at most ``graceful_timeout`` s).

    Binds ``127.0.0.1`` by default: pass ``host="0.0.0.0"`` deliberately to expose the server.
    See `tfinv.serving.app.create_app` for the model arguments and the module docstring for
    ``max_connections``, ``header_timeout``, ``body_timeout`` and ``keep_alive``.

    Raises:
        RuntimeError: the server did not start (e.g. the address is in use).
    """
    import uvicorn

    positive_seconds("header_timeout", header_timeout)
    positive_seconds("graceful_timeout", graceful_timeout)
    positive_int("max_connections", max_connections)
    positive_int("keep_alive", keep_alive)
    port_number(port)
    app = create_app(export_dir, name=name, max_batch=max_batch, max_body_bytes=max_body_bytes, max_n=max_n,
                     version=version, max_concurrency=max_concurrency, body_timeout=body_timeout, threads=threads)
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=access_log, lifespan="on",
        http=_protocol_class(float(header_timeout)), limit_concurrency=max_connections + 1,
        timeout_keep_alive=keep_alive, h11_max_incomplete_event_size=DEFAULT_MAX_HEADER_BYTES,
        timeout_graceful_shutdown=max(1, math.ceil(graceful_timeout)), server_header=False)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started and getattr(self, "servers", None):
                bound_host, bound_port = self.servers[0].sockets[0].getsockname()[:2]
                print(f"tfinv serve: listening on http://{bound_host}:{bound_port}", flush=True)
                if port_file is not None:
                    path = pathlib.Path(port_file)
                    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
                    tmp.write_text(f"{bound_port}\n")
                    os.replace(tmp, path)

    server = Server(config)
    # uvicorn re-raises a captured SIGTERM/SIGINT under the previous handler once it has shut
    # down; a no-op handler there makes a graceful shutdown end the process with status 0.
    handled = (signal.SIGTERM, signal.SIGINT)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in handled}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise RuntimeError(f"the server did not start on {host}:{port}")
    sys.stdout.flush()
