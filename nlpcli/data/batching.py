"""Length-bucketed batch plans, padding, and windows over long texts."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


def bucket_batches(
    lengths: Sequence[int], batch_size: int, shuffle: bool = True, seed: int = 0, bucket_factor: int = 50
) -> list[list[int]]:
    """Index lists whose members have similar lengths (less padding), in random order when shuffling."""
    idx = list(range(len(lengths)))
    rng = random.Random(seed)
    if not shuffle:
        idx.sort(key=lambda i: lengths[i])
        return [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    rng.shuffle(idx)
    chunk = batch_size * bucket_factor
    batches: list[list[int]] = []
    for c in range(0, len(idx), chunk):
        part = sorted(idx[c : c + chunk], key=lambda i: lengths[i])
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def pad_ids(seqs: Sequence[Sequence[int] | torch.Tensor], pad: int = 0, min_len: int = 1) -> torch.Tensor:
    """Right-pad integer sequences (lists, int arrays, CPU tensors) into a LongTensor [batch, max_len]."""
    width = max([min_len] + [len(s) for s in seqs])
    # numpy copies a list or an array into a row several times faster than torch converts one.
    out = np.full((len(seqs), width), pad, dtype=np.int64)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, : len(s)] = s.numpy() if isinstance(s, torch.Tensor) else s
    return torch.from_numpy(out)


@dataclass(frozen=True)
class Window:
    """A slice [start, end) of a text, and the part of it [own_start, own_end) whose predictions it owns."""

    start: int
    end: int
    own_start: int
    own_end: int

    def owns(self, position: int) -> bool:
        """Whether this window owns a position of the whole text (predictions starting there are its)."""
        return self.own_start <= position < self.own_end


def windows(length: int, size: int, overlap: int) -> list[Window]:
    """Overlapping windows covering [0, length); each position is owned by exactly one window.

    Ownership goes to the window where the position is farthest from a cut edge, so a
    span predicted near a cut is taken from the neighbour that sees its full context.
    """
    if length <= size:
        return [Window(0, length, 0, length)]
    if overlap >= size:
        raise ValueError("window overlap must be smaller than the window size")
    stride = size - overlap
    starts = [*list(range(0, length - size, stride)), length - size]
    out = []
    for k, s in enumerate(starts):
        e = s + size
        own_s = 0 if k == 0 else (s + starts[k - 1] + size) // 2
        own_e = length if k == len(starts) - 1 else (starts[k + 1] + e) // 2
        out.append(Window(s, e, own_s, own_e))
    return out
