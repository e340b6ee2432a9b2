"""Metrics as rich tables (returned, never printed: the commands print them)."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table

PRF_KEYS = ("precision", "recall", "f1", "gold", "predicted", "tp", "per_type")


def metrics_table(metrics: dict[str, Any], title: str) -> Table:
    """One row per metric."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, _cell(value))
    return table


def prf_table(metrics: dict[str, Any], title: str, label: str = "type") -> RenderableType:
    """Per-type precision/recall/F1 rows, the micro row, then any other metrics as lines."""
    table = Table(title=title)
    table.add_column(label)
    for col in ("precision", "recall", "f1", "gold", "predicted"):
        table.add_column(col, justify="right")
    for name, m in metrics.get("per_type", {}).items():
        table.add_row(name, *_prf_cells(m))
    table.add_row("[bold]micro[/]", *_prf_cells(metrics), end_section=True)
    rest = {k: v for k, v in metrics.items() if k not in PRF_KEYS}
    return Group(table, *(f"{k}: {_cell(v)}" for k, v in rest.items()))


def _prf_cells(m: dict[str, Any]) -> list[str]:
    return [
        f"{m['precision']:.4f}",
        f"{m['recall']:.4f}",
        f"{m['f1']:.4f}",
        str(m.get("gold", "")),
        str(m.get("predicted", "")),
    ]


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def threshold_table(rows: list[dict[str, Any]], main_metric: str, title: str) -> Table:
    """One row per threshold: precision, recall, F1 (and the task's main metric when it is another)."""
    cols = ["precision", "recall", "f1"] + ([main_metric] if main_metric not in ("precision", "recall", "f1") else [])
    table = Table(title=title)
    table.add_column("threshold", justify="right")
    for col in cols:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(_cell(row["threshold"]), *(_cell(row.get(c, "")) for c in cols))
    return table
