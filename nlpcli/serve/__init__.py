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
    workers: int = 1,
    threads: int | None = None,
    allowed_hosts: list[str] | None = None,
    on_listen: Callable[[str, dict[str, ServedModel]], None] | None = None,
) -> None:
    """Serve the models of `specs` (`DIR` or `NAME=DIR`) on host:port (0: a free port) until SIGTERM.

    Host names answered: the bound ones (loopback names for a loopback address) and `allowed_hosts`
    (`"*"`: any). `workers` > 1 runs that many processes behind the one port, each with its own models."""
    import dataclasses
    import json
    import os

    from .app import SETTINGS_ENV
    from .guard import default_hosts
    from .runner import bind, run_server

    settings = dataclasses.replace(settings or ServeSettings())
    settings.allowed_hosts = [*default_hosts(host), *(allowed_hosts or [])]
    # in this process too: a bad model is one line before any worker starts
    models = load_models(specs, device, precision)
    sock = bind(host, port)
    if on_listen is not None:
        addr = sock.getsockname()
        shown = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
        on_listen(f"http://{shown}:{addr[1]}", models)
    if workers <= 1:
        run_server(create_app(models, settings), sock, settings, log_level=log_level)
        return
    del models  # each worker loads its own
    conf = {
        "specs": specs,
        "device": device,
        "precision": precision,
        "threads": threads,
        "settings": dataclasses.asdict(settings),
    }
    os.environ[SETTINGS_ENV] = json.dumps(conf)
    run_server("nlpcli.serve.app:app_from_env", sock, settings, log_level=log_level, workers=workers)
