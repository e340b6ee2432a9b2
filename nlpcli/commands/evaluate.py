"""`nlpcli evaluate TASK`: metrics of a trained model on a gold file (a table, or --json; --report FILE)."""

from __future__ import annotations

import json
from typing import Any

import typer

from .common import (
    DEVICE_HELP,
    PRECISION_HELP,
    UsageError,
    cli_errors,
    err_console,
    inference_options,
    print_note,
    print_table,
    task_argument,
)


@cli_errors
def evaluate(
    ctx: typer.Context,
    task: str = task_argument(),
    model: str = typer.Option(..., "--model", "-m", help="Checkpoint or training output directory.", metavar="DIR"),
    data: str = typer.Option(..., "--data", help="Gold file in any format the task reads.", metavar="PATH"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object of metrics on stdout, nothing else."),
    report: str | None = typer.Option(
        None,
        "--report",
        help="Also write the table to FILE: .csv, .md (Markdown) or .json (the table and every metric).",
        metavar="FILE",
    ),
    thresholds: str | None = typer.Option(
        None,
        "--thresholds",
        help="Comma-separated thresholds: the metrics at each, to pick one (ner: entity score; "
        "ie: start and end pointer probability; qa: pointer probability).",
        metavar="X,Y,...",
    ),
    errors: str | None = typer.Option(
        None,
        "--errors",
        help="Also write every false positive and false negative, with its text, to FILE as JSON Lines "
        "(ner, ie; qa: each wrong answer).",
        metavar="FILE",
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Inference batch size (default: the model's).", metavar="N"
    ),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP, metavar="DEVICE"),
    precision: str = typer.Option("auto", "--precision", help=PRECISION_HELP, metavar="PRECISION"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip and count malformed records."),
    fmt: str | None = typer.Option(
        None, "--format", help="Input format, when sniffing the file is not enough.", metavar="FORMAT"
    ),
) -> None:
    """Score a trained model on gold data: one table (ner, ie: per type P/R/F1/support, micro and macro rows;
    tab-separated rows when stdout is not a terminal, --json for every metric).

    Inference settings of the model may follow (`--threshold 0.4`, `--window 512`; `nlpcli info TASK`)."""
    from .. import api
    from ..data.io import check_output_file
    from ..registry import get_task
    from ..tables import render, report_format, threshold_report, write_report

    cls = get_task(task)
    overrides: dict[str, Any] = dict(inference_options(cls, ctx.args))
    if report is not None:
        if report_format(report) is None:
            raise UsageError(f"--report {report}: name a .csv, .md or .json file")
        check_output_file(report)  # before the model loads
    if errors is not None:
        if thresholds is not None:
            raise UsageError("--errors lists the errors at the model's own settings: leave out --thresholds")
        check_output_file(errors)
    options: dict[str, Any] = {"batch_size": batch_size, "skip_bad": skip_bad, "fmt": fmt}
    title = f"{task} on {data}"
    levels = _floats(thresholds) if thresholds is not None else None
    pipe = api.load(model, task=task, device=device, precision=precision, **overrides).pipeline
    print_note(pipe.precision_note)
    if levels is not None:
        rows = api.evaluate_thresholds(pipe, data, levels, **options)
        table = threshold_report(rows, cls.main_metric, title)
        metrics: dict[str, Any] = {"thresholds": rows}
    else:
        metrics = api.evaluate(pipe, data, **options, errors=errors)
        table = cls.report(metrics, title)
    if report is not None:
        write_report(table, report, metrics)
    if as_json:
        print(json.dumps(metrics, ensure_ascii=False))
    else:
        print_table(render(table))
    if report is not None:
        err_console.print(f"wrote the table to {report}", highlight=False)
    if errors is not None:
        err_console.print(f"wrote the false positives and negatives to {errors}", highlight=False)


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--thresholds: {text!r} is not a comma-separated list of numbers") from None
    if not values:
        raise UsageError("--thresholds: give at least one number")
    return values
