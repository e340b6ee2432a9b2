"""GlobalPointer NER, nested and flat, over a from-scratch DGCNN encoder or any Hugging Face encoder."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...data import vocab as V
from ...data.batching import pad_ids, windows
from ...data.io import ReadStats
from ...errors import DataError
from ...metrics import set_prf
from ...nn import hf
from ...nn.dgcnn import DGCNN, CharWordEmbedding
from ...nn.globalpointer import EfficientGlobalPointer, GlobalPointer, decode_spans, globalpointer_loss
from ..base import Pipeline, TaskConfig
from .ner_data import FORMATS, NerExample, read_ner

SCRATCH = "dgcnn"


@dataclass
class NerConfig(TaskConfig):
    encoder: str = SCRATCH  # "dgcnn" (from scratch) or a Hugging Face encoder name / path
    head: str = "efficient"  # efficient | standard GlobalPointer
    head_size: int = 64
    rope: bool = True
    hidden_size: int = 256
    dilations: str = "1,2,4,8,1,1"
    kernel_size: int = 3
    dropout: float = 0.1
    embed_dropout: float = 0.2
    use_words: bool = True  # add the jieba word of each char
    word_dim: int = 128
    word_min_count: int = 2
    word_vocab_size: int = 50000
    char_min_count: int = 1
    max_len: int = 256  # window size in characters; longer texts are windowed, never cut
    window_overlap: int = 64
    encoder_lr: float = 3e-5  # learning rate of a Hugging Face encoder (the head uses lr)
    threshold: float = 0.0
    # Longest span predicted; 0: the longest entity seen in training. Spans longer than any
    # trained on get untrained (often positive) scores, e.g. on texts longer than the training ones.
    max_span_len: int = 0
    eval_batch_size: int = 64
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 200
    ema_decay: float = 0.0


@dataclass
class Encoded:
    """Model inputs of one text and, per position, the [start, end) characters it covers."""

    ids: dict[str, list[int]]
    offsets: list[tuple[int, int]]  # (0, 0) marks special tokens, which never start or end a span


class ScratchEncoder(nn.Module):
    def __init__(self, cfg: NerConfig, num_chars: int, num_words: int):
        super().__init__()
        word_dim = cfg.word_dim if cfg.use_words else 0
        self.embed = CharWordEmbedding(num_chars, cfg.hidden_size, num_words, word_dim, cfg.embed_dropout)
        dilations = [int(r) for r in str(cfg.dilations).split(",") if r.strip()]
        self.dgcnn = DGCNN(cfg.hidden_size, dilations, cfg.kernel_size, cfg.dropout)
        self.out_dim = cfg.hidden_size

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.embed(batch["char_ids"], batch.get("word_ids"))
        return self.dgcnn(x, batch["attention_mask"])


class HFEncoder(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.out_dim = model.config.hidden_size

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state


class NerModel(nn.Module):
    def __init__(self, encoder: nn.Module, cfg: NerConfig, num_types: int):
        super().__init__()
        self.encoder = encoder
        head = EfficientGlobalPointer if cfg.head == "efficient" else GlobalPointer
        self.head = head(encoder.out_dim, num_types, cfg.head_size, rope=cfg.rope)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Span scores [B, types, L, L]; spans touching padding or special tokens are masked."""
        return self.head(self.encoder(batch), batch["span_mask"])


class NerPipeline(Pipeline):
    name = "ner"
    summary = "GlobalPointer named-entity recognition (nested and flat)"
    Config = NerConfig
    main_metric = "f1"
    formats = FORMATS

    def __init__(self, config: NerConfig, assets: dict[str, Any], model: nn.Module, tokenizer=None):
        super().__init__(config, assets, model)
        self.types: list[str] = assets["types"]
        self.type_ids = {t: i for i, t in enumerate(self.types)}
        self.tokenizer = tokenizer
        self.vocab = V.CharWordVocab(assets) if tokenizer is None else None

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def read(cls, path, fmt=None, skip_bad=False) -> tuple[list[NerExample], ReadStats]:
        return read_ner(path, fmt, skip_bad)

    @classmethod
    def create(cls, config: NerConfig, train_examples: list[NerExample]) -> "NerPipeline":
        types = sorted({t for ex in train_examples for _, _, t in ex.spans})
        if not types:
            raise DataError("training data", "no entities in the training data")
        longest = max(e - s + 1 for ex in train_examples for s, e, _ in ex.spans)
        assets: dict[str, Any] = {"types": types, "longest_entity": longest}
        if config.encoder == SCRATCH:
            texts = [ex.text for ex in train_examples]
            assets |= V.CharWordVocab.build_assets(texts, config.char_min_count, config.use_words,
                                                   config.word_min_count, config.word_vocab_size)
            return cls.build(config, assets)
        model, tokenizer = hf.load_pretrained(config.encoder, "encoder")
        return cls(config, assets, NerModel(HFEncoder(model), config, len(types)), tokenizer)

    @classmethod
    def build(cls, config: NerConfig, assets: dict[str, Any], checkpoint_dir: Path | None = None) -> "NerPipeline":
        if config.encoder == SCRATCH:
            n_words = len(assets.get("words") or [])
            model = NerModel(ScratchEncoder(config, len(assets["chars"]), n_words), config, len(assets["types"]))
            return cls(config, assets, model)
        if checkpoint_dir is None:
            raise ValueError("a Hugging Face encoder is rebuilt from a checkpoint directory")
        encoder, tokenizer = hf.rebuild(checkpoint_dir, "encoder")
        return cls(config, assets, NerModel(HFEncoder(encoder), config, len(assets["types"])), tokenizer)

    def write_extra(self, directory: Path) -> None:
        if self.tokenizer is not None:
            hf.save(self.model.encoder.model, self.tokenizer, directory)

    def param_groups(self) -> list[dict[str, Any]] | None:
        if self.tokenizer is None:
            return None
        enc = list(self.model.encoder.parameters())
        head = list(self.model.head.parameters())
        return [{"params": enc, "lr_scale": self.config.encoder_lr / self.config.lr}, {"params": head}]

    # --- encoding ---------------------------------------------------------------------------
    def training_examples(self, examples: list[NerExample]) -> list[NerExample]:
        """Long texts become overlapping windows; each window keeps the spans it holds whole."""
        out = []
        for ex in examples:
            for w in windows(len(ex.text), self.config.max_len, self.config.window_overlap):
                spans = [(s - w.start, e - w.start, t) for s, e, t in ex.spans if s >= w.start and e < w.end]
                out.append(NerExample(ex.text[w.start : w.end], spans, line=ex.line, offset=w.start))
        return out

    def example_length(self, example: NerExample) -> int:
        return len(example.text)

    def encode(self, text: str) -> Encoded:
        if self.tokenizer is not None:
            enc = self.tokenizer(text, return_offsets_mapping=True, truncation=True, max_length=512)
            return Encoded({"input_ids": enc["input_ids"]}, [tuple(o) for o in enc["offset_mapping"]])
        return Encoded(self.vocab.encode(text), [(i, i + 1) for i in range(len(text))])

    def collate(self, examples: list[NerExample]) -> dict[str, Any]:
        encoded = [self.encode(ex.text) for ex in examples]
        batch: dict[str, Any] = {k: pad_ids([e.ids[k] for e in encoded]) for k in encoded[0].ids}
        width = next(iter(batch.values())).shape[1]
        attention = torch.zeros(len(encoded), width, dtype=torch.bool)
        spannable = torch.zeros(len(encoded), width, dtype=torch.bool)
        labels = torch.zeros(len(encoded), len(self.types), width, width, dtype=torch.bool)
        index: list[tuple[int, int, int, int]] = []
        for b, (ex, enc) in enumerate(zip(examples, encoded)):
            attention[b, : len(enc.offsets)] = True
            start_pos, end_pos = {}, {}
            for p, (s, e) in enumerate(enc.offsets):
                if e > s:
                    spannable[b, p] = True
                    start_pos.setdefault(s, p)
                    end_pos[e - 1] = p
            for s, e, t in ex.spans:
                if s in start_pos and e in end_pos and t in self.type_ids:
                    index.append((b, self.type_ids[t], start_pos[s], end_pos[e]))
        if index:
            labels[tuple(torch.tensor(index).T)] = True
        batch.update(attention_mask=attention, span_mask=spannable, labels=labels,
                     _offsets=[e.offsets for e in encoded], _tokens=int(attention.sum()))
        return batch

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return globalpointer_loss(model(batch), batch["labels"])

    # --- prediction -------------------------------------------------------------------------
    @torch.no_grad()
    def predict_spans(self, texts: list[str], batch_size: int | None = None) -> list[list[tuple[int, int, str]]]:
        """Entity spans (start, end inclusive, type) for each text; long texts go through windows."""
        cfg = self.config
        bs = batch_size or cfg.eval_batch_size
        pieces = []  # (text index, window)
        for ti, text in enumerate(texts):
            for w in windows(len(text), cfg.max_len, cfg.window_overlap):
                if w.end > w.start:
                    pieces.append((ti, w))
        pieces.sort(key=lambda p: p[1].end - p[1].start)
        results: list[set[tuple[int, int, str]]] = [set() for _ in texts]
        limit = cfg.max_span_len or self.assets.get("longest_entity", 0)
        self.model.eval()
        for i in range(0, len(pieces), bs):
            chunk = pieces[i : i + bs]
            batch = self.collate([NerExample(texts[ti][w.start : w.end]) for ti, w in chunk])
            logits = self.model(self.to_device(batch))
            if limit:
                n = logits.shape[-1]
                too_long = torch.ones(n, n, dtype=torch.bool, device=logits.device).triu(limit)
                logits = logits.masked_fill(too_long, float("-inf"))
            for (ti, w), offsets, found in zip(chunk, batch["_offsets"], decode_spans(logits, cfg.threshold)):
                for t, pi, pj in found:
                    s, e = w.start + offsets[pi][0], w.start + offsets[pj][1] - 1
                    if w.own_start <= s < w.own_end:
                        results[ti].add((s, e, self.types[t]))
        return [sorted(r) for r in results]

    def evaluate(self, examples: list[NerExample], batch_size: int | None = None) -> dict[str, Any]:
        for ex in examples:
            for _, _, t in ex.spans:
                if t not in self.type_ids:
                    raise DataError(
                        "evaluation data", f"unknown entity type {t!r} (line {ex.line}); model knows {self.types}"
                    )
        preds = self.predict_spans([ex.text for ex in examples], batch_size)
        gold = [ex.spans for ex in examples]
        metrics = set_prf(gold, preds, type_of=lambda span: span[2])
        metrics["nested"] = _nested_counts(gold, preds)
        metrics["examples"] = len(examples)
        return metrics

    def predict_records(
        self, records: Iterable[dict[str, Any]], batch_size: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Adds `entities`: [{type, start, end (inclusive), text}] to each record."""
        for chunk in self.record_chunks(records, batch_size):
            texts = [r["text"] for r in chunk]
            for rec, spans in zip(chunk, self.predict_spans(texts, batch_size)):
                text = rec["text"]
                ents = [{"type": t, "start": s, "end": e, "text": text[s : e + 1]} for s, e, t in spans]
                yield {**rec, "entities": ents}


def _nested_counts(gold: list[list[tuple]], preds: list[list[tuple]]) -> dict[str, int]:
    """Gold entities that nest in or around another gold entity, and how many of them were predicted."""
    n_gold = n_hit = 0
    for g, p in zip(gold, preds):
        pset = set(p)
        for a in g:
            if any(b != a and (b[0] <= a[0] and a[1] <= b[1] or a[0] <= b[0] and b[1] <= a[1]) for b in g):
                n_gold += 1
                n_hit += a in pset
    return {"gold": n_gold, "correct": n_hit}
