"""Reading and writing files: UTF-8 (BOM or not), JSON Lines, JSON arrays, zips, atomic writes."""

from __future__ import annotations

import io
import json
import os
import re
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..errors import DataError


@dataclass
class ReadStats:
    """What a reader skipped with --skip-bad: count and the first few reasons."""

    skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def skip(self, err: DataError) -> None:
        self.skipped += 1
        if len(self.reasons) < 5:
            self.reasons.append(str(err))


def check_file(path: str | Path) -> Path:
    """Return the path if it is a readable file, else raise a DataError."""
    p = Path(path)
    if not p.exists():
        raise DataError(p, "no such file")
    if p.is_dir():
        raise DataError(p, "is a directory, expected a file")
    return p


def read_text(path: str | Path) -> str:
    """Whole file as text; a zip gives its first member. Non-UTF-8 bytes are an error."""
    p = check_file(path)
    if p.suffix.lower() == ".zip":
        with zipfile.ZipFile(p) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            if not names:
                raise DataError(p, "zip archive is empty")
            raw = zf.read(names[0])
    else:
        raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(p, f"not UTF-8 text (byte {e.start})", line) from None
    if not text.strip():
        raise DataError(p, "file is empty")
    return text


def first_char(path: str | Path) -> str:
    """First non-space character of a file (format sniffing)."""
    text = read_text(path)
    return text.lstrip()[:1]


def iter_jsonl(lines: Iterable[str], path: str, stats: ReadStats | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank JSON line; bad lines raise or are counted."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise DataError(path, f"expected a JSON object, got {type(obj).__name__}", lineno)
        except json.JSONDecodeError as e:
            err = DataError(path, f"malformed JSON ({e.msg})", lineno)
            if stats is None:
                raise err from None
            stats.skip(err)
            continue
        except DataError as err:
            if stats is None:
                raise
            stats.skip(err)
            continue
        yield lineno, obj


def iter_json_array(text: str, path: str) -> Iterator[tuple[int, Any]]:
    """Yield (line number, item) for each item of a top-level JSON array."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    n = len(text)
    line_at = _line_counter(text)
    while True:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n:
            raise DataError(path, "JSON array is not closed", line_at(n))
        if text[pos] == "]":
            return
        try:
            item, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(path, f"malformed JSON ({e.msg})", line_at(e.pos)) from None
        yield line_at(pos), item
        pos = end


def _line_counter(text: str) -> Callable[[int], int]:
    """Map a character offset to a 1-based line number, for increasing offsets."""
    state = {"pos": 0, "line": 1}

    def line_at(offset: int) -> int:
        if offset < state["pos"]:
            state["pos"], state["line"] = 0, 1
        state["line"] += text.count("\n", state["pos"], offset)
        state["pos"] = offset
        return state["line"]

    return line_at


@contextmanager
def atomic_output(path: str | Path) -> Iterator[TextIO]:
    """Open a text file for writing; it only replaces `path` when the block succeeds."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (UTF-8, readable indentation)."""
    with atomic_output(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")


def open_input(spec: str) -> TextIO:
    """`-` means stdin; otherwise a UTF-8 file (BOM tolerated).

    Bad bytes decode to lone surrogates (see `has_bad_bytes`), so the reader can name the line.
    """
    if spec == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", errors="surrogateescape")
    p = check_file(spec)
    return open(p, encoding="utf-8-sig", errors="surrogateescape")


def has_bad_bytes(line: str) -> bool:
    """True when a line read by `open_input` held bytes that are not UTF-8."""
    return _BAD_BYTE.search(line) is not None


_BAD_BYTE = re.compile("[\udc80-\udcff]")
