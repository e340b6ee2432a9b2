"""Relation (SPO triple) extraction: DGCNN + "probabilistic graph", P(s, p, o) = P(s) P(o, p | s).

Subject start/end pointers over the text; for one subject, object start/end pointers per predicate.
Training samples one gold subject per sentence per step; prediction decodes every subject of a
batch and scores all their objects in one batched pass.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...data import vocab as V
from ...data.batching import pad_ids, windows
from ...data.io import ReadStats
from ...errors import DataError
from ...metrics import set_prf
from ...nn.dgcnn import DGCNN, CharWordEmbedding, GatedDilatedBlock
from ..base import Pipeline, TaskConfig
from .relation_data import (
    FORMATS, IeExample, Triple, check_predicates, gold_key, location_counts, normalize_mention, predicate_types,
    read_schema, read_ske,
)

# A predicted triple: (subject start, subject end, predicate index, object start, object end), ends inclusive.
Found = tuple[int, int, int, int, int]


@dataclass
class IeConfig(TaskConfig):
    schema: str = ""  # the schema file (JSON Lines); without it, predicates come from the training data
    hidden_size: int = 64  # 128 learns no better on 2.6k sentences and runs ~3x slower on CPU
    dilations: str = "1,2,5,1,2,5,1,2,5,1,1,1"
    kernel_size: int = 3
    dropout: float = 0.1
    embed_dropout: float = 0.25
    attention_heads: int = 4  # one self-attention layer before the heads; 0: none
    use_words: bool = True  # add the jieba word of each char
    word_dim: int = 64
    word_min_count: int = 2
    word_vocab_size: int = 50000
    char_min_count: int = 1
    max_len: int = 512  # window size in characters (and position-embedding size); longer texts are windowed
    window_overlap: int = 64
    max_relative: int = 64  # relative distances to the subject are clipped here
    start_threshold: float = 0.5
    end_threshold: float = 0.4
    eval_batch_size: int = 64
    max_subjects: int = 512  # subjects scored per object pass at predict time (bounds memory)
    epochs: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999


class IeModel(nn.Module):
    """Char+word+position embedding, gated dilated convolutions, self-attention, subject and object heads."""

    def __init__(self, cfg: IeConfig, num_chars: int, num_words: int, num_predicates: int):
        super().__init__()
        d = cfg.hidden_size
        self.embed = CharWordEmbedding(num_chars, d, num_words, cfg.word_dim if cfg.use_words else 0, cfg.embed_dropout)
        self.position = nn.Embedding(cfg.max_len, d)
        dilations = [int(r) for r in str(cfg.dilations).split(",") if r.strip()]
        self.dgcnn = DGCNN(d, dilations, cfg.kernel_size, cfg.dropout)
        self.attention = nn.MultiheadAttention(d, cfg.attention_heads, cfg.dropout, batch_first=True) \
            if cfg.attention_heads else None
        self.attention_norm = nn.LayerNorm(d)
        self.subject_head = nn.Linear(d, 2)
        self.subject_proj = nn.Linear(2 * d, d)
        self.relative = nn.Embedding(cfg.max_relative + 1, d)
        self.max_relative = cfg.max_relative
        self.object_block = GatedDilatedBlock(d, 1, cfg.kernel_size, cfg.dropout)
        self.object_head = nn.Linear(d, 2 * num_predicates)
        self.num_predicates = num_predicates
        # Pointers are rare positives: start their biases at a small prior so early steps are not spent
        # pushing 2 x P x L sigmoid outputs down from 0.5 (a large, noisy initial loss).
        nn.init.constant_(self.subject_head.bias, -3.0)
        nn.init.constant_(self.object_head.bias, -5.0)

    def encode(self, char_ids: torch.Tensor, word_ids: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        """Shared features [B, L, d]."""
        pos = torch.arange(char_ids.shape[1], device=char_ids.device)
        x = self.embed(char_ids, word_ids) + self.position(pos)
        h = self.dgcnn(x, mask)
        if self.attention is not None:
            a, _ = self.attention(h, h, h, key_padding_mask=~mask, need_weights=False)
            h = self.attention_norm(h + a) * mask.unsqueeze(-1).to(h.dtype)
        return h

    def subject_logits(self, h: torch.Tensor) -> torch.Tensor:
        """[B, L, 2]: start and end logits."""
        return self.subject_head(h)

    def object_logits(self, h: torch.Tensor, mask: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        """Object start/end logits [N, L, P, 2] for N (features, subject) pairs: h [N, L, d], start/end [N]."""
        rows = torch.arange(h.shape[0], device=h.device)
        subject = self.subject_proj(torch.cat([h[rows, start], h[rows, end]], -1))
        pos = torch.arange(h.shape[1], device=h.device)
        rel_start = (pos[None] - start[:, None]).abs().clamp(max=self.max_relative)
        rel_end = (pos[None] - end[:, None]).abs().clamp(max=self.max_relative)
        x = h + subject.unsqueeze(1) + self.relative(rel_start) + self.relative(rel_end)
        x = self.object_block(x, mask)
        return self.object_head(x).view(h.shape[0], h.shape[1], self.num_predicates, 2)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: subject logits [B, L, 2] and object logits [B, L, P, 2] for the sampled subjects."""
        mask = batch["attention_mask"]
        h = self.encode(batch["char_ids"], batch.get("word_ids"), mask)
        subject = batch["subject"]
        return self.subject_logits(h), self.object_logits(h, mask, subject[:, 0], subject[:, 1])


def pointer_spans(start_prob: torch.Tensor, end_prob: torch.Tensor, mask: torch.Tensor,
                  start_threshold: float, end_threshold: float) -> torch.Tensor:
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


def decode_objects(object_prob: torch.Tensor, mask: torch.Tensor, start_threshold: float,
                   end_threshold: float) -> torch.Tensor:
    """Object spans from [N, L, P, 2] probabilities and a [N, L] mask: rows [n, predicate, start, end]."""
    per_predicate = object_prob.permute(0, 2, 3, 1)  # [N, P, 2, L]
    return pointer_spans(per_predicate[:, :, 0], per_predicate[:, :, 1], mask.unsqueeze(1),
                         start_threshold, end_threshold)


class IePipeline(Pipeline):
    name = "ie"
    summary = "DGCNN + probabilistic-graph relation (SPO triple) extraction"
    Config = IeConfig
    main_metric = "f1"
    formats = FORMATS

    def __init__(self, config: IeConfig, assets: dict[str, Any], model: nn.Module):
        super().__init__(config, assets, model)
        self.predicates: list[str] = assets["predicates"]
        self.predicate_ids = {p: i for i, p in enumerate(self.predicates)}
        self.types: dict[str, list[str]] = assets.get("types", {})
        self.vocab = V.CharWordVocab(assets)
        self._ids_cache: dict[str, dict[str, list[int]]] = {}

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def read(cls, path, fmt=None, skip_bad=False) -> tuple[list[IeExample], ReadStats]:
        return read_ske(path, fmt, skip_bad)

    @classmethod
    def check_examples(cls, config: IeConfig, examples: list[IeExample], stats: ReadStats | None) -> list[IeExample]:
        """With a schema, every predicate must be in it (a line-numbered error, or skipped with --skip-bad)."""
        if not config.schema:
            return examples
        return check_predicates(examples, set(read_schema(config.schema).types), config.schema, stats)

    @classmethod
    def create(cls, config: IeConfig, train_examples: list[IeExample]) -> "IePipeline":
        schema = read_schema(config.schema) if config.schema else None
        types = predicate_types(train_examples, schema)
        predicates = schema.predicates if schema else sorted({t.predicate for ex in train_examples for t in ex.triples})
        if not predicates:
            raise DataError("training data", "no triples in the training data and no --schema")
        texts = [ex.text for ex in train_examples]
        assets: dict[str, Any] = {
            "predicates": predicates, "types": types, "train_triples": location_counts(train_examples),
        } | V.CharWordVocab.build_assets(texts, config.char_min_count, config.use_words, config.word_min_count,
                                         config.word_vocab_size)
        return cls.build(config, assets)

    @classmethod
    def build(cls, config: IeConfig, assets: dict[str, Any], checkpoint_dir: Path | None = None) -> "IePipeline":
        n_words = len(assets.get("words") or [])
        return cls(config, assets, IeModel(config, len(assets["chars"]), n_words, len(assets["predicates"])))

    # --- encoding ---------------------------------------------------------------------------
    def training_examples(self, examples: list[IeExample]) -> list[IeExample]:
        """Long texts become overlapping windows; a triple stays where both its ends fit whole."""
        out = []
        for ex in examples:
            for w in windows(len(ex.text), self.config.max_len, self.config.window_overlap):
                triples = [_shift(t, w.start, w.end) for t in ex.triples]
                kept = [t for t in triples if t.subject_spans and t.object_spans]
                out.append(IeExample(ex.text[w.start : w.end], kept, ex.line, w.start, ex.path))
        return out

    def example_length(self, example: IeExample) -> int:
        return len(example.text)

    def encode(self, text: str) -> dict[str, list[int]]:
        ids = self._ids_cache.get(text)
        if ids is None:
            ids = self.vocab.encode(text)
            if len(self._ids_cache) > 200_000:  # training sets repeat texts every epoch; bound the cache
                self._ids_cache.clear()
            self._ids_cache[text] = ids
        return ids

    def collate_inputs(self, texts: list[str]) -> dict[str, Any]:
        encoded = [self.encode(t) for t in texts]
        batch: dict[str, Any] = {k: pad_ids([e[k] for e in encoded]) for k in encoded[0]}
        lengths = torch.tensor([len(t) for t in texts])
        batch["attention_mask"] = torch.arange(batch["char_ids"].shape[1])[None] < lengths[:, None]
        batch["_tokens"] = int(lengths.sum())
        return batch

    def collate(self, examples: list[IeExample]) -> dict[str, Any]:
        """Inputs plus targets: all gold subjects, one sampled subject per text and its objects per predicate."""
        batch = self.collate_inputs([ex.text for ex in examples])
        b, width = batch["char_ids"].shape
        subject_labels = torch.zeros(b, width, 2)
        object_labels = torch.zeros(b, width, len(self.predicates), 2)
        sampled = torch.zeros(b, 2, dtype=torch.long)
        s_index, o_index = [], []
        for i, ex in enumerate(examples):
            spans = sorted({s for t in ex.triples for s in t.subject_spans})
            s_index.extend((i, s, e) for s, e in spans)
            if not spans:
                continue
            chosen = random.choice(spans)
            sampled[i] = torch.tensor(chosen)
            for t in ex.triples:
                if chosen in t.subject_spans and t.predicate in self.predicate_ids:
                    p = self.predicate_ids[t.predicate]
                    o_index.extend((i, s, e, p) for s, e in t.object_spans)
        if s_index:
            idx = torch.tensor(s_index)
            subject_labels[idx[:, 0], idx[:, 1], 0] = 1
            subject_labels[idx[:, 0], idx[:, 2], 1] = 1
        if o_index:
            idx = torch.tensor(o_index)
            object_labels[idx[:, 0], idx[:, 1], idx[:, 3], 0] = 1
            object_labels[idx[:, 0], idx[:, 2], idx[:, 3], 1] = 1
        batch.update(subject=sampled, subject_labels=subject_labels, object_labels=object_labels)
        return batch

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """BCE on subject pointers plus BCE on object pointers (summed over predicates), masked means, 1:1."""
        subject_logits, object_logits = model(batch)
        mask = batch["attention_mask"].to(subject_logits.dtype)
        s_loss = F.binary_cross_entropy_with_logits(subject_logits, batch["subject_labels"], reduction="none").sum(-1)
        o_loss = F.binary_cross_entropy_with_logits(object_logits.float(), batch["object_labels"], reduction="none")
        o_loss = o_loss.sum((-2, -1))
        total = mask.sum().clamp(min=1)
        return (s_loss * mask).sum() / total + (o_loss * mask).sum() / total

    # --- prediction -------------------------------------------------------------------------
    @torch.no_grad()
    def extract_batch(self, texts: list[str]) -> list[list[Found]]:
        """Triples (offsets within each text) for one batch: all subjects decoded, their objects in one pass."""
        cfg, model = self.config, self.model
        batch = self.to_device(self.collate_inputs(texts))
        mask = batch["attention_mask"]
        h = model.encode(batch["char_ids"], batch.get("word_ids"), mask)
        s_prob = torch.sigmoid(model.subject_logits(h).float())
        subjects = pointer_spans(s_prob[..., 0], s_prob[..., 1], mask, cfg.start_threshold, cfg.end_threshold)
        found: list[list[Found]] = [[] for _ in texts]
        for c in range(0, subjects.shape[0], cfg.max_subjects):
            subs = subjects[c : c + cfg.max_subjects]
            rows = subs[:, 0]
            o_prob = torch.sigmoid(model.object_logits(h[rows], mask[rows], subs[:, 1], subs[:, 2]).float())
            objects = decode_objects(o_prob, mask[rows], cfg.start_threshold, cfg.end_threshold)
            triples = torch.cat([subs[objects[:, 0]], objects[:, 1:]], -1).tolist()  # [b, ss, se, p, os, oe]
            for b, ss, se, p, os_, oe in triples:
                found[b].append((ss, se, p, os_, oe))
        return found

    def predict_found(self, texts: list[str], batch_size: int | None = None) -> list[list[Found]]:
        """Triples for each text; long texts go through windows (a triple belongs to its subject's window)."""
        cfg = self.config
        bs = batch_size or cfg.eval_batch_size
        pieces = [(ti, w) for ti, text in enumerate(texts)
                  for w in windows(len(text), cfg.max_len, cfg.window_overlap) if w.end > w.start]
        pieces.sort(key=lambda p: p[1].end - p[1].start)
        results: list[set[Found]] = [set() for _ in texts]
        self.model.eval()
        for i in range(0, len(pieces), bs):
            chunk = pieces[i : i + bs]
            batch_found = self.extract_batch([texts[ti][w.start : w.end] for ti, w in chunk])
            for (ti, w), found in zip(chunk, batch_found):
                for ss, se, p, os_, oe in found:
                    if w.own_start <= ss + w.start < w.own_end:
                        results[ti].add((ss + w.start, se + w.start, p, os_ + w.start, oe + w.start))
        return [sorted(r) for r in results]

    def spo_list(self, text: str, found: list[Found]) -> list[dict[str, Any]]:
        """Predictions in the training format plus offsets; one entry per distinct (s, p, o) string triple."""
        out, seen = [], set()
        for ss, se, p, os_, oe in found:
            pred = self.predicates[p]
            subject, obj = text[ss : se + 1], text[os_ : oe + 1]
            if (subject, pred, obj) in seen:
                continue
            seen.add((subject, pred, obj))
            s_type, o_type = self.types.get(pred, ["", ""])
            out.append({"subject": subject, "predicate": pred, "object": obj, "subject_type": s_type,
                        "object_type": o_type, "subject_start": ss, "subject_end": se,
                        "object_start": os_, "object_end": oe})
        return out

    def evaluate(self, examples: list[IeExample], batch_size: int | None = None) -> dict[str, Any]:
        """Triple-level exact-match micro P/R/F1 (official normalisation) and a per-predicate table."""
        texts = [ex.text for ex in examples]
        preds = [
            {(normalize_mention(d["subject"]), d["predicate"], normalize_mention(d["object"]))
             for d in self.spo_list(text, found)}
            for text, found in zip(texts, self.predict_found(texts, batch_size))
        ]
        gold = [{gold_key(t) for t in ex.triples} for ex in examples]
        metrics = set_prf(gold, preds, type_of=lambda triple: triple[1])
        unknown = sum(t.predicate not in self.predicate_ids for ex in examples for t in ex.triples)
        metrics["examples"] = len(examples)
        if unknown:  # scored as misses: the model cannot predict them
            metrics["gold_triples_with_unknown_predicate"] = unknown
        return metrics

    def predict_records(
        self, records: Iterable[dict[str, Any]], batch_size: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Adds `spo_list` [{subject, predicate, object, subject_type, object_type, subject_start,
        subject_end, object_start, object_end}] (ends inclusive) to each record."""
        for chunk in self.record_chunks(records, batch_size):
            texts = [r["text"] for r in chunk]
            for rec, found in zip(chunk, self.predict_found(texts, batch_size)):
                yield {**rec, "spo_list": self.spo_list(rec["text"], found)}


def _shift(t: Triple, start: int, end: int) -> Triple:
    """The triple's mentions inside [start, end), in window coordinates."""
    def inside(spans):
        return [(s - start, e - start) for s, e in spans if s >= start and e < end]

    return Triple(t.subject, t.predicate, t.object, t.subject_type, t.object_type,
                  inside(t.subject_spans), inside(t.object_spans), t.case_folded)
