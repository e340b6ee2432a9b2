"""An input opened for one pass: a file or stdin in a line format (JSON Lines, plain text), or a table file,
and the records read from its lines."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from typing import Any

from ..errors import DataError
from .formats import JSONL, LINE_FORMATS, TABLE_FORMATS, TEXT, format_of
from .jsonl import parse_record
from .lines import STALL, STALL_LINE, LineReader, open_lines
from .stats import PredictStats, count_skipped
from .tables import Table, read_table
from .task import RecordTask
from .text import looks_like_json, text_parser

# One line of input -> a record the task accepts (a DataError naming source and line otherwise).
LineParser = Callable[[str, str, int, RecordTask], dict[str, Any]]


@dataclass
class Source:
    """An opened input: `path` ("-" for stdin), its format, and its lines (JSON Lines, text) or its table.
    `reader` tells how far a single pass has read (progress), where the lines come from a file or stdin."""

    path: str
    fmt: str
    lines: Iterable[str] = ()
    reader: LineReader | None = None
    table: Table | None = None

    def parser(self, task: RecordTask) -> LineParser:
        """How a line of this source becomes a record of the task."""
        return text_parser(task, self.path) if self.fmt == TEXT else parse_record


@contextmanager
def open_source(
    path: str, fmt: str | None = None, record: dict[str, Any] | None = None, stall_s: float | None = None
) -> Iterator[Source]:
    """Open an input once. Its format is `fmt`, else the one its suffix names (JSON Lines for other names);
    stdin is JSON Lines, or plain text when its first non-blank line does not start a JSON object.
    `record`: one record given on the command line instead of a file (read as stdin's line 1). With
    `stall_s`, stdin marks where it stalls (see `lines.LineReader`)."""
    if record is not None:
        yield Source(path, JSONL, [json.dumps(record, ensure_ascii=False)])
        return
    fmt = fmt or (None if path == "-" else format_of(path, JSONL))
    if fmt in TABLE_FORMATS:
        if path == "-":
            raise DataError("stdin", f"a {fmt} table is read from a file: give --input FILE")
        yield Source(path, fmt, table=read_table(path, fmt))
        return
    with open_lines(path, stall_s) as reader:
        lines: Iterable[str] = reader
        if fmt not in LINE_FORMATS:
            fmt, lines = _sniffed(iter(reader))
        yield Source(path, fmt, lines, reader)


def _sniffed(lines: Iterator[str]) -> tuple[str, Iterator[str]]:
    """The format of lines whose source does not say (JSON Lines or plain text), from the first non-blank
    line, and the lines again from the start."""
    held: list[str] = []
    for line in lines:
        held.append(line)
        if line is not STALL_LINE and line.strip():
            return (JSONL if looks_like_json(line) else TEXT), chain(held, lines)
    return JSONL, iter(held)  # no line at all: an empty input, refused as one


def read_records(
    lines: Iterable[str],
    path: str,
    task: RecordTask,
    skip_bad: bool,
    stats: PredictStats,
    parse: LineParser = parse_record,
) -> Iterator[dict[str, Any]]:
    """The records of input lines (JSON Lines by default), checked by the task; bad lines raise or, with
    `skip_bad`, are counted. Where the input stalls (STALL_LINE), a STALL marker is passed on for the
    prediction loop."""
    lineno = 0
    for line in lines:
        if line is STALL_LINE:
            yield STALL
            continue
        lineno += 1
        if not line.strip():
            continue
        try:
            record = parse(line, path, lineno, task)
        except DataError as err:
            count_skipped(stats, err, skip_bad)
            continue
        stats.read += 1
        yield record
