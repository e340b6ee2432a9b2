"""Predictions written out: JSON Lines to a file or stdout (streamed), or a table file; atomically, so an
output file is replaced only when every record is written, and never by the output of an input that held
no good record."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from ..data.io import atomic_output, os_reason
from ..errors import DataError
from .formats import JSONL
from .jsonl import dumps
from .stats import PredictStats
from .tables import columns_of, write_table


@dataclass
class Predictions:
    """Predicted records as they come, and what a writer needs to know of their source: its name, the
    counts, how far the single pass over it has come (`position` of `total`: bytes of a file, rows of a
    table; `total` None when unknown), and for a table its columns, BOM and columns of lists."""

    records: Iterator[dict[str, Any]]
    source: str
    stats: PredictStats
    position: Callable[[], int]
    total: int | None = None
    columns: list[str] = field(default_factory=list)
    bom: bool = False
    lists: frozenset[str] = frozenset()

    def check_not_empty(self) -> None:
        """An input with no good record is an error (raised before an output file is swapped in): an empty
        one, or one whose every record was skipped as bad."""
        name = "stdin" if self.source == "-" else self.source
        if self.stats.read == 0 and self.stats.skipped == 0:
            raise DataError(name, "no input records (the input is empty)")
        if self.stats.read == 0:
            first = self.stats.reasons[0] if self.stats.reasons else ""
            raise DataError(name, f"no input records: all {self.stats.skipped} were bad and skipped (first: {first})")


def write(predictions: Predictions, output_path: str, fmt: str, advance: Callable[[], None] = lambda: None) -> None:
    """Write predictions in `fmt` to `output_path` ("-": stdout); `advance` is called after each record."""
    if fmt == JSONL:
        write_jsonl(predictions, output_path, advance)
    else:
        rows: list[dict[str, Any]] = []
        for rec in predictions.records:
            rows.append(rec)
            advance()
        predictions.check_not_empty()
        write_table(rows, columns_of(rows, predictions.columns), output_path, fmt, predictions.bom, predictions.lists)


def write_jsonl(predictions: Predictions, output_path: str, advance: Callable[[], None] = lambda: None) -> None:
    """One strict JSON line per record; on stdout each is flushed as it comes (a reader waits for it)."""
    target = "stdout" if output_path == "-" else output_path
    sink = nullcontext(sys.stdout) if output_path == "-" else atomic_output(output_path)
    with sink as out:
        for rec in predictions.records:
            try:
                line = dumps(rec)
            except (TypeError, ValueError) as e:
                raise DataError(target, f"cannot write a record as JSON ({e})") from None
            try:
                out.write(line + "\n")
                if output_path == "-":
                    out.flush()
            except BrokenPipeError:
                raise  # the reader is gone (`| head`): a quiet exit, see cli_errors
            except OSError as e:
                raise DataError(target, f"cannot write ({os_reason(e)})") from None
            advance()
        predictions.check_not_empty()


def write_records(path: str, records: Iterator[Any] | list[Any]) -> None:
    """Records as strict JSON Lines into a file, atomically (e.g. `evaluate --errors`)."""
    with atomic_output(path) as out:
        for record in records:
            out.write(dumps(record) + "\n")
