"""`nlpcli report RUN_DIR [RUN_DIR ...]`: training curves to a PNG and a summary table (several runs compared)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ..tables import add_name_column
from .common import cli_errors, err_console, print_table


@cli_errors
def report(
    runs: list[str] = typer.Argument(
        ...,
        help="Training output directories (their train_log.jsonl); several are drawn on the same plots.",
        metavar="RUN_DIR...",
    ),
    output: str | None = typer.Option(
        None,
        "--output",
        "-o",
        help="The PNG to write (default: RUN_DIR/report.png for one run, report.png here for several).",
        metavar="FILE.png",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (one object per run)."),
) -> None:
    """Draw training loss, dev metric, learning rate and speed over steps and over training time, the kept (best)
    checkpoint marked, and summarise each run (tab-separated rows when stdout is not a terminal; --json for one
    object)."""
    from ..data.io import check_output_file
    from ..report import plot_runs, read_run, write_png

    png = Path(output) if output else (Path(runs[0]) / "report.png" if len(runs) == 1 else Path("report.png"))
    check_output_file(png)
    logs = [read_run(r) for r in runs]
    write_png(plot_runs(logs), png)
    rows = [log.summary() for log in logs]
    if as_json:
        print(json.dumps({"png": str(png), "runs": rows}, ensure_ascii=False))
        return
    table = Table(title="training runs")
    add_name_column(table, "run", [r["run"] for r in rows])
    for col in ("task", "steps", "time", "speed", "last loss", "kept (best)", "at step", "stopped by"):
        table.add_column(col, justify="left" if col in ("task", "stopped by") else "right", overflow="fold")
    for r in rows:
        best = f"{r['main_metric']} {r['best']:.4f}" if isinstance(r["best"], float) else "-"
        table.add_row(
            escape(r["run"]),
            r["task"] or "?",
            str(r["steps"]),
            _clock(r["elapsed_s"]),
            f"{r['tokens_per_s']:,.0f} {r['speed_unit']}/s" if r["tokens_per_s"] is not None else "-",
            f"{r['last_loss']:.4f}" if r["last_loss"] is not None else "-",
            best,
            str(r["best_step"] if r["best_step"] is not None else "-"),
            str(r["stopped_by"]),
        )
    print_table(table)
    for r in rows:
        if r["unreadable_lines"]:
            err_console.print(f"{r['run']}: skipped {r['unreadable_lines']} log line(s) cut short", highlight=False)
    err_console.print(f"wrote {png}", highlight=False)


def _clock(seconds: float | None) -> str:
    from ..card import clock

    return clock(seconds) if seconds is not None else "-"
