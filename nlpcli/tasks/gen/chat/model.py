"""Causal LMs for `chat` behind one call: (ids, speakers, mask, positions, cache) -> (logits, cache).

The from-scratch model is `nlpcli.nn.gpt.GPT` with two speakers (token + position + speaker embeddings,
tied output); `HFCausalLM` wraps any Hugging Face causal LM (GPT-2 family) the same way.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

Cache = Any  # a tuple of (k, v) per layer for GPT; the model's own cache object for HF


class HFCausalLM(nn.Module):
    """A Hugging Face causal LM; speakers go in as token_type_ids (speaker tokens, as in CDial-GPT)."""

    speaker_ids: torch.Tensor

    def __init__(self, model: Any, speaker_token_ids: list[int], context_len: int):
        super().__init__()
        self.model = model
        self.context_len = context_len
        self.register_buffer("speaker_ids", torch.tensor(speaker_token_ids, dtype=torch.long), persistent=False)
        self.uses_types = model.config.model_type == "gpt2"  # GPT-2 embeds token_type_ids with its wte
        # transformers 5 renamed past_key_values to cache (the old name warns, and goes in 5.40); 4.x knows only it
        self.cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

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
            kwargs[self.cache_arg] = past
        if self.uses_types:
            kwargs["token_type_ids"] = self.speaker_ids[speakers]
        out = self.model(**kwargs)
        cache = out["cache"] if "cache" in out else out.get("past_key_values")
        return (out.logits if select is None else out.logits[select]), cache
