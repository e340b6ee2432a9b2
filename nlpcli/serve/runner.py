"""Running the application under uvicorn, and stopping it cleanly.

SIGTERM (or Ctrl-C) stops taking connections, lets the requests in flight get their answers (up to the
request timeout and a little), stops the batcher threads, and returns: `nlpcli serve` exits 0. Uvicorn by
itself re-raises the signal once it has shut down, which would end the process with the signal's status
(and, under the CLI's handler, 143); a server that drained as asked has done nothing wrong.
"""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI

from ..errors import ConfigError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


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


def run_server(app: FastAPI, sock: socket.socket, *, drain_s: float, log_level: str = "info") -> None:
    """Serve on a bound socket until SIGTERM / Ctrl-C; `drain_s` bounds how long requests in flight may take."""
    config = uvicorn.Config(
        app,
        log_level=log_level,
        http="h11",
        loop="asyncio",
        lifespan="on",
        timeout_graceful_shutdown=max(1, round(drain_s)),
        server_header=False,
    )
    server = _Server(config)
    server.run(sockets=[sock])


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
