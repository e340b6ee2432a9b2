"""Pointer decoding: spans from start/end probabilities, vectorised over texts, subjects and predicates."""

from __future__ import annotations

import torch


def pointer_spans(
    start_prob: torch.Tensor, end_prob: torch.Tensor, mask: torch.Tensor, start_threshold: float, end_threshold: float
) -> torch.Tensor:
    """Spans from pointer probabilities [..., L]: every start above its threshold, paired with the
    nearest end at or after it above the end threshold. Rows [*index, start, end] (LongTensor)."""
    length = start_prob.shape[-1]
    pos = torch.arange(length, device=start_prob.device)
    is_end = (end_prob > end_threshold) & mask
    # nearest end at or after each position: a reversed running minimum of end positions
    candidates = torch.where(is_end, pos, length)
    next_end = candidates.flip(-1).cummin(-1).values.flip(-1)
    is_start = (start_prob > start_threshold) & mask & (next_end < length)
    index = is_start.nonzero()
    return torch.cat([index, next_end[is_start].unsqueeze(-1)], -1)


def decode_objects(
    object_prob: torch.Tensor, mask: torch.Tensor, start_threshold: float, end_threshold: float
) -> torch.Tensor:
    """Object spans from [N, L, P, 2] probabilities and a [N, L] mask: rows [n, predicate, start, end]."""
    per_predicate = object_prob.permute(0, 2, 3, 1)  # [N, P, 2, L]
    return pointer_spans(
        per_predicate[:, :, 0], per_predicate[:, :, 1], mask.unsqueeze(1), start_threshold, end_threshold
    )
