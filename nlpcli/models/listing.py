"""The rows of `nlpcli models list`: each catalogue entry with whether (and where) it is cached, and each
recipe with whether it is built."""

from __future__ import annotations

from typing import Any

from . import cache
from .catalogue import CATALOGUE
from .recipes import RECIPES

PULL, BUILD = "pull", "build"  # the `how` of a row: `nlpcli models pull NAME` or `nlpcli models build NAME`


def listing() -> list[dict[str, Any]]:
    rows = []
    for entry in CATALOGUE.values():
        path = cache.cached_path(entry.name)
        marker = cache.read_marker(entry.name) if path else None
        rows.append(
            {
                **entry.to_dict(),
                "how": PULL,
                "members": list(entry.members),
                "cached": path is not None,
                "path": str(path) if path else None,
                "cached_bytes": cache.disk_bytes(path) if path else None,
                "verified": marker.get("verified") if marker else None,
                "options": marker.get("options") if marker else None,
            }
        )
    for recipe in RECIPES.values():
        marker = cache.read_marker(recipe.name)
        built = marker is not None and bool(marker.get("recipe"))
        path = cache.entry_path(recipe.name) if built else None
        test = (marker or {}).get("test") or {}
        rows.append(
            recipe.to_dict()
            | {
                "how": BUILD,
                "cached": built,
                "path": str(path) if path else None,
                "cached_bytes": cache.disk_bytes(path) if path else None,
                "verified": (marker or {}).get("data", {}).get("verified") if built else None,
                "build_seconds": (marker or {}).get("build_seconds") if built else None,
                "test_score": (test.get("metrics") or {}).get(recipe.metric) if built else None,
            }
        )
    return rows
