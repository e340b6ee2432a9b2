"""Plain text in: one record per line, for tasks whose input record is one text (ner, ie: `{"text": line}`)
or one keyword set (lm: the words of the line, separated by spaces, as `generate --input` reads them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import DataError
from .lines import has_bad_bytes
from .task import RecordTask


def looks_like_json(line: str) -> bool:
    """Whether the first non-blank line of an input reads as JSON Lines (a JSON object) rather than text."""
    return line.lstrip().startswith("{")


def text_parser(task: RecordTask, path: str) -> Callable[[str, str, int, RecordTask], dict[str, Any]]:
    """The line parser of plain text for the task; a DataError saying what the task reads when a line of
    text cannot be one of its records."""
    (field, kind), *others = task.table_fields.items()
    if others or kind not in ("text", "words"):
        needs = " and ".join(task.table_fields)
        raise DataError(
            path,
            f"plain text is one text per line, but a {task.name} record needs {needs}: give JSON Lines or a table",
        )

    def parse(line: str, source: str, lineno: int, task: RecordTask) -> dict[str, Any]:
        if has_bad_bytes(line):
            raise DataError(source, "not UTF-8 text", lineno)
        text = line.removesuffix("\n")
        record: dict[str, Any] = {field: text.split() if kind == "words" else text}
        task.validate_record(record, source, lineno)
        return record

    return parse
