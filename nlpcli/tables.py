"""Metrics as tables: one `Report` (title, columns, rows, notes) per evaluation, rendered for the terminal
(rich, returned and never printed: the commands print), as plain tab-separated rows for pipes, or written as
CSV, Markdown or JSON (`--report FILE`). Name columns are never wrapped (`add_name_column`)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.cells import cell_len
from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

PRF_KEYS = ("precision", "recall", "f1", "gold", "predicted", "tp", "per_type", "macro")
PRF_COLUMNS = ["precision", "recall", "f1", "support", "predicted", "correct"]
REPORT_SUFFIXES = (".csv", ".md", ".json")


@dataclass
class Report:
    """A metrics table: `rows` hold the cells under `columns`; `notes` are the other metrics (a caption)."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    notes: dict[str, Any] = field(default_factory=dict)
    bold_from: int | None = None  # rows from here on are summary rows (micro, macro)


def prf_report(metrics: dict[str, Any], title: str, label: str = "type") -> Report:
    """Per-type (per-predicate) precision, recall, F1 and support (gold count), then the micro row (over all
    items) and the macro row (the unweighted mean over types, as CLUENER ranks)."""
    rows = [[name, *_prf_cells(m)] for name, m in metrics.get("per_type", {}).items()]
    summary = len(rows)
    rows.append(["micro", *_prf_cells(metrics)])
    if "macro" in metrics:
        m = metrics["macro"]
        rows.append(["macro", m["precision"], m["recall"], m["f1"], metrics.get("gold", ""), "", ""])
    notes = {k: v for k, v in metrics.items() if k not in PRF_KEYS}
    return Report(title, [label, *PRF_COLUMNS], rows, notes, summary)


def metrics_report(metrics: dict[str, Any], title: str) -> Report:
    """One row per metric (nested values as dotted names)."""
    return Report(title, ["metric", "value"], [[k, v] for k, v in _flat(metrics).items()])


def threshold_report(rows: list[dict[str, Any]], main_metric: str, title: str) -> Report:
    """One row per threshold: precision, recall, F1 (and the task's main metric when it is another)."""
    cols = ["precision", "recall", "f1"] + ([main_metric] if main_metric not in ("precision", "recall", "f1") else [])
    return Report(title, ["threshold", *cols], [[row["threshold"], *(row.get(c, "") for c in cols)] for row in rows])


def _prf_cells(m: dict[str, Any]) -> list[Any]:
    return [m["precision"], m["recall"], m["f1"], m.get("gold", ""), m.get("predicted", ""), m.get("tp", "")]


def _flat(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value
    return out


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def render(report: Report) -> Table:
    """The report as one rich table; the other metrics go into its caption."""
    notes = "; ".join(f"{k}: {_cell(v)}" for k, v in _flat(report.notes).items())
    table = Table(title=escape(report.title), caption=escape(notes) or None)
    add_name_column(table, report.columns[0], [_cell(row[0]) for row in report.rows])
    for col in report.columns[1:]:
        table.add_column(col, justify="right", overflow="fold")
    for i, row in enumerate(report.rows):
        cells = [escape(_cell(v)) for v in row]
        if report.bold_from is not None and i >= report.bold_from:
            cells[0] = f"[bold]{cells[0]}[/]"
        table.add_row(*cells, end_section=report.bold_from is not None and i == report.bold_from - 1)
    return table


def plain_rows(table: Table) -> str:
    """The table as text for scripts (`| grep`, `| cut -f2`): a header row, then one tab-separated row per
    table row; whole cells (no wrapping, no box characters, no title or caption)."""
    columns = table.columns
    lines = ["\t".join(_plain(c.header) for c in columns)]
    lines += ["\t".join(_plain(cell) for cell in row) for row in zip(*(list(c.cells) for c in columns))]
    return "\n".join(lines) + "\n"


def _plain(cell: RenderableType) -> str:
    text = Text.from_markup(cell).plain if isinstance(cell, str) else cell.plain if isinstance(cell, Text) else ""
    return " ".join(text.split())  # a tab or a newline inside a cell would break the row


def add_name_column(table: Table, header: str, names: list[str], **options: Any) -> None:
    """A column of names (models, runs, options) that is never wrapped or cut: as wide as its longest name,
    so on a narrow terminal the other columns (`overflow="fold"`) give way."""
    width = max([cell_len(header), *map(cell_len, names)])
    table.add_column(header, no_wrap=True, min_width=width, **options)


def metrics_table(metrics: dict[str, Any], title: str) -> Table:
    return render(metrics_report(metrics, title))


def prf_table(metrics: dict[str, Any], title: str, label: str = "type") -> Table:
    return render(prf_report(metrics, title, label))


def threshold_table(rows: list[dict[str, Any]], main_metric: str, title: str) -> Table:
    return render(threshold_report(rows, main_metric, title))


def report_text(report: Report, fmt: str, metrics: dict[str, Any] | None = None) -> str:
    """The report as CSV, Markdown or JSON text (`fmt`: csv | md | json); JSON adds the whole `metrics`."""
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(report.columns)
        writer.writerows([[round(v, 6) if isinstance(v, float) else v for v in row] for row in report.rows])
        return buf.getvalue()
    if fmt == "md":
        lines = [f"**{report.title}**", "", "| " + " | ".join(report.columns) + " |"]
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(report.columns) - 1)) + "|")
        lines += ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |" for row in report.rows]
        if report.notes:
            lines += ["", "; ".join(f"{k}: {_cell(v)}" for k, v in _flat(report.notes).items())]
        return "\n".join(lines) + "\n"
    if fmt == "json":
        obj = {
            "title": report.title,
            "columns": report.columns,
            "rows": [dict(zip(report.columns, row)) for row in report.rows],
            "metrics": metrics if metrics is not None else {},
        }
        return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"
    raise ValueError(f"unknown report format {fmt!r}")


def report_format(path: str | Path) -> str | None:
    """csv | md | json by the file's suffix; None for another suffix."""
    suffix = Path(path).suffix.lower()
    return suffix[1:] if suffix in REPORT_SUFFIXES else None


def write_report(report: Report, path: str | Path, metrics: dict[str, Any] | None = None) -> None:
    """Write the report atomically, in the format its suffix names (.csv, .md or .json)."""
    from .data.io import atomic_output

    fmt = report_format(path)
    if fmt is None:
        raise ValueError(f"{path}: a report is .csv, .md or .json")
    with atomic_output(path) as f:
        f.write(report_text(report, fmt, metrics))
