"""`nlpcli serve`: trained models behind HTTP; the work is in nlpcli/serve/."""

from __future__ import annotations

import os
import sys

import typer

from .common import DEVICE_HELP, PRECISION_HELP, cli_errors, err_console, print_note


@cli_errors
def serve(
    model: list[str] = typer.Option(
        ...,
        "--model",
        "-m",
        help="Checkpoint or training output directory, or NAME=DIR; repeat for several models.",
        metavar="DIR",
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface).", metavar="HOST"
    ),
    port: int = typer.Option(8000, "--port", help="Port to listen on (0: a free one, printed).", metavar="N"),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP, metavar="DEVICE"),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP, metavar="PRECISION"),
    threads: int | None = typer.Option(
        None, "--threads", help="Torch intra-op threads (default: torch's).", metavar="N"
    ),
    micro_batching: bool = typer.Option(
        True, "--micro-batching/--no-micro-batching", help="Batch the records of concurrent requests together."
    ),
    model_process: bool = typer.Option(
        False,
        "--model-process/--in-process",
        help="Run each model in a process of its own, so that answering HTTP and running the model do not take "
        "turns on one Python lock: faster with many clients when a core is free for it, slower for a lone "
        "client; the model's memory twice.",
    ),
    max_wait_ms: float = typer.Option(
        0.0, "--max-wait-ms", help="How long a batch waits for more requests (0: it takes what queued while busy)."
    ),
    max_batch: int = typer.Option(64, "--max-batch", help="Records in one micro-batch (requests are not split)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="The model's forward batch size.", metavar="N"),
    max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", help="Larger request bodies get 413."),
    max_records: int = typer.Option(256, "--max-records", help="More records in one request get 413."),
    max_record_chars: int = typer.Option(
        2_000, "--max-record-chars", help="A record with more characters gets 413 (split long texts).", metavar="N"
    ),
    max_request_chars: int = typer.Option(
        50_000, "--max-request-chars", help="A request with more characters gets 413.", metavar="N"
    ),
    max_batch_chars: int = typer.Option(
        2_000,
        "--max-batch-chars",
        help="Characters in one model call (at least --max-record-chars): bounds how long a request waits "
        "behind others; a larger request runs a slice per call, taking turns with later requests.",
        metavar="N",
    ),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds before an unanswered request gets 504."),
    drain_timeout: float | None = typer.Option(
        None, "--drain-timeout", help="SIGTERM exits within this many seconds (default: --timeout + 5).", metavar="S"
    ),
    read_timeout: float = typer.Option(
        10.0, "--read-timeout", help="Seconds to send a request's headers and body (then 408 and close).", metavar="S"
    ),
    max_connections: int = typer.Option(
        1000, "--max-connections", help="Open connections before new requests get 503.", metavar="N"
    ),
    allowed_host: list[str] = typer.Option(
        [],
        "--allowed-host",
        help="A Host name to answer besides the bound address (loopback names for a loopback bind); "
        "repeat; '*' for any. Other names get 421 (DNS rebinding).",
        metavar="NAME",
    ),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar="NLPCLI_API_KEY",
        help="Require 'Authorization: Bearer KEY' on every route but /health and /ready (401 otherwise). "
        "Prefer the environment variable: a command line is visible to other users.",
        metavar="KEY",
        show_envvar=True,
    ),
    workers: int = typer.Option(1, "--workers", help="Processes behind the one port, each with its own models."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn's: critical, error, warning, info, debug."),
) -> None:
    """Answer predictions over HTTP: POST a record (or a list) to /predict (or /predict/NAME with several
    models), as `nlpcli predict` reads it, and get back what it writes. GET /health (liveness), /ready
    (200 once warmed up), /metrics (Prometheus), /info; docs at /docs.

    Each model is loaded once per worker and warmed up on its task's example; the records of concurrent
    requests are micro-batched. ner, ie and qa answer as `nlpcli predict` (a score may differ in its last
    decimal with other batching); lm and chat sample per batch, so their replies may differ. SIGTERM stops
    taking requests, answers those in flight, and exits 0 within --drain-timeout.
    """
    from ..device import set_threads
    from ..errors import ConfigError
    from ..extras import require

    for module in ("fastapi", "uvicorn", "httptools"):
        require(module, "serve", "nlpcli serve")
    from ..serve import ServedModel, ServeSettings
    from ..serve import serve as run

    for name, value in (
        ("--max-batch", max_batch),
        ("--max-body-bytes", max_body_bytes),
        ("--max-records", max_records),
        ("--max-record-chars", max_record_chars),
        ("--max-request-chars", max_request_chars),
        ("--max-batch-chars", max_batch_chars),
        ("--max-connections", max_connections),
        ("--workers", workers),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1")
    if timeout <= 0 or max_wait_ms < 0:
        raise ConfigError("--timeout must be positive and --max-wait-ms not negative")
    if read_timeout <= 0 or (drain_timeout is not None and drain_timeout <= 0):
        raise ConfigError("--read-timeout and --drain-timeout must be positive")
    if api_key is not None and not api_key.strip():
        raise ConfigError("--api-key (or NLPCLI_API_KEY) is empty")
    set_threads(threads)
    settings = ServeSettings(
        micro_batching=micro_batching,
        model_process=model_process,
        max_wait_ms=max_wait_ms,
        max_batch=max_batch,
        batch_size=batch_size,
        max_body_bytes=max_body_bytes,
        max_records=max_records,
        max_record_chars=max_record_chars,
        max_request_chars=max_request_chars,
        max_batch_chars=max(max_batch_chars, max_record_chars),
        timeout_s=timeout,
        drain_s=drain_timeout,
        read_timeout_s=read_timeout,
        max_connections=max_connections,
        api_key=api_key,
    )

    def listening(url: str, models: dict[str, ServedModel]) -> None:
        for note in dict.fromkeys(m.pipe.precision_note for m in models.values()):
            print_note(note)
        served = ", ".join(f"{n} ({m.task}, {m.path})" for n, m in models.items())
        err_console.print(f"serving {served} at {url} (docs: {url}/docs)", highlight=False)

    run(
        model,
        host=host,
        port=port,
        device=device,
        precision=precision,
        settings=settings,
        log_level=log_level,
        workers=workers,
        threads=threads,
        allowed_hosts=allowed_host,
        on_listen=listening,
    )
    # Drained and stopped: leave now. The interpreter's own teardown (collecting a loaded model's objects)
    # takes seconds on a busy machine, past the drain bound an orchestrator gives before SIGKILL.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
