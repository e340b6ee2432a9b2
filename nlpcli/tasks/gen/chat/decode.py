"""Batched reply generation for `chat`: left-padded prompts, KV cache, top-k / top-p / temperature /
repetition penalty, one token per step for every dialogue in the batch (so replies can stream)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Decoding:
    max_new_tokens: int = 32
    temperature: float = 0.7  # <= 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 0.9  # 1: off
    repetition_penalty: float = 1.0  # 1: off; > 1 discourages tokens already in the dialogue


@dataclass
class Prompt:
    ids: list[int]
    speakers: list[int]
    reply_speaker: int


def pick_next(
    logits: torch.Tensor, seen: torch.Tensor, banned: torch.Tensor, dec: Decoding, generator: torch.Generator | None
) -> torch.Tensor:
    """Next token ids [B] from last-position logits [B, V]."""
    logits = logits.float().masked_fill(banned, float("-inf"))
    if dec.repetition_penalty != 1.0:
        # CTRL-style: shrink the score of any token already seen, whatever its sign.
        penalised = torch.where(logits > 0, logits / dec.repetition_penalty, logits * dec.repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if dec.temperature <= 0:
        return logits.argmax(-1)
    logits = logits / dec.temperature
    if dec.top_k > 0:
        k = min(dec.top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0 < dec.top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens before it already hold top_p of the mass (the first always stays).
        drop = probs.cumsum(-1) - probs > dec.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def generate_steps(
    model: nn.Module,
    prompts: Sequence[Prompt],
    sep_id: int,
    pad_id: int,
    banned_ids: Sequence[int],
    vocab_size: int,
    dec: Decoding,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (tokens [B], active [B]) per step; a row stops after it yields [SEP] (active is False after)."""
    device = next(model.parameters()).device
    b = len(prompts)
    width = max(len(p.ids) for p in prompts)
    ids = torch.full((b, width), pad_id, dtype=torch.long)
    speakers = torch.zeros((b, width), dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.bool)
    for i, p in enumerate(prompts):  # left padding: every row's next token lands in the same column
        n = len(p.ids)
        ids[i, width - n :] = torch.tensor(p.ids)
        speakers[i, width - n :] = torch.tensor(p.speakers)
        mask[i, width - n :] = True
    ids, speakers, mask = ids.to(device), speakers.to(device), mask.to(device)
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)
    reply_speaker = torch.tensor([p.reply_speaker for p in prompts], device=device)[:, None]
    banned = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    banned[list(banned_ids)] = True
    seen = torch.zeros((b, vocab_size), dtype=torch.bool, device=device)
    seen.scatter_(1, ids.masked_fill(~mask, sep_id), True)
    active = torch.ones(b, dtype=torch.bool, device=device)
    past = None
    step_ids, step_spk, step_pos = ids, speakers, positions
    no_empty = banned.clone()
    no_empty[sep_id] = True  # a reply has at least one token, so speakers keep alternating
    for step in range(dec.max_new_tokens):
        if use_cache:
            logits, past = model(step_ids, step_spk, mask, step_pos, past)
        else:
            logits, _ = model(ids, speakers, mask, positions)
        tokens = pick_next(logits[:, -1], seen, (no_empty if step == 0 else banned)[None], dec, generator)
        tokens = torch.where(active, tokens, torch.full_like(tokens, pad_id))
        yield tokens, active
        active = active & (tokens != sep_id)
        if not bool(active.any()):
            return
        seen.scatter_(1, tokens[:, None], True)
        step_ids, step_spk, step_pos = tokens[:, None], reply_speaker, positions[:, -1:] + 1
        mask = torch.cat([mask, torch.ones((b, 1), dtype=torch.bool, device=device)], dim=1)
        if not use_cache:
            ids = torch.cat([ids, step_ids], 1)
            speakers = torch.cat([speakers, step_spk], 1)
        positions = torch.cat([positions, step_pos], 1)


def generate(
    model: nn.Module,
    prompts: Sequence[Prompt],
    sep_id: int,
    pad_id: int,
    banned_ids: Sequence[int],
    vocab_size: int,
    dec: Decoding,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> list[list[int]]:
    """Reply token ids per prompt (without the closing [SEP])."""
    steps = list(generate_steps(model, prompts, sep_id, pad_id, banned_ids, vocab_size, dec, generator, use_cache))
    if not steps:
        return [[] for _ in prompts]
    tokens = torch.stack([t for t, _ in steps], 1).cpu()
    keep = torch.stack([a for _, a in steps], 1).cpu() & (tokens != sep_id)
    return [row[k].tolist() for row, k in zip(tokens, keep)]
