"""The chat task's config: the model (from scratch, or what `--init` starts from) and the sampler of replies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ....config import DROPOUT, POSITIVE, PROBABILITY, Section, TaskConfig, TrainerConfig, opt
from .decode import Decoding

DECODING_FIELDS = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty")


@dataclass
class ChatModelConfig(Section):
    init: str = opt(
        "",
        "A Hugging Face causal LM (name or path) or an nlpcli lm checkpoint (arch transformer, unit char) to "
        "fine-tune; empty: a small GPT from scratch.",
    )
    # all (not responses): every context turn is Weibo text too, twice the training signal for the same compute
    # (the benchmark's setting; its defaults here are what benchmarks/chat_lccc.py measured best).
    loss: str = opt("all", "Tokens trained on: responses | all (every token after [CLS]).")
    hidden_size: int = opt(128, "Width of the from-scratch GPT.", **POSITIVE)
    layers: int = opt(3, "Transformer layers of the from-scratch GPT.", **POSITIVE)
    heads: int = opt(4, "Attention heads of the from-scratch GPT.", **POSITIVE)
    dropout: float = opt(0.1, "Dropout of the from-scratch GPT.", **DROPOUT)
    context_len: int = opt(64, "Context in tokens: history + reply.", **POSITIVE)
    max_turn_len: int = opt(30, "In training a longer turn keeps its first tokens (so a window holds 2+ turns).")
    char_min_count: int = opt(2, "Training occurrences a character needs to enter the vocabulary (from scratch).")
    vocab_size: int = opt(4000, "Most frequent characters kept (from scratch).")
    init_lr: float = opt(
        0.0,
        "Learning rate of an --init model; 0: by what it starts from (1e-3 for an nlpcli lm such as gpt-zh, "
        "5e-5 for a Hugging Face model).",
    )


@dataclass
class ChatInference(Section):
    max_new_tokens: int = opt(32, "Longest reply in tokens.")
    temperature: float = opt(0.7, "Sampling temperature; 0 or below: greedy.", low=None)
    top_k: int = opt(0, "Sample among the k most likely tokens; 0: off.")
    top_p: float = opt(
        0.9, "Nucleus sampling: the most likely tokens holding this much probability; 1: off.", **PROBABILITY
    )
    repetition_penalty: float = opt(1.2, "Above 1 discourages tokens already in the context.")
    seed: int = opt(42, "Seed of the sampler (the same seed, history and batching give the same replies).", low=None)
    batch_size: int = opt(64, "Histories per generation batch.", **POSITIVE)
    eval_samples: int = opt(100, "Histories whose sampled replies give distinct-1/2 and tokens/s in evaluate.")

    def decoding(self) -> Decoding:
        return Decoding(**{k: getattr(self, k) for k in DECODING_FIELDS})


@dataclass
class ChatConfig(TaskConfig):
    # ema_decay 0.999: the dev perplexity of a 30-minute run flattens while the model still overfits; the
    # average of the last ~1,000 steps had the lower dev perplexity from scratch and from gpt-zh alike.
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(
            epochs=50,
            batch_size=32,
            lr=2e-3,
            warmup_steps=50,
            schedule="cosine",
            eval_every=300,
            dev_max=300,
            ema_decay=0.999,
        )
    )
    model: ChatModelConfig = field(default_factory=ChatModelConfig)
    inference: ChatInference = field(default_factory=ChatInference)
    # `model.max_len` of format 2 (and older presets and options) is the context.
    MOVED: ClassVar[dict[str, tuple[str, ...]]] = {"model.max_len": ("model.context_len",)}
