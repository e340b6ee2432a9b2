"""Span decoding (vectorised in torch) and answer voting across passages and windows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .metrics import normalize_answer


def best_spans(
    start: torch.Tensor, end: torch.Tensor, max_answer_len: int, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row, the span (i, j) with j in [i, i + max_answer_len) maximising start[i] * end[j].

    Positions at or below the threshold never start or end a span; a score of 0 means no candidate.
    Returns (score, i, j), each [N].
    """
    length = start.shape[1]
    s = start.masked_fill(start <= threshold, 0.0)
    e = end.masked_fill(end <= threshold, 0.0)
    width = max(1, min(max_answer_len, length))
    band = F.pad(e, (0, width - 1)).unfold(1, width, 1)  # band[n, i, k] = e[n, i + k] (0 past the end)
    scores = (s.unsqueeze(-1) * band).flatten(1)
    best, flat = scores.max(dim=1)
    i = torch.div(flat, width, rounding_mode="floor")
    return best, i, i + flat % width


@dataclass
class Candidate:
    text: str
    score: float
    passage: int
    start: int
    end: int  # inclusive


def vote(candidates: Sequence[Candidate], mode: str = "vote") -> tuple[Candidate | None, float]:
    """The answer of a question from its per-passage candidates.

    "vote": group by normalised text, group score sum(v^2) / (sum(v) + 1) (many confident passages
    beat one); "max": the single best candidate. Returns (best candidate of the winning group, score).
    """
    if not candidates:
        return None, 0.0
    if mode == "max":
        best = max(candidates, key=lambda c: c.score)
        return best, best.score
    groups: dict[str, list[Candidate]] = {}
    for c in candidates:
        groups.setdefault(normalize_answer(c.text) or c.text, []).append(c)

    def group_score(cs: list[Candidate]) -> float:
        return sum(c.score**2 for c in cs) / (sum(c.score for c in cs) + 1)

    winner = max(groups.values(), key=group_score)
    return max(winner, key=lambda c: c.score), group_score(winner)
