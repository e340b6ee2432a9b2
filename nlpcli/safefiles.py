"""Reading files out of checkpoint and run directories without following links out of them.

A checkpoint or run directory may come from someone else (a download, a shared disk): a `README.md` that links
to `/etc/passwd`, or a `vocab.json` that links to `/dev/zero`, must not be printed or read until memory runs
out. So files are opened with O_NOFOLLOW (relative to the directory where one is given: a name inside it
cannot lead out of it), only regular files are read, and a file read whole has a size bound. Problems are
one-line errors naming the file; a missing file stays a FileNotFoundError, for the caller to judge.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

from .errors import CheckpointError, NlpcliError

MiB = 1 << 20
ErrorType = Callable[[str], NlpcliError]

_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def open_regular(
    path: str | Path, *, dir_fd: int | None = None, within: str | Path | None = None, error: ErrorType = CheckpointError
) -> int:
    """An fd of a regular file, opened without following a link: `path`'s last part (relative to `dir_fd`
    when given), or every part below `within`. O_NONBLOCK: opening a FIFO must not hang."""
    p = Path(path)
    parent_fd = dir_fd
    own: list[int] = []
    try:
        if within is not None:
            parent_fd = os.open(within, _DIR_FLAGS)
            own.append(parent_fd)
            parts = p.relative_to(within).parts
            for part in parts[:-1]:  # a linked subdirectory would lead out as surely as a linked file
                parent_fd = os.open(part, _DIR_FLAGS | getattr(os, "O_NOFOLLOW", 0), dir_fd=parent_fd)
                own.append(parent_fd)
            name = parts[-1]
        else:
            name = p.name if dir_fd is not None else str(p)
        try:
            fd = os.open(name, _FLAGS, dir_fd=parent_fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise error(f"{p}: is a symbolic link (only regular files inside the directory are read)") from None
            raise
    except FileNotFoundError:
        raise
    except OSError as e:
        raise error(f"{p}: cannot read ({_reason(e)})") from None
    finally:
        for d in own:
            os.close(d)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise error(f"{p}: not a regular file (only regular files inside the directory are read)")
    return fd


def read_bytes(
    path: str | Path,
    limit: int,
    *,
    dir_fd: int | None = None,
    within: str | Path | None = None,
    error: ErrorType = CheckpointError,
) -> bytes:
    """A regular file's bytes, refused when larger than `limit` (see `open_regular` for the rest)."""
    fd = open_regular(path, dir_fd=dir_fd, within=within, error=error)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise error(f"{path}: too large to read ({size:,} bytes; at most {limit:,})")
        chunks, total = [], 0
        while total <= limit:  # the file may grow while it is read: stop one byte past the bound
            chunk = os.read(fd, min(limit + 1 - total, 1 << 20) or 1)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise error(f"{path}: too large to read (more than {limit:,} bytes)")
        return b"".join(chunks)
    except OSError as e:
        raise error(f"{path}: cannot read ({_reason(e)})") from None
    finally:
        os.close(fd)


def read_text(
    path: str | Path,
    limit: int,
    *,
    dir_fd: int | None = None,
    within: str | Path | None = None,
    error: ErrorType = CheckpointError,
) -> str:
    """A regular file's UTF-8 text (see `read_bytes`); bytes that are not UTF-8 are an error naming the file."""
    data = read_bytes(path, limit, dir_fd=dir_fd, within=within, error=error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start})") from None
