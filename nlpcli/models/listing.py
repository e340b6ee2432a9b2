"""The rows of `nlpcli models list`: each catalogue entry with whether (and where) it is cached."""

from __future__ import annotations

from typing import Any

from . import cache
from .catalogue import CATALOGUE


def listing() -> list[dict[str, Any]]:
    rows = []
    for entry in CATALOGUE.values():
        path = cache.cached_path(entry.name)
        marker = cache.read_marker(entry.name) if path else None
        rows.append(
            {
                **entry.to_dict(),
                "members": list(entry.members),
                "cached": path is not None,
                "path": str(path) if path else None,
                "cached_bytes": cache.disk_bytes(path) if path else None,
                "verified": marker.get("verified") if marker else None,
                "options": marker.get("options") if marker else None,
            }
        )
    return rows
