"""A prediction request's body -> validated records, or the HTTP error that says what is wrong with it.

The checks run in the order a client fixes them: content type (415), size (413), JSON (400), shape and
count (422, 413), then each record against the task (422, with the task's own one-line message, as
`nlpcli predict` prints it, the record's position in the request standing for the line number). JSON and
records are read by `records.jsonl`, as `nlpcli predict` reads its lines.
"""

from __future__ import annotations

from typing import Any

from ..errors import DataError
from ..records.jsonl import check_record, parse_json
from ..records.task import RecordTask

SOURCE = "request"  # stands for the file name in messages: "request:2: missing string field 'text'"


class Problem(Exception):
    """An HTTP error answer: status and a one-line message (sent as {"detail": message})."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def check_content_type(content_type: str | None) -> None:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        got = f"got {media!r}" if media else "none given"
        raise Problem(415, f"send the records as JSON with Content-Type: application/json ({got})")


def check_declared_size(content_length: str | None, limit: int) -> None:
    """Refuse a body whose Content-Length is over the limit before reading any of it."""
    if content_length is not None and content_length.strip().isdigit() and int(content_length) > limit:
        raise Problem(413, too_large(int(content_length), limit))


def too_large(size: int, limit: int) -> str:
    return f"request body of {size} bytes is over the limit of {limit} bytes (--max-body-bytes)"


def parse_records(body: bytes, task: RecordTask, max_records: int) -> tuple[list[dict[str, Any]], bool]:
    """The records of a body (one JSON object, or a list of them) and whether it was one object."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Problem(400, f"{SOURCE}: not UTF-8 text") from None
    try:
        data = parse_json(text, SOURCE)
    except DataError as e:  # malformed, nested too deeply, a lone surrogate
        raise Problem(400, str(e)) from None
    single = isinstance(data, dict)
    if not single and not isinstance(data, list):
        raise Problem(422, f"{SOURCE}: expected a JSON object (one record) or a list of them")
    records: list[Any] = [data] if single else data
    if len(records) > max_records:
        raise Problem(413, f"{len(records)} records in one request; at most {max_records} (--max-records)")
    try:
        return [check_record(record, SOURCE, i, task) for i, record in enumerate(records, 1)], single
    except DataError as e:
        raise Problem(422, str(e)) from None
