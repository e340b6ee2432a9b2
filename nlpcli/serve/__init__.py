"""`nlpcli serve`: trained models behind HTTP (FastAPI + uvicorn), micro-batching concurrent requests.

    from nlpcli.serve import ServeSettings, create_app, load_models
    app = create_app(load_models(["runs/ner", "reader=runs/qa"]), ServeSettings(max_wait_ms=2))

`serve` is what the command runs: load the models once, bind, answer until SIGTERM, drain, return.
"""

from __future__ import annotations

from collections.abc import Callable

from .app import ServeSettings, create_app
from .models import ServedModel, load_models

__all__ = ["ServeSettings", "ServedModel", "create_app", "load_models", "serve"]


def serve(
    specs: list[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "auto",
    precision: str = "auto",
    settings: ServeSettings | None = None,
    log_level: str = "info",
    on_listen: Callable[[str, dict[str, ServedModel]], None] | None = None,
) -> None:
    """Serve the models of `specs` (`DIR` or `NAME=DIR`) on host:port (0: a free port) until SIGTERM."""
    from .runner import bind, run_server

    settings = settings or ServeSettings()
    models = load_models(specs, device, precision)
    sock = bind(host, port)
    if on_listen is not None:
        addr = sock.getsockname()
        shown = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
        on_listen(f"http://{shown}:{addr[1]}", models)
    # In-flight requests get their timeout to finish, and a little more to be written out.
    run_server(create_app(models, settings), sock, drain_s=settings.timeout_s + 5, log_level=log_level)
