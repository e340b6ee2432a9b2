"""Relation (SPO triple) extraction: DGCNN + "probabilistic graph", P(s, p, o) = P(s) P(o, p | s).

Subject start/end pointers over the text; for one subject, object start/end pointers per predicate.
Training samples one gold subject per sentence per step; prediction decodes every subject of a
batch and scores all their objects in one batched pass.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from rich.console import RenderableType
from torch import nn

from ....config import Section, TaskConfig, TrainerConfig
from ....data.batching import pad_ids, windows
from ....data.io import ReadStats
from ....errors import DataError
from ....metrics import set_prf
from ....nn.encoder import EncoderConfig, TextEncoder, build_scratch
from ....tables import prf_table
from ...base import Pipeline, TextPiece
from .data import (
    FORMATS,
    IeExample,
    Triple,
    check_predicates,
    gold_key,
    location_counts,
    normalize_mention,
    predicate_types,
    read_schema,
    read_ske,
)
from .decode import decode_objects, pointer_spans
from .model import IeModel

# A predicted triple: (subject start, subject end, predicate index, object start, object end), ends inclusive.
Found = tuple[int, int, int, int, int]


@dataclass
class IeModelConfig(Section):
    schema: str = ""  # the schema file (JSON Lines); without it, predicates come from the training data
    attention_heads: int = 4  # one self-attention layer before the heads; 0: none
    max_len: int = 512  # window size in characters (and position-embedding size); longer texts are windowed
    window_overlap: int = 64
    max_relative: int = 64  # relative distances to the subject are clipped here


@dataclass
class IeInference(Section):
    start_threshold: float = 0.5
    end_threshold: float = 0.4
    batch_size: int = 64
    max_subjects: int = 512  # subjects scored per object pass (bounds memory)


@dataclass
class IeConfig(TaskConfig):
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(epochs=300, batch_size=32, lr=2e-3, warmup_steps=200, ema_decay=0.999)
    )
    # hidden 64: 128 learns no better on 2.6k sentences and runs ~3x slower on CPU
    encoder: EncoderConfig = field(
        default_factory=lambda: EncoderConfig(
            hidden_size=64,
            dilations=[1, 2, 5, 1, 2, 5, 1, 2, 5, 1, 1, 1],
            embed_dropout=0.25,
            word_dim=64,
            char_min_count=1,
        )
    )
    model: IeModelConfig = field(default_factory=IeModelConfig)
    inference: IeInference = field(default_factory=IeInference)


class IePipeline(Pipeline):
    name = "ie"
    summary = "DGCNN + probabilistic-graph relation (SPO triple) extraction"
    Config = IeConfig
    main_metric = "f1"
    formats = FORMATS
    predictions_are_gold = True
    threshold_fields = ("start_threshold", "end_threshold")
    V1_WEIGHTS: ClassVar[dict[str, str]] = {"embed.": "encoder.embed.", "dgcnn.": "encoder.dgcnn."}
    config: IeConfig
    model: IeModel

    def __init__(self, config: IeConfig, assets: dict[str, Any], model: IeModel):
        super().__init__(config, assets, model)
        self.predicates: list[str] = assets["predicates"]
        self.predicate_ids = {p: i for i, p in enumerate(self.predicates)}
        self.types: dict[str, list[str]] = assets.get("types", {})
        self.encode = TextEncoder(assets)

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def read(
        cls, path: str | Path, fmt: str | None = None, skip_bad: bool = False
    ) -> tuple[list[IeExample], ReadStats]:
        return read_ske(path, fmt, skip_bad)

    @classmethod
    def check_examples(cls, config: IeConfig, examples: list[IeExample], stats: ReadStats | None) -> list[IeExample]:
        """With a schema, every predicate must be in it (a line-numbered error, or skipped with --skip-bad)."""
        schema = config.model.schema
        if not schema:
            return examples
        return check_predicates(examples, set(read_schema(schema).types), schema, stats)

    @classmethod
    def create(cls, config: IeConfig, train_examples: list[IeExample]) -> IePipeline:
        schema = read_schema(config.model.schema) if config.model.schema else None
        types = predicate_types(train_examples, schema)
        predicates = schema.predicates if schema else sorted({t.predicate for ex in train_examples for t in ex.triples})
        if not predicates:
            raise DataError(
                ", ".join(sorted({ex.path for ex in train_examples})), "no triples in the training data and no --schema"
            )
        texts = [ex.text for ex in train_examples]
        assets: dict[str, Any] = {
            "predicates": predicates,
            "types": types,
            "train_triples": location_counts(train_examples),
        } | config.encoder.vocab_assets(texts)
        return cls.build(config, assets)

    @classmethod
    def build(cls, config: IeConfig, assets: dict[str, Any], directory: Path | None = None) -> IePipeline:
        enc, m = config.encoder, config.model
        model = IeModel(
            build_scratch(enc, assets),
            len(assets["predicates"]),
            m.max_len,
            m.attention_heads,
            m.max_relative,
            enc.kernel_size,
            enc.dropout,
        )
        return cls(config, assets, model)

    # --- encoding ---------------------------------------------------------------------------
    def training_examples(self, examples: list[IeExample]) -> list[IeExample]:
        """Long texts become overlapping windows; a triple stays where both its ends fit whole."""
        out = []
        m = self.config.model
        for ex in examples:
            for w in windows(len(ex.text), m.max_len, m.window_overlap):
                triples = [_shift(t, w.start, w.end) for t in ex.triples]
                kept = [t for t in triples if t.subject_spans and t.object_spans]
                out.append(IeExample(ex.text[w.start : w.end], kept, ex.line, w.start, ex.path))
        return out

    def example_length(self, example: IeExample) -> int:
        return len(example.text)

    def collate_inputs(self, texts: list[str]) -> dict[str, Any]:
        encoded = [self.encode(t).ids for t in texts]
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
        s_index: list[tuple[int, int, int]] = []
        o_index: list[tuple[int, int, int, int]] = []
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
    def preprocess(self, record: dict[str, Any]) -> list[TextPiece]:
        m = self.config.model
        return self.text_pieces(record["text"], m.max_len, m.window_overlap)

    def piece_length(self, piece: TextPiece) -> int:
        return len(piece.text)

    def forward(self, pieces: list[TextPiece], **params: Any) -> list[list[Found]]:
        """Triples (offsets within each window) for one batch: all subjects decoded, their objects in one pass."""
        inf, model = self.config.inference, self.model
        batch = self.to_device(self.collate_inputs([p.text for p in pieces]))
        mask = batch["attention_mask"]
        h = model.encode(batch["char_ids"], batch.get("word_ids"), mask)
        s_prob = torch.sigmoid(model.subject_logits(h).float())
        subjects = pointer_spans(s_prob[..., 0], s_prob[..., 1], mask, inf.start_threshold, inf.end_threshold)
        found: list[list[Found]] = [[] for _ in pieces]
        for c in range(0, subjects.shape[0], inf.max_subjects):
            subs = subjects[c : c + inf.max_subjects]
            rows = subs[:, 0]
            o_prob = torch.sigmoid(model.object_logits(h[rows], mask[rows], subs[:, 1], subs[:, 2]).float())
            objects = decode_objects(o_prob, mask[rows], inf.start_threshold, inf.end_threshold)
            triples = torch.cat([subs[objects[:, 0]], objects[:, 1:]], -1).tolist()  # [b, ss, se, p, os, oe]
            for b, ss, se, p, os_, oe in triples:
                found[b].append((ss, se, p, os_, oe))
        return found

    def postprocess(self, record: dict[str, Any], parts: list[tuple[TextPiece, list[Found]]]) -> dict[str, Any]:
        """Adds `spo_list` [{subject, predicate, object, subject_type, object_type, subject_start,
        subject_end, object_start, object_end}] (ends inclusive); a triple belongs to its subject's window."""
        triples: set[Found] = set()
        for piece, found in parts:
            w = piece.window.start
            triples.update(
                (ss + w, se + w, p, os_ + w, oe + w) for ss, se, p, os_, oe in found if piece.window.owns(ss + w)
            )
        return {**record, "spo_list": self.spo_list(record["text"], sorted(triples))}

    def __call__(self, text: str | Sequence[str], batch_size: int | None = None) -> Any:  # type: ignore[override]
        """Triples of one text ([{subject, predicate, object, ..., offsets}]) or a list of those for a list."""
        return self._predict_texts(text, "spo_list", batch_size)

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
            out.append(
                {
                    "subject": subject,
                    "predicate": pred,
                    "object": obj,
                    "subject_type": s_type,
                    "object_type": o_type,
                    "subject_start": ss,
                    "subject_end": se,
                    "object_start": os_,
                    "object_end": oe,
                }
            )
        return out

    def evaluate(self, examples: list[IeExample], batch_size: int | None = None) -> dict[str, Any]:
        """Triple-level exact-match micro P/R/F1 (official normalisation) and a per-predicate table."""
        records = self.predict_records(({"text": ex.text} for ex in examples), batch_size)
        preds = [
            {(normalize_mention(d["subject"]), d["predicate"], normalize_mention(d["object"])) for d in r["spo_list"]}
            for r in records
        ]
        gold = [{gold_key(t) for t in ex.triples} for ex in examples]
        metrics = set_prf(gold, preds, type_of=lambda triple: triple[1])
        unknown = sum(t.predicate not in self.predicate_ids for ex in examples for t in ex.triples)
        metrics["examples"] = len(examples)
        if unknown:  # scored as misses: the model cannot predict them
            metrics["gold_triples_with_unknown_predicate"] = unknown
        return metrics

    @classmethod
    def render_metrics(cls, metrics: dict[str, Any], title: str) -> RenderableType:
        return prf_table(metrics, title, "predicate")


def _shift(t: Triple, start: int, end: int) -> Triple:
    """The triple's mentions inside [start, end), in window coordinates."""

    def inside(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return [(s - start, e - start) for s, e in spans if s >= start and e < end]

    return Triple(
        t.subject,
        t.predicate,
        t.object,
        t.subject_type,
        t.object_type,
        inside(t.subject_spans),
        inside(t.object_spans),
        t.case_folded,
    )
