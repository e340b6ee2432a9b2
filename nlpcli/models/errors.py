"""Failures of `nlpcli models`; each is an NlpcliError, so the CLI prints one line and exits 1."""

from __future__ import annotations

from ..errors import NlpcliError


class FetchError(NlpcliError):
    """The package file could not be downloaded (no network, pip failure, not on the index)."""


class ArchiveError(NlpcliError):
    """The package file is not what the catalogue expects: wrong checksum, truncated, corrupt, a member missing."""


class CacheError(NlpcliError):
    """The converted model could not be written into the cache (disk full, no permission)."""
