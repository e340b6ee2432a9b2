"""`nlpcli evaluate TASK`: metrics of a trained model on a gold file (a table, or --json)."""

from __future__ import annotations

import json
from typing import Any

import typer

from ..tables import threshold_table
from .common import TASK_HELP, cli_errors, inference_options, out_console


@cli_errors
def evaluate(
    ctx: typer.Context,
    task: str = typer.Argument(..., help=TASK_HELP),
    model: str = typer.Option(..., "--model", "-m", help="Checkpoint or training output directory."),
    data: str = typer.Option(..., "--data", help="Gold file in any format the task reads."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object of metrics on stdout, nothing else."),
    thresholds: str | None = typer.Option(
        None,
        "--thresholds",
        help="Comma-separated thresholds: the metrics at each, to pick one (ner: entity score; "
        "ie: start and end pointer probability; qa: pointer probability).",
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Inference batch size (default: the model's)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N | mps"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip and count malformed records."),
    fmt: str | None = typer.Option(None, "--format", help="Input format, when sniffing the file is not enough."),
) -> None:
    """Score a trained model on gold data: micro P/R/F1 and a per-type table.

    Inference settings of the model may follow (`--threshold 0.4`, `--max-len 512`; `nlpcli info TASK`)."""
    from .. import api
    from ..registry import get_task

    cls = get_task(task)
    overrides: dict[str, Any] = dict(inference_options(cls, ctx.args))
    options: dict[str, Any] = {
        "task": task,
        "device": device,
        "batch_size": batch_size,
        "skip_bad": skip_bad,
        "fmt": fmt,
    }
    if thresholds is not None:
        pipe = api.load(model, task=task, device=device, **overrides)
        rows = api.evaluate_thresholds(pipe, data, _floats(thresholds), **options)
        if as_json:
            print(json.dumps({"thresholds": rows}, ensure_ascii=False))
            return
        out_console.print(threshold_table(rows, cls.main_metric, f"{task} on {data}"))
        return
    metrics = api.evaluate(model, data, **options, **overrides)
    if as_json:
        print(json.dumps(metrics, ensure_ascii=False))
        return
    out_console.print(cls.render_metrics(metrics, f"{task} on {data}"))


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"--thresholds: {text!r} is not a comma-separated list of numbers") from None
    if not values:
        raise typer.BadParameter("--thresholds: give at least one number")
    return values
