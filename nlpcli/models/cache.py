"""The model cache, $NLPCLI_HOME/models/NAME/ (default ~/.cache/nlpcli): an entry is written whole or not at all.

A pull writes into a temporary directory beside the entry, fsyncs it, and only then swaps it in, so the
cache always holds the complete old entry or the complete new one. An entry is complete when its marker
file (written last) is there.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import CacheError

MARKER = "nlpcli-model.json"


def home() -> Path:
    """$NLPCLI_HOME, else ~/.cache/nlpcli."""
    env = os.environ.get("NLPCLI_HOME")
    # Absolute: resolve_encoder's answer may be stored and used from another working directory.
    return Path(env).expanduser().absolute() if env else Path.home() / ".cache" / "nlpcli"


def models_root() -> Path:
    return home() / "models"


def entry_path(name: str) -> Path:
    """Where the entry `name` lives (whether or not it has been pulled)."""
    return models_root() / name


def read_marker(name: str) -> dict[str, Any] | None:
    """The marker of a complete entry, or None when `name` is not (completely) in the cache."""
    try:
        return json.loads((entry_path(name) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def cached_path(name: str) -> Path | None:
    """The entry's directory when it is complete, else None."""
    return entry_path(name) if read_marker(name) is not None else None


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def save_tensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """safetensors file; a single place for the big writes, so a full disk surfaces here first."""
    from safetensors.torch import save_file  # lazy: `models list` should not import torch

    save_file(tensors, str(path), metadata=metadata)


def write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


@contextmanager
def staged_entry(name: str, marker: dict[str, Any]) -> Iterator[Path]:
    """Yield an empty temporary directory; when the block succeeds it becomes models/NAME/ with `marker` added.

    Any failure removes the temporary directory and leaves the old entry (if any) as it was; OSErrors
    (a full disk above all) become a CacheError with one line.
    """
    root = models_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        _recover(root, name)
        _remove_leftovers(root, name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-{os.getpid()}-", dir=root))
    except OSError as e:
        raise _cache_error(e, root, name) from None
    try:
        yield tmp
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        write_text(tmp / MARKER, json.dumps({**marker, "files": files}, ensure_ascii=False, indent=2) + "\n")
        _usual_permissions(tmp)
        _fsync_tree(tmp)
        _swap_in(tmp, root / name)
    except OSError as e:
        raise _cache_error(e, root, name) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cache_error(e: OSError, root: Path, name: str) -> CacheError:
    if e.errno == errno.ENOSPC:
        return CacheError(f"no space left on the disk of {root} while writing {name}; the cache is unchanged")
    where = f" {e.filename}" if e.filename else ""
    return CacheError(f"cannot write{where} for {name}: {e.strerror or e}; the cache is unchanged")


def _swap_in(tmp: Path, dest: Path) -> None:
    """Rename the finished tmp to dest; an old dest is moved aside first and deleted only afterwards."""
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-{os.getpid()}-", dir=dest.parent))
        old.rmdir()
        dest.rename(old)
    try:
        tmp.rename(dest)
    except OSError:
        if old is not None:
            old.rename(dest)
        raise
    _fsync_dir(dest.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _recover(root: Path, name: str) -> None:
    """A crash between the two renames of _swap_in leaves only .NAME.old-*: put it back."""
    if (root / name).exists():
        return
    for old in sorted(root.glob(f".{name}.old-*")):
        if (old / MARKER).is_file():
            old.rename(root / name)
            return


def _remove_leftovers(root: Path, name: str) -> None:
    """Temp dirs of pulls that were killed (their process is gone) and old entries already replaced."""
    for tmp in root.glob(f".{name}.tmp-*"):
        pid = tmp.name.split(".tmp-", 1)[1].split("-", 1)[0]
        if not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(tmp, ignore_errors=True)
    if (root / name / MARKER).is_file():
        for old in root.glob(f".{name}.old-*"):
            shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def _usual_permissions(path: Path) -> None:
    """mkdtemp makes the directory private (0700) and safetensors its files 0600; a cache is readable as
    any other directory the user makes (umask applies)."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)
    for p in path.rglob("*"):  # a built model's checkpoint may hold directories (a tokenizer)
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


def _fsync_tree(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
