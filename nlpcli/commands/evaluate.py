"""`nlpcli evaluate TASK`: metrics of a trained model on a gold file (a table, or --json)."""

from __future__ import annotations

import json

import typer

from .common import TASK_HELP, cli_errors, out_console


@cli_errors
def evaluate(
    task: str = typer.Argument(..., help=TASK_HELP),
    model: str = typer.Option(..., "--model", "-m", help="Checkpoint or training output directory."),
    data: str = typer.Option(..., "--data", help="Gold file in any format the task reads."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object of metrics on stdout, nothing else."),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    device: str = typer.Option("auto", "--device"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip and count malformed records."),
    fmt: str | None = typer.Option(None, "--format"),
) -> None:
    """Score a trained model on gold data: micro P/R/F1 and a per-type table."""
    from .. import api
    from ..registry import get_task

    metrics = api.evaluate(task, model, data, device, batch_size, skip_bad, fmt)
    if as_json:
        print(json.dumps(metrics, ensure_ascii=False))
        return
    out_console.print(get_task(task).render_metrics(metrics, f"{task} on {data}"))
