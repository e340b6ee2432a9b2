"""`nlpcli evaluate TASK`: metrics of a trained model on a gold file (a table, or --json)."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from .common import cli_errors, out_console


@cli_errors
def evaluate(
    task: str = typer.Argument(..., help="The task of the model."),
    model: str = typer.Option(..., "--model", "-m", help="Checkpoint or training output directory."),
    data: str = typer.Option(..., "--data", help="Gold file in any format the task reads."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object of metrics on stdout, nothing else."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    device: str = typer.Option("auto", "--device"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip and count malformed records."),
    fmt: Optional[str] = typer.Option(None, "--format"),
) -> None:
    """Score a trained model on gold data: micro P/R/F1 and a per-type table."""
    from .. import api

    metrics = api.evaluate(task, model, data, device, batch_size, skip_bad, fmt)
    if as_json:
        print(json.dumps(metrics, ensure_ascii=False))
        return
    if "precision" not in metrics:  # tasks without P/R/F1 (e.g. lm: NLL and perplexity)
        table = Table(title=f"{task} on {data}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in metrics.items():
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
        out_console.print(table)
        return
    table = Table(title=f"{task} on {data}")
    table.add_column("type")
    for col in ("precision", "recall", "f1", "gold", "predicted"):
        table.add_column(col, justify="right")
    for name, m in metrics.get("per_type", {}).items():
        table.add_row(name, *_cells(m))
    table.add_row("[bold]micro[/]", *_cells(metrics), end_section=True)
    out_console.print(table)
    for key, value in metrics.items():
        if key not in ("per_type", "precision", "recall", "f1", "gold", "predicted", "tp"):
            out_console.print(f"{key}: {value}", highlight=False)


def _cells(m: dict) -> list[str]:
    return [f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m.get("gold", "")), str(m.get("predicted", ""))]
