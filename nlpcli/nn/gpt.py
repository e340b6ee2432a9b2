"""A small GPT (pre-LN causal transformer) in the spirit of nanoGPT's model.py: the config beside the model.

Token + learned position embeddings (+ optional speaker / segment embeddings), pre-LN blocks, output tied
to the token embeddings, a KV cache. `chat` uses it with 2 speakers; `lm` (one GPT per direction, no
speakers) also scores many continuations of one shared prefix against that prefix's cache (`extend`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

Cache = Any  # a tuple of (k, v) per layer, each [B, heads, positions, head size]


@dataclass
class GPTConfig:
    vocab_size: int
    dim: int = 256
    layers: int = 4
    heads: int = 4
    positions: int = 128  # rows of the position table; later positions reuse the last row
    dropout: float = 0.1
    speakers: int = 0  # speaker (segment) embeddings: chat has 2; 0: none


def attention_mask_4d(key_mask: torch.Tensor, q_len: int) -> torch.Tensor:
    """[B, 1, q, K] bool: query i (the last q of K positions) sees real keys at or before itself.

    Every query also sees itself, so left-padding queries never get an all-masked row (NaN).
    """
    k_len = key_mask.shape[1]
    q_pos = torch.arange(k_len - q_len, k_len, device=key_mask.device)[:, None]
    k_pos = torch.arange(k_len, device=key_mask.device)[None, :]
    causal = k_pos <= q_pos
    allowed = causal[None] & key_mask[:, None, :].bool()
    allowed = allowed | (k_pos == q_pos)[None]
    return allowed[:, None]


def shared_prefix_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: tuple, past_mask: torch.Tensor, group: int
) -> torch.Tensor:
    """Attention of new positions q, k, v [C * group, H, t, d] (causal among themselves) that also see a
    prefix cache `past` (k, v) [C, H, P, d] shared by `group` consecutive rows; `past_mask` [C, P] marks
    the prefix's real keys. The cache is read once per chain, never copied per row."""
    c, h, p, d = past[0].shape
    t = q.shape[2]
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    if group == 1:  # nothing shared: one fused attention over the prefix's keys and the new ones
        allowed = torch.cat([past_mask[:, None, None, :].expand(-1, 1, t, p), causal.expand(c, 1, t, t)], -1)
        keys, values = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed)
    scale = d**-0.5
    qg = q.view(c, group, h, t, d)
    s_past = torch.einsum("cghtd,chpd->cghtp", qg, past[0]).reshape(c * group, h, t, p)
    s_new = q @ k.transpose(-1, -2)
    seen = past_mask.repeat_interleave(group, 0)[:, None, None, :].expand(-1, 1, t, p)
    allowed = torch.cat([seen, causal.expand(c * group, 1, t, t)], -1)
    weights = torch.softmax((torch.cat([s_past, s_new], -1) * scale).masked_fill(~allowed, float("-inf")), -1)
    w_past, w_new = weights.split([p, t], -1)
    out_past = torch.einsum("cghtp,chpd->cghtd", w_past.reshape(c, group, h, t, p), past[1])
    return out_past.reshape(c * group, h, t, d) + w_new @ v


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v

    def _rest(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        x = x + self.dropout(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.dropout(self.mlp(self.ln2(x)))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, past: tuple | None) -> tuple[torch.Tensor, tuple]:
        """`mask` [B, 1, q, K] over cached + new keys; None: plain causal attention (no cache, no left padding:
        right padding never leaks into real positions)."""
        q, k, v = self._qkv(x)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        drop = self.attn_dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, is_causal=mask is None)
        return self._rest(x, a), (k, v)

    def extend(
        self, x: torch.Tensor, past: tuple, past_mask: torch.Tensor, group: int
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """States of the new positions and their own keys and values (a kept cache takes them on)."""
        q, k, v = self._qkv(x)
        return self._rest(x, shared_prefix_attention(q, k, v, past, past_mask, group)), (k, v)


class GPT(nn.Module):
    """Token + position (+ speaker) embeddings, pre-LN blocks, final LayerNorm, output tied to the tokens."""

    speaker: nn.Embedding | None

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.dim % cfg.heads:
            raise ConfigError(f"hidden size {cfg.dim} is not divisible by {cfg.heads} heads")
        self.cfg = cfg
        self.context_len = cfg.positions  # tokens one input may hold (chat fits its history to it)
        self.tok = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos = nn.Embedding(cfg.positions, cfg.dim)
        self.speaker = nn.Embedding(cfg.speakers, cfg.dim) if cfg.speakers else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.dropout) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # tied: fewer parameters, better small-data perplexity
        self.apply(_init_weights)

    def embed(self, ids: torch.Tensor, positions: torch.Tensor | None, speakers: torch.Tensor | None) -> torch.Tensor:
        if positions is None:
            positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.tok(ids) + self.pos(positions.clamp(0, self.context_len - 1))
        if self.speaker is not None and speakers is not None:
            x = x + self.speaker(speakers)
        return self.drop(x)

    def trunk(
        self,
        ids: torch.Tensor,
        speakers: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        past: Cache = None,
    ) -> tuple[torch.Tensor, Cache]:
        """States before the final LayerNorm [B, q, D] and the cache. Without `attention_mask` every key is
        real and positions run from 0 (no cache): attention takes the plain causal path."""
        x = self.embed(ids, positions, speakers)
        mask = None
        if attention_mask is not None or past is not None:
            if attention_mask is None:
                attention_mask = torch.ones(ids.shape[0], past[0][0].shape[2] + ids.shape[1], dtype=torch.bool)
            mask = attention_mask_4d(attention_mask.to(ids.device), ids.shape[1])
        new_past = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, mask, past[i] if past is not None else None)
            new_past.append(kv)
        return x, tuple(new_past)

    def forward(
        self,
        ids: torch.Tensor,
        speakers: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        past: Cache = None,
        select: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Cache]:
        """ids/speakers/positions [B, q]; attention_mask [B, K] over cached + new positions -> (logits, cache).

        With `select` [B, q] (bool) only those positions' logits come back, flattened [N, V]:
        the output layer is the largest cost of a small model, and context positions need none.
        """
        x, new_past = self.trunk(ids, speakers, attention_mask, positions, past)
        if select is not None:
            x = x[select]
        return self.head(self.ln_f(x)), new_past

    def extend(
        self, ids: torch.Tensor, positions: torch.Tensor, past: Cache, past_mask: torch.Tensor, group: int
    ) -> tuple[torch.Tensor, Cache]:
        """Final states [C * group, t, D] of `group` continuations per prefix, and the new positions' own cache:
        rows c * group .. c * group + group - 1 continue prefix c of the cache `past` (batch C, real keys
        `past_mask` [C, P])."""
        x = self.embed(ids, positions, None)
        new = []
        for i, block in enumerate(self.blocks):
            x, kv = cast(Block, block).extend(x, past[i], past_mask, group)
            new.append(kv)
        return self.ln_f(x), tuple(new)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=0.02)
    if isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.zeros_(m.bias)
