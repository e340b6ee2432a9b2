"""What a pass over an input counted: records read, written and skipped (with the first reasons)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import DataError


@dataclass
class PredictStats:
    read: int = 0
    written: int = 0
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)


def count_skipped(stats: PredictStats, err: DataError, skip_bad: bool) -> None:
    """A bad record: with `skip_bad` counted (the first five reasons kept for the summary), else raised."""
    if not skip_bad:
        raise err
    stats.skipped += 1
    if len(stats.reasons) < 5:
        stats.reasons.append(str(err))
