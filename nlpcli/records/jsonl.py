"""JSON records: one line of JSON Lines (or a request body) -> a record the task accepts, with a one-line
error naming file and line otherwise; records -> strict JSON text (no NaN, every cell type a table holds)."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import re
from typing import Any

from ..errors import DataError
from .lines import has_bad_bytes
from .task import RecordTask

_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_json(text: str, path: str, line: int | None = None) -> Any:
    """One JSON value; a DataError naming `path` and `line` (or, for a whole document, the position in it)
    when it is malformed, nested deeper than the parser goes, or holds a lone surrogate (`"\\ud800"` is
    valid JSON but no text: it cannot be written as UTF-8)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        where = "" if line is not None else f" at line {e.lineno} column {e.colno}"
        raise DataError(path, f"malformed JSON ({e.msg}{where})", line) from None
    except RecursionError:
        raise DataError(path, "malformed JSON (nested too deeply)", line) from None
    if "\\u" in text or _SURROGATE.search(text):
        lone = _lone_surrogate(value)
        if lone is not None:
            raise DataError(path, f"not Unicode text (a lone surrogate \\u{ord(lone):04x})", line)
    return value


def _lone_surrogate(value: Any) -> str | None:
    """The first lone surrogate in any string of a JSON value (walked without recursion: values come as
    deep as the parser allows)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            found = _SURROGATE.search(v)
            if found:
                return found.group()
        elif isinstance(v, dict):
            stack.extend(v)
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return None


def check_record(value: Any, path: str, line: int, task: RecordTask) -> dict[str, Any]:
    """A parsed value as an input record of the task: a JSON object the task's own check accepts."""
    if not isinstance(value, dict):
        raise DataError(path, "expected a JSON object", line)
    task.validate_record(value, path, line)
    return value


def parse_record(line: str, path: str, lineno: int, task: RecordTask) -> dict[str, Any]:
    """One JSONL line -> a record the task can predict; DataError naming path and line otherwise."""
    if has_bad_bytes(line):
        raise DataError(path, "not UTF-8 text", lineno)
    return check_record(parse_json(line, path, lineno), path, lineno, task)


def dumps(record: Any) -> str:
    """A record as one line of strict JSON (UTF-8 text, not \\u escapes): NaN and infinities become null,
    dates and times ISO 8601, decimals strings, bytes base64 (see `json_value`)."""
    try:
        try:
            return json.dumps(record, ensure_ascii=False, allow_nan=False, default=json_value)
        except ValueError:  # a non-finite number: strict JSON has none
            return json.dumps(_finite(record), ensure_ascii=False, allow_nan=False)
    except RecursionError:
        raise ValueError("a record nested too deeply to write") from None


def json_value(value: Any) -> Any:
    """A value JSON has no type for, as JSON: what a spreadsheet or Parquet cell can hold besides text,
    numbers, booleans and lists. A TypeError names any other type."""
    if type(value).__name__ in ("NaTType", "NAType"):  # pandas' missing values (NaT passes for a datetime)
        return None
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return _iso_duration(value)
    if isinstance(value, decimal.Decimal):
        return str(value)  # exactly as stored: a float would round it
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"a value of type {type(value).__name__} has no JSON form")


def _iso_duration(value: dt.timedelta) -> str:
    if hasattr(value, "isoformat"):  # pandas' Timedelta
        return str(value.isoformat())
    sign = "-" if value < dt.timedelta(0) else ""
    value = abs(value)
    seconds = value.seconds + value.microseconds / 1e6
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{sign}P{value.days}DT{int(h)}H{int(m)}M{s:g}S"


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return _finite(json_value(value))
