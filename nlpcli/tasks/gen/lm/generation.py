"""CGMH over keyword sets: chains started from each set's keywords, run by the sampler (`cgmh.mh_step`), and the
best sentences they visited. `LmPipeline.iter_generate` is the way in; this module is what it runs."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ....device import autocast
from ....errors import ConfigError
from .cgmh import Chains, KeywordLM, StepStats, mh_step, score_rows
from .settings import SamplerSettings


@dataclass
class Generation:
    words: list[str]
    sentences: list[dict[str, Any]] = field(default_factory=list)  # [{text, score}], best first


def keyword_orders(n_words: int, n_chains: int, keep_order: bool, rng: random.Random) -> list[list[int]]:
    """Start orders of the chains: the given order first, then other orders (unless --keep-order)."""
    given = list(range(n_words))
    if keep_order or n_words == 1:
        return [given] * n_chains
    if n_words <= 5:
        others = [list(p) for p in itertools.permutations(given) if list(p) != given]
        rng.shuffle(others)
    else:
        others = [rng.sample(given, n_words) for _ in range(n_chains)]
    orders = [given, *others]
    return [orders[i % len(orders)] for i in range(n_chains)]


def render(lm: KeywordLM, tokens: list[int], kw: list[int], words: list[str]) -> str:
    """Text of a chain: free tokens from the vocabulary, each locked keyword as the user wrote it."""
    out, prev = [], -1
    for t, k in zip(tokens, kw):
        if k >= 0:
            if k != prev:
                out.append(words[k])
        else:
            out.append(lm.itos[t])
        prev = k
    return "".join(out)


def iter_generate(
    lm: KeywordLM, keyword_sets: list[list[str]], s: SamplerSettings, stats: StepStats | None = None
) -> Iterator[Generation]:
    """Up to `s.num` distinct sentences per keyword set, each holding every keyword, best first; each set's
    result as soon as its batch of chains is done. Score = mean forward-LM log-probability per token (end token
    included); higher is better. Every set is checked before any work (`check_keywords`)."""
    s.check()
    encoded = [check_keywords(lm, words, s) for words in keyword_sets]
    n_chains = max(s.num, s.chains)
    per_batch = max(1, s.batch_chains // n_chains)
    rng = random.Random(s.seed)
    gen = torch.Generator().manual_seed(s.seed)
    lm.fwd.eval()
    lm.bwd.eval()
    for b in range(0, len(keyword_sets), per_batch):
        sets = keyword_sets[b : b + per_batch]
        with autocast(lm.device, lm.precision):  # not around the yield: the caller's code runs in fp32
            done = _run_batch(lm, sets, encoded[b : b + per_batch], n_chains, s, rng, gen, stats)
        yield from done


def check_keywords(lm: KeywordLM, words: list[str], s: SamplerSettings) -> list[list[int]]:
    """The token ids of each keyword, or a ConfigError when no sentence of the sampler can hold them all: a
    keyword unknown to the model is one unknown token (`encode_keywords`), so only the length can refuse a set."""
    ids = lm.encode_keywords(words)
    n = sum(len(k) for k in ids)
    if n > s.max_sentence_len:
        raise ConfigError(
            f"the keywords take {n} tokens, more than the longest sentence (max_sentence_len {s.max_sentence_len})"
        )
    return ids


def _run_batch(
    lm: KeywordLM,
    sets: list[list[str]],
    encoded: list[list[list[int]]],
    n_chains: int,
    s: SamplerSettings,
    rng: random.Random,
    gen: torch.Generator,
    stats: StepStats | None,
) -> list[Generation]:
    starts, owner, orders = [], [], []
    for i, ids in enumerate(encoded):
        for order in keyword_orders(len(ids), n_chains, s.keep_order, rng):
            starts.append([ids[o] for o in order])
            owner.append(i)
            orders.append(order)
    device = lm.device
    ch = Chains.start(starts, s.max_sentence_len, device)
    # Keyword indices of a chain follow its start order; map them back to the user's words when rendering.
    ch.logp = score_rows(lm, ch.tokens, ch.length, torch.zeros_like(ch.length))
    visited: list[dict[str, tuple[float, float]]] = [dict() for _ in sets]
    _record(lm, ch, torch.ones(len(starts), dtype=torch.bool), owner, orders, sets, visited, s.min_len)
    for _ in range(s.steps):
        changed = mh_step(lm, ch, s, gen, stats)
        if changed.any():
            _record(lm, ch, changed, owner, orders, sets, visited, s.min_len)
    out = []
    for words, seen in zip(sets, visited):
        best = sorted(seen.items(), key=lambda kv: -kv[1][0])[: s.num]
        out.append(Generation(list(words), [{"text": t, "score": round(v[1], 4)} for t, v in best]))
    return out


def _record(
    lm: KeywordLM,
    ch: Chains,
    changed: torch.Tensor,
    owner: list[int],
    orders: list[list[int]],
    sets: list[list[str]],
    visited: list[dict[str, tuple[float, float]]],
    min_len: int,
) -> None:
    """Remember each changed chain's sentence with its length-normalised score (short ones rank last)."""
    rows = changed.nonzero()[:, 0].tolist()
    toks, kws = ch.tokens[rows].tolist(), ch.kw[rows].tolist()
    lens, logps = ch.length[rows].tolist(), ch.logp[rows].tolist()
    for r, t, k, n, lp in zip(rows, toks, kws, lens, logps):
        words = [sets[owner[r]][o] for o in orders[r]]
        text = render(lm, t[:n], k[:n], words)
        score = lp / (n + 1)
        rank = score if n >= min_len else score - 1e6  # too short: only when nothing longer was visited
        visited[owner[r]][text] = (rank, score)
