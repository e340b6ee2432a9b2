"""Chat metrics: distinct-n of replies, and a character-bigram perplexity baseline."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def distinct_n(replies: Sequence[str], n: int) -> float:
    """Distinct n-grams of characters over all n-grams in all replies (0 when there are none)."""
    grams = [r[i : i + n] for r in replies for i in range(len(r) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def bigram_pairs(inputs: Sequence[Sequence[int]], targets_mask: Sequence[Sequence[bool]]) -> np.ndarray:
    """(previous token, token) pairs [N, 2] at the scored positions of encoded dialogues.

    `inputs[i]` is a whole encoded dialogue; `targets_mask[i][t]` says whether token t+1 is scored.
    """
    rows = []
    for ids, mask in zip(inputs, targets_mask):
        a = np.asarray(ids, dtype=np.int64)
        m = np.asarray(mask, dtype=bool)
        rows.append(np.stack([a[:-1][m], a[1:][m]], 1))
    return np.concatenate(rows) if rows else np.zeros((0, 2), dtype=np.int64)


def bigram_nll(train_pairs: np.ndarray, eval_pairs: np.ndarray, vocab_size: int, discount: float = 0.75) -> float:
    """Total NLL (nats) of eval pairs under an interpolated absolute-discounting bigram model.

    P(w | v) = max(c(v,w) - d, 0) / c(v) + d * N1+(v, .) / c(v) * P1(w), with an add-one unigram P1;
    unseen contexts fall back to P1. Pairs are packed into int64 codes, so no V x V table is built.
    """
    uni = np.bincount(train_pairs[:, 1], minlength=vocab_size).astype(np.float64) + 1.0
    p_uni = uni / uni.sum()
    codes, counts = np.unique(train_pairs[:, 0] * vocab_size + train_pairs[:, 1], return_counts=True)
    ctx_total = np.bincount(train_pairs[:, 0], minlength=vocab_size).astype(np.float64)
    ctx_types = np.bincount(codes // vocab_size, minlength=vocab_size).astype(np.float64)
    v, w = eval_pairs[:, 0], eval_pairs[:, 1]
    q = v * vocab_size + w
    pos = np.searchsorted(codes, q).clip(max=len(codes) - 1)
    c_vw = np.where(codes[pos] == q, counts[pos], 0).astype(np.float64)
    c_v = ctx_total[v]
    safe = np.maximum(c_v, 1.0)
    p = np.where(
        c_v > 0,
        np.maximum(c_vw - discount, 0.0) / safe + discount * ctx_types[v] / safe * p_uni[w],
        p_uni[w],
    )
    return float(-np.log(p).sum())


def perplexity(nll: float, count: int) -> float:
    return math.exp(nll / count) if count else float("nan")
