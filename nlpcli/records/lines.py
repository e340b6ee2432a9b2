"""Lines of a file or stdin, read once, as text: UTF-8 (a BOM dropped), line ends LF, CRLF or a lone CR, bytes
that are not UTF-8 kept as lone surrogates so that the reader can name the line (`has_bad_bytes`)."""

from __future__ import annotations

import os
import re
import select
import stat
import sys
from collections import deque
from collections.abc import Iterator
from typing import Any

from ..data.io import check_file, os_reason
from ..errors import DataError

# Records per prediction chunk, in batches. Pieces are sorted by length within a chunk, so the larger the chunk,
# the less padding: with a few long texts among short ones, a chunk of a few batches pads most texts to the long
# ones' length, and span scores grow with its square (docs/results.md, "ner: faster than LAC").
CHUNK_BATCHES = 64


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

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BAD_BYTE = re.compile("[\udc80-\udcff]")


def has_bad_bytes(line: str) -> bool:
    """True when a line read here held bytes that are not UTF-8."""
    return _BAD_BYTE.search(line) is not None


class LineReader:
    """Lines of a file descriptor, each ending in "\\n" (the last one may have none).

    With `stall_s`, a STALL_LINE is yielded whenever no complete line arrives within that many seconds; a
    regular file is always ready, so it never stalls. `bytes_read` and `size` (a regular file's, else None)
    give the progress of a single pass over the input.
    """

    def __init__(self, fd: int, stall_s: float | None = None, owned: bool = False, name: str = "stdin"):
        self.fd = fd
        self.name = name  # for messages
        self.stall_s = stall_s
        self.owned = owned  # closed on exit (a file opened here, not stdin)
        self.bytes_read = 0
        try:
            info = os.fstat(fd)
            self.size: int | None = info.st_size if stat.S_ISREG(info.st_mode) else None
        except OSError:
            self.size = None

    def __enter__(self) -> LineReader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.owned:
            os.close(self.fd)

    def __iter__(self) -> Iterator[str]:
        ready: deque[bytes] = deque()
        partial = b""
        after_cr = False  # the last chunk ended in CR: a LF starting the next one ends no line of its own
        first, stalled = True, False
        while True:
            while ready:
                line = ready.popleft().decode("utf-8", "surrogateescape")
                if first:
                    line, first = line.removeprefix("\ufeff"), False
                yield line
                stalled = False
            if self.stall_s is not None and not stalled and not self._readable(self.stall_s):
                stalled = True
                yield STALL_LINE
                continue
            data = self._read()
            if not data:
                break
            stalled = False
            if after_cr and data.startswith(b"\n"):
                data = data[1:]
            buffer = partial + data
            after_cr = buffer.endswith(b"\r")
            parts = buffer.split(b"\n") if b"\r" not in buffer else _LINE_END.split(buffer)
            partial = parts.pop()
            ready.extend(part + b"\n" for part in parts)
        if partial:
            line = partial.decode("utf-8", "surrogateescape")
            yield line.removeprefix("\ufeff") if first else line

    def _read(self) -> bytes:
        try:
            data = os.read(self.fd, 1 << 16)
        except OSError as e:
            raise DataError(self.name, f"cannot read ({os_reason(e)})") from None
        self.bytes_read += len(data)
        return data

    def _readable(self, timeout: float) -> bool:
        try:
            return bool(select.select([self.fd], [], [], timeout)[0])
        except (OSError, ValueError):  # not selectable here: never report a stall
            return True


def open_lines(spec: str, stall_s: float | None = None) -> LineReader:
    """The lines of a file, or of stdin for `-`. With `stall_s`, stdin is read as it arrives and STALL_LINE
    marks where it stalled (see `LineReader`)."""
    if spec == "-":
        return LineReader(sys.stdin.fileno(), stall_s)
    p = check_file(spec)
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError as e:
        raise DataError(p, f"cannot read ({os_reason(e)})") from None
    return LineReader(fd, owned=True, name=str(p))
