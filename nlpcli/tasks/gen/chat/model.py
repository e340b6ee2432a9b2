"""Causal LMs for `chat` behind one call: (ids, speakers, mask, positions, cache) -> (logits, cache).

`ChatGPT` is a small pre-LN GPT built from scratch (token + position + speaker embeddings,
tied output); `HFCausalLM` wraps any Hugging Face causal LM (GPT-2 family) the same way.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ....errors import ConfigError

Cache = Any  # a tuple of (k, v) per layer for ChatGPT; the model's own cache object for HF


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

    def forward(self, x: torch.Tensor, mask: torch.Tensor, past: tuple | None) -> tuple[torch.Tensor, tuple]:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        drop = self.attn_dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        x = x + self.dropout(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        x = x + self.dropout(self.mlp(self.ln2(x)))
        return x, (k, v)


class ChatGPT(nn.Module):
    """A GPT with speaker (segment) embeddings added to token and position embeddings."""

    def __init__(self, vocab_size: int, dim: int, layers: int, heads: int, max_len: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"hidden size {dim} is not divisible by {heads} heads")
        self.max_len = max_len
        self.tok = nn.Embedding(vocab_size, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.speaker = nn.Embedding(2, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.head.weight = self.tok.weight  # tied: fewer parameters, better small-data perplexity
        self.apply(_init_weights)

    def forward(
        self,
        ids: torch.Tensor,
        speakers: torch.Tensor,
        attention_mask: torch.Tensor,
        positions: torch.Tensor,
        past: Cache = None,
        select: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Cache]:
        """ids/speakers/positions [B, q]; attention_mask [B, K] over cached + new positions.

        With `select` [B, q] (bool) only those positions' logits come back, flattened [N, V]:
        the output layer is the largest cost of a small model, and context positions need none.
        """
        x = self.tok(ids) + self.pos(positions.clamp(0, self.max_len - 1)) + self.speaker(speakers)
        x = self.drop(x)
        mask = attention_mask_4d(attention_mask, ids.shape[1])
        new_past = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, mask, past[i] if past is not None else None)
            new_past.append(kv)
        if select is not None:
            x = x[select]
        return self.head(self.ln_f(x)), tuple(new_past)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=0.02)
    if isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.zeros_(m.bias)


class HFCausalLM(nn.Module):
    """A Hugging Face causal LM; speakers go in as token_type_ids (speaker tokens, as in CDial-GPT)."""

    speaker_ids: torch.Tensor

    def __init__(self, model: Any, speaker_token_ids: list[int], max_len: int):
        super().__init__()
        self.model = model
        self.max_len = max_len
        self.register_buffer("speaker_ids", torch.tensor(speaker_token_ids, dtype=torch.long), persistent=False)
        self.uses_types = model.config.model_type == "gpt2"  # GPT-2 embeds token_type_ids with its wte

    def forward(
        self,
        ids: torch.Tensor,
        speakers: torch.Tensor,
        attention_mask: torch.Tensor,
        positions: torch.Tensor,
        past: Cache = None,
        select: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Cache]:
        kwargs: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": attention_mask.long(),
            "position_ids": positions.clamp(min=0),
            "use_cache": not self.training,
        }
        if past is not None:
            kwargs["past_key_values"] = past
        if self.uses_types:
            kwargs["token_type_ids"] = self.speaker_ids[speakers]
        out = self.model(**kwargs)
        return (out.logits if select is None else out.logits[select]), out.past_key_values
