"""Running the application under uvicorn, and stopping it cleanly.

SIGTERM (or Ctrl-C) stops taking connections, lets the requests in flight get their answers, stops the
batcher threads, and returns: `nlpcli serve` exits 0, within the drain bound (`--drain-timeout`; requests
still unanswered then are dropped, and a batch still running is left to its daemon thread). Uvicorn by
itself re-raises the signal once it has shut down, which would end the process with the signal's status
(and, under the CLI's handler, 143); a server that drained as asked has done nothing wrong.

HTTP is parsed by httptools (llhttp, in C) on uvloop's event loop where uvloop exists (not on Windows): with a
fast model, the server's own Python per request is what bounds requests/s, and the pure-Python h11 parser and
asyncio loop cost more of it (measured in docs/results.md, "Serving speed").

Uvicorn reads a request's headers and body with no time limit of its own (only idle keep-alive connections
time out), so a client sending a header line every few seconds holds a connection for ever (slowloris).
`_TimedHttpTools` gives each request `read_timeout_s` from its first byte (or the connection's start) until its
body is complete: past it, the server answers 408 if it has not answered yet, and closes. And it keeps the
open connections under `--max-connections` and under the process' file-descriptor limit (less a margin):
a new connection past that closes the oldest connection still sending its request. Without this, slow
sockets fill every descriptor, and a health check waits in the kernel's accept queue behind them until
their read timeouts free a place.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import socket
from collections.abc import Generator
from typing import Any, ClassVar

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .. import startup
from ..errors import ConfigError
from .app import STOP_JOIN_S, ServeSettings

SIGNALS = (signal.SIGINT, signal.SIGTERM)
TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b'content-length: 53\r\n\r\n{"detail": "the request did not arrive in time (408)"}'
)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Like uvicorn's (a first signal drains, a second Ctrl-C forces), but not re-raised afterwards."""
        try:
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in SIGNALS}
        except ValueError:  # not the main thread (tests may run a server in a thread): no signals there
            yield
            return
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class _Config(uvicorn.Config):
    """uvicorn's settings and the request read timeout (an attribute: it travels to `--workers` processes,
    which receive the config pickled)."""

    read_timeout_s: float | None = None


class _TimedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol with a deadline on reading each request (headers and body)."""

    _read_timer: asyncio.TimerHandle | None = None
    # Connections of this process still sending their request, oldest first (a dict keeps insertion order).
    reading: ClassVar[dict[_TimedHttpTools, None]] = {}

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that sends nothing at all is timed out too
        if len(self.connections) > _connection_cap(self.config.limit_concurrency):
            oldest = next(iter(self.reading))
            if oldest is not self:
                oldest._disarm()
                oldest.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._read_timer is None:
            self._arm()  # the next request on a kept-alive connection (disarmed again if it all came now)
        super().data_received(data)

    def on_message_complete(self) -> None:
        self._disarm()  # the whole request is in: the application's time is --timeout's business
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        timeout = getattr(self.config, "read_timeout_s", None)
        if timeout:
            self._read_timer = self.loop.call_later(timeout, self._read_timed_out)
        self.reading[self] = None

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        self.reading.pop(self, None)

    def _read_timed_out(self) -> None:
        self._read_timer = None
        self.reading.pop(self, None)
        if self.transport.is_closing():
            return
        # 408 unless an answer to an earlier request on this connection is being written (it would be cut in two).
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(TIMEOUT_ANSWER)
        # The application waiting for the rest of the body sees the client gone (and answers nobody).
        self.transport.close()


@functools.cache
def _connection_cap(limit: int | None) -> int:
    """Open connections before the oldest one still sending its request is closed: under uvicorn's
    `limit_concurrency` (where new requests get 503) and under the file-descriptor limit, so that there is
    always a descriptor to accept the next connection with (a health check, say)."""
    cap = (limit or 1 << 30) - 8
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft != resource.RLIM_INFINITY:
            cap = min(cap, soft - 64)
    except (ImportError, OSError, ValueError):  # no such limit here (Windows)
        pass
    return max(cap, 8)


def uvicorn_config(app: FastAPI | str, settings: ServeSettings, *, log_level: str, workers: int = 1) -> _Config:
    config = _Config(
        app,
        factory=isinstance(app, str),
        workers=workers,
        log_level=log_level,
        http=_TimedHttpTools,
        loop="auto",  # uvloop where it is installed (the serve extra brings it, except on Windows), else asyncio
        lifespan="on",
        limit_concurrency=settings.max_connections,
        # Requests in flight get the drain bound, less the time left to stop a running batch and exit.
        timeout_graceful_shutdown=max(1, int(settings.drain_bound_s - STOP_JOIN_S - 1)),
        server_header=False,
        # A worker answers the parent's health pings only once it has imported torch and the task code,
        # which takes longer than uvicorn's 5 s on a busy machine (the parent would kill it, again and again).
        timeout_worker_healthcheck=60,
    )
    config.read_timeout_s = settings.read_timeout_s
    return config


def run_server(app: FastAPI | str, sock: socket.socket, settings: ServeSettings, **kw: Any) -> None:
    """Serve on a bound socket until SIGTERM / Ctrl-C. With `workers` > 1, `app` is the import string of an
    application factory, run in that many processes sharing the socket."""
    startup.resume()  # a server whose models run in processes of their own loaded none here
    config = uvicorn_config(app, settings, **kw)
    if config.workers > 1:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[sock]).run()
    else:
        _Server(config).run(sockets=[sock])


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a taken port is one clear line (uvicorn logs and exits 1)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it a
    # response written in two parts waits for the client's delayed ACK (40 ms a request on Linux).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
