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


# Without a bound of its own a member may take this much once unpacked (a package's model file; a crafted
# archive whose member unpacks to gigabytes is refused before it is inflated).
MEMBER_LIMIT = 1 << 30


def read_members(path: Path, members: Sequence[str], limit: int = MEMBER_LIMIT) -> dict[str, bytes]:
    """The bytes of each named member; a missing member, a member larger than `limit` bytes unpacked (refused
    by its header's size, before it is inflated, and read with that bound), a truncated or corrupt archive
    raise ArchiveError."""
    name = path.name.lower()
    try:
        if name.endswith((".whl", ".zip")):
            found = _read_zip(path, members, limit)
        elif name.endswith((".tar.gz", ".tgz")):
            found = _read_tar(path, members, limit)
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


def _too_large(path: Path, member: str, size: int, limit: int) -> ArchiveError:
    return ArchiveError(f"{path}: member {member} unpacks to {size:,} bytes, more than {limit:,} (not this package?)")


def _read_zip(path: Path, members: Sequence[str], limit: int) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        for m in members:
            if m not in names:
                continue
            size = zf.getinfo(m).file_size
            if size > limit:
                raise _too_large(path, m, size, limit)
            # ZipExtFile stops at the header's size and checks the CRC, so damage inside a member is caught too.
            with zf.open(m) as f:
                found[m] = f.read(limit + 1)
            if len(found[m]) > limit:
                raise _too_large(path, m, len(found[m]), limit)
    return found


def _read_tar(path: Path, members: Sequence[str], limit: int) -> dict[str, bytes]:
    wanted = set(members)
    found: dict[str, bytes] = {}
    # Stream mode: one pass through the gzip stream, so a truncated file fails with EOFError, not silently.
    with tarfile.open(path, mode="r|gz") as tf:
        for info in tf:
            key = info.name[2:] if info.name.startswith("./") else info.name
            if key in wanted and info.isfile():
                if info.size > limit:
                    raise _too_large(path, key, info.size, limit)
                f = tf.extractfile(info)
                data = f.read() if f is not None else b""
                if len(data) != info.size:
                    raise ArchiveError(f"{path}: member {key} is truncated")
                found[key] = data
                if len(found) == len(wanted):
                    break
    return found
