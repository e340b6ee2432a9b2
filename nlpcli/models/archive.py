"""Reading named files out of a wheel (zip) or an sdist (tar.gz) without extracting or importing anything."""

from __future__ import annotations

import hashlib
import tarfile
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

from .errors import ArchiveError


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256(path: Path, expected: str, expected_name: str) -> None:
    """Raise ArchiveError unless the file's sha256 is `expected`."""
    actual = sha256_file(path)
    if actual != expected:
        raise ArchiveError(
            f"{path}: sha256 {actual[:16]}... is not the catalogue's {expected[:16]}... for {expected_name} "
            "(a different or damaged file)"
        )


def read_members(path: Path, members: Sequence[str]) -> dict[str, bytes]:
    """The bytes of each named member; a missing member, a truncated or corrupt archive raise ArchiveError."""
    name = path.name.lower()
    try:
        if name.endswith((".whl", ".zip")):
            found = _read_zip(path, members)
        elif name.endswith((".tar.gz", ".tgz")):
            found = _read_tar(path, members)
        else:
            raise ArchiveError(f"{path}: not a wheel or a .tar.gz sdist")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as e:
        raise ArchiveError(f"{path}: truncated or corrupt archive ({e})") from None
    except OSError as e:
        raise ArchiveError(f"{path}: cannot read the archive ({e.strerror or e})") from None
    missing = [m for m in members if m not in found]
    if missing:
        raise ArchiveError(f"{path}: no member {missing[0]} in the archive (not the package file the catalogue names?)")
    return found


def _read_zip(path: Path, members: Sequence[str]) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        # ZipFile.read checks each member's CRC, so damage inside a member is caught too.
        return {m: zf.read(m) for m in members if m in names}


def _read_tar(path: Path, members: Sequence[str]) -> dict[str, bytes]:
    wanted = set(members)
    found: dict[str, bytes] = {}
    # Stream mode: one pass through the gzip stream, so a truncated file fails with EOFError, not silently.
    with tarfile.open(path, mode="r|gz") as tf:
        for info in tf:
            key = info.name[2:] if info.name.startswith("./") else info.name
            if key in wanted and info.isfile():
                f = tf.extractfile(info)
                data = f.read() if f is not None else b""
                if len(data) != info.size:
                    raise ArchiveError(f"{path}: member {key} is truncated")
                found[key] = data
                if len(found) == len(wanted):
                    break
    return found
