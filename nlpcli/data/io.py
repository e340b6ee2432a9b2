"""Reading and writing files: UTF-8 (BOM or not), JSON Lines, JSON arrays, zips, atomic writes."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import select
import sys
import tempfile
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

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
    if p.is_file():  # (opening a FIFO would block, or cost its writer the data)
        try:
            os.close(os.open(p, os.O_RDONLY))
        except OSError as e:
            raise DataError(p, f"cannot read ({os_reason(e)})") from None
    return p


def read_text(path: str | Path) -> str:
    """Whole file as text; a zip gives its first member. Non-UTF-8 bytes are an error."""
    p = check_file(path)
    try:
        if p.suffix.lower() == ".zip":
            with zipfile.ZipFile(p) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
                if not names:
                    raise DataError(p, "zip archive is empty")
                raw = zf.read(names[0])
        else:
            raw = p.read_bytes()
    except OSError as e:
        raise DataError(p, f"cannot read ({os_reason(e)})") from None
    except zipfile.BadZipFile as e:
        raise DataError(p, f"damaged zip archive ({e})") from None
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


def os_reason(e: BaseException) -> str:
    """The short reason of an OS error ("No space left on device"), or an error's first line."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def umask() -> int:
    """The process umask, read without changing it where /proc allows (setting it races other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (renames in it) to disk; filesystems that cannot are left as they are."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def check_output_file(path: str | Path) -> Path:
    """The path of an output file to be written, refused up front when it names a directory."""
    text = str(path)
    p = Path(path)
    if text.endswith(("/", os.sep)) or p.is_dir():
        raise DataError(text, "is a directory, expected a file name")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DataError(text, f"cannot write here: {parent} is not a directory")
            break
    return p


class _OutputFile(io.TextIOWrapper):
    """A text file whose write errors (full disk, file-size limit) name the output, not the temp file."""

    target: str = ""

    def write(self, s: str) -> int:
        try:
            return super().write(s)
        except OSError as e:
            raise DataError(self.target, f"cannot write ({os_reason(e)})") from None

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as e:
            raise DataError(self.target, f"cannot write ({os_reason(e)})") from None


@contextmanager
def atomic_output(path: str | Path) -> Iterator[TextIO]:
    """Open a text file for writing; it only replaces `path` when the block succeeds.

    The file gets the mode an ordinary write would (an existing file's, else 0666 less the umask) and is on
    disk before the rename; a directory as `path` is refused before anything is written.
    """
    with _atomic(path, binary=False) as f:
        yield f


@contextmanager
def atomic_binary_output(path: str | Path) -> Iterator[BinaryIO]:
    """`atomic_output` for bytes (Excel, Parquet, PNG): the same modes, sync and swap."""
    with _atomic(path, binary=True) as f:
        yield f


@contextmanager
def _atomic(path: str | Path, binary: bool) -> Iterator[Any]:
    p = check_output_file(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        mode = (os.stat(p).st_mode & 0o7777) if p.exists() else 0o666 & ~umask()
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    except OSError as e:
        raise DataError(path, f"cannot write ({os_reason(e)})") from None
    try:
        raw = os.fdopen(fd, "wb")
        f: Any = raw
        if not binary:
            f = _OutputFile(raw, encoding="utf-8")
            f.target = str(path)
        with f:
            os.fchmod(fd, mode)
            yield f
            f.flush()
            _or_write_error(path, lambda: os.fsync(fd))
        _or_write_error(path, lambda: os.replace(tmp, p))
        fsync_dir(p.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _or_write_error(path: str | Path, op: Callable[[], None]) -> None:
    try:
        op()
    except OSError as e:
        raise DataError(path, f"cannot write ({os_reason(e)})") from None


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (UTF-8, readable indentation)."""
    with atomic_output(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")


def write_jsonl(path: str | Path, records: Iterable[Any]) -> None:
    """Write JSON Lines atomically (UTF-8, one record a line)."""
    with atomic_output(path) as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


class _StallLine(str):
    """The type of `STALL_LINE`."""


class _Stall(dict):
    """The type of `STALL`."""


# Markers in a stream whose source has no more input ready for now (a pipe or terminal that stalls): the
# line reader yields STALL_LINE, the record reader turns it into STALL, and the prediction loop runs the
# records it holds instead of waiting for a full chunk. Both are empty, so readers that skip blank lines
# and empty records pass over them.
STALL_LINE: str = _StallLine()
STALL: dict[str, Any] = _Stall()


class LineReader:
    """Lines of a file descriptor as text (UTF-8, BOM dropped, bad bytes kept as in `open_input`).

    With `stall_s`, a STALL_LINE is yielded whenever no complete line arrives within that many seconds;
    a regular file is always ready, so it never stalls.
    """

    def __init__(self, fd: int, stall_s: float | None = None):
        self.fd = fd
        self.stall_s = stall_s

    def __enter__(self) -> LineReader:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __iter__(self) -> Iterator[str]:
        ready: deque[bytes] = deque()
        partial: list[bytes] = []
        first, stalled = True, False
        while True:
            while ready:
                line = ready.popleft().decode("utf-8", "surrogateescape")
                if first:
                    line, first = line.removeprefix("\ufeff"), False
                yield line[:-2] + "\n" if line.endswith("\r\n") else line
                stalled = False
            if self.stall_s is not None and not stalled and not self._readable(self.stall_s):
                stalled = True
                yield STALL_LINE
                continue
            data = os.read(self.fd, 1 << 16)
            if not data:
                break
            stalled = False
            if b"\n" in data:
                *lines, rest = (b"".join(partial) + data).split(b"\n")
                ready.extend(line + b"\n" for line in lines)
                partial = [rest] if rest else []
            else:
                partial.append(data)
        if partial:
            ready.append(b"".join(partial))
            line = ready.popleft().decode("utf-8", "surrogateescape")
            yield line.removeprefix("\ufeff") if first else line

    def _readable(self, timeout: float) -> bool:
        try:
            return bool(select.select([self.fd], [], [], timeout)[0])
        except (OSError, ValueError):  # not selectable here: never report a stall
            return True


def open_input(spec: str, stall_s: float | None = None) -> TextIO | LineReader:
    """`-` means stdin; otherwise a UTF-8 file (BOM tolerated).

    Bad bytes decode to lone surrogates (see `has_bad_bytes`), so the reader can name the line. With
    `stall_s`, stdin is read as it arrives and STALL_LINE marks where it stalled (see `LineReader`).
    """
    if spec == "-":
        if stall_s is not None:
            return LineReader(sys.stdin.fileno(), stall_s)
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", errors="surrogateescape")
    p = check_file(spec)
    try:
        return open(p, encoding="utf-8-sig", errors="surrogateescape")
    except OSError as e:
        raise DataError(p, f"cannot read ({os_reason(e)})") from None


def has_bad_bytes(line: str) -> bool:
    """True when a line read by `open_input` held bytes that are not UTF-8."""
    return _BAD_BYTE.search(line) is not None


_BAD_BYTE = re.compile("[\udc80-\udcff]")
