"""What this package needs of a task: the facts it declares about its records, and its prediction loop.

A structural type, so that the records layer stays below the tasks (`tasks.base.Pipeline` fits it)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, Protocol


class RecordTask(Protocol):
    name: ClassVar[str]
    # The input fields read from table columns (and from plain text: the first), with their kind of cell:
    # "text", "list" or "words" (see `tasks.base.Pipeline.table_fields`).
    table_fields: ClassVar[dict[str, str]]
    config: Any
    device: Any

    def validate_record(self, record: dict[str, Any], path: str, line: int) -> None: ...

    def predict_records(
        self, records: Iterable[dict[str, Any]], batch_size: int | None = None
    ) -> Iterator[dict[str, Any]]: ...
