"""`nlpcli serve`: trained models behind HTTP; the work is in nlpcli/serve/."""

from __future__ import annotations

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
    max_wait_ms: float = typer.Option(
        0.0, "--max-wait-ms", help="How long a batch waits for more requests (0: it takes what queued while busy)."
    ),
    max_batch: int = typer.Option(64, "--max-batch", help="Records in one micro-batch (requests are not split)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="The model's forward batch size.", metavar="N"),
    max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", help="Larger request bodies get 413."),
    max_records: int = typer.Option(256, "--max-records", help="More records in one request get 413."),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds before an unanswered request gets 504."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn's: critical, error, warning, info, debug."),
) -> None:
    """Answer predictions over HTTP: POST a record (or a list) to /predict (or /predict/NAME with several
    models), as `nlpcli predict` reads it, and get back what it writes. GET /health, /info; docs at /docs.

    Each model is loaded once; the records of concurrent requests are micro-batched. ner, ie and qa answer
    exactly as `nlpcli predict`; lm and chat sample per batch, so their replies may differ. SIGTERM stops
    taking requests, answers those in flight, and exits 0.
    """
    from ..device import set_threads
    from ..errors import ConfigError
    from ..serve import ServedModel, ServeSettings
    from ..serve import serve as run

    for name, value in (
        ("--max-batch", max_batch),
        ("--max-body-bytes", max_body_bytes),
        ("--max-records", max_records),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1")
    if timeout <= 0 or max_wait_ms < 0:
        raise ConfigError("--timeout must be positive and --max-wait-ms not negative")
    set_threads(threads)
    settings = ServeSettings(
        micro_batching=micro_batching,
        max_wait_ms=max_wait_ms,
        max_batch=max_batch,
        batch_size=batch_size,
        max_body_bytes=max_body_bytes,
        max_records=max_records,
        timeout_s=timeout,
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
        on_listen=listening,
    )
