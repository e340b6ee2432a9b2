"""Relation (SPO triple) extraction: "probabilistic graph", P(s, p, o) = P(s) P(o, p | s), over the shared
encoder (the from-scratch DGCNN, or a pretrained Hugging Face encoder with `--encoder NAME_OR_PATH`).

Subject start/end pointers over the positions (characters, or a tokenizer's tokens); for one subject, object
start/end pointers per predicate. Gold character spans map to positions and decoded positions back to
characters through `Encoded`, so offsets always index the text as given. Training samples one gold subject per
sentence per step; prediction decodes every subject of a batch and scores all their objects in one batched pass.

Above the usual size because training samples and prediction decodes through the same two-stage pointers:
the encoder plumbing is shared (`nn.encoder_task`), what remains is this task's own.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ....config import POSITIVE, PROBABILITY, Section, TaskConfig, TrainerConfig, opt
from ....data.io import ReadStats
from ....errors import DataError
from ....metrics import set_errors, set_prf
from ....nn.encoder import AUTO, AutoChoice, Encoded, Encoder, EncoderConfig, TextEncoder
from ....nn.encoder_task import EncoderTask, WindowConfig
from ....registry import register_task
from ....tables import Report, prf_report
from ...base import InputField, Pipeline, TextPiece
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
# With its score: the product of the four pointer probabilities (subject start and end, object start and end).
Scored = tuple[int, int, int, int, int, float]
Span = tuple[int, int]


@dataclass
class IeModelConfig(Section):
    schema: str = opt("", "Schema file (JSON Lines) of the predicates; empty: the predicates of the training data.")
    attention_heads: int = opt(
        4, "Heads of the self-attention layer after the DGCNN (a pretrained encoder has its own); 0: none."
    )
    max_positions: int = opt(512, "Rows of the position embedding (dgcnn): no window is longer than this.", **POSITIVE)
    max_relative: int = opt(64, "Relative distances (in positions) to the subject are clipped here.")


@dataclass
class IeInference(Section):
    start_threshold: float = opt(
        0.5, "A start pointer above this probability starts a subject or object.", **PROBABILITY
    )
    end_threshold: float = opt(0.4, "An end pointer above this probability ends a subject or object.", **PROBABILITY)
    batch_size: int = opt(64, "Windows per forward pass when predicting and evaluating.", **POSITIVE)
    max_subjects: int = opt(512, "Subjects scored per object pass (bounds memory).", **POSITIVE)


@dataclass
class IeConfig(TaskConfig):
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(epochs=300, batch_size=32, lr=2e-3, warmup_steps=200, ema_decay=0.999)
    )
    # hidden 64: 128 learns no better on a few thousand sentences and runs several times slower on CPU
    encoder: EncoderConfig = field(
        default_factory=lambda: EncoderConfig(
            name=AUTO,
            hidden_size=64,
            dilations=[1, 2, 5, 1, 2, 5, 1, 2, 5, 1, 1, 1],
            embed_dropout=0.25,
            word_dim=64,
            char_min_count=1,
        )
    )
    model: IeModelConfig = field(default_factory=IeModelConfig)
    # With a pretrained encoder a window is also cut to fit the encoder's positions (in tokens).
    windows: WindowConfig = field(default_factory=lambda: WindowConfig(window=512))
    inference: IeInference = field(default_factory=IeInference)
    # Format 2's `model.max_len` was both the window and the position table.
    MOVED: ClassVar[dict[str, tuple[str, ...]]] = {
        "model.max_len": ("model.max_positions", "windows.window"),
        "model.window_overlap": ("windows.window_overlap",),
    }
    # Ranked by triple F1 on SKE (seeded 10% dev, 20 CPU minutes, one thread): the DGCNN with word2vec-zhwiki
    # vectors, then the DGCNN alone, then m3e-small, which runs far fewer steps in the budget (figures: docs/results.md
    # and benchmarks/results).
    AUTO_ENCODER = (
        AutoChoice(
            (("name", "dgcnn"), ("word_vectors", "word2vec-zhwiki")),
            "word2vec-zhwiki",
            "a higher triple F1 on SKE than the DGCNN alone (docs/results.md)",
        ),
    )


@register_task
class IePipeline(EncoderTask, Pipeline):
    name = "ie"
    summary = "probabilistic-graph relation (SPO triple) extraction over a DGCNN or a pretrained encoder"
    input_fields = (InputField("text", help="the text to extract triples from"),)
    example: ClassVar[dict[str, Any]] = {"text": "《星河夜话》是孙雨桐创作的长篇小说，由东海出版社出版"}
    output_help = '"spo_list": [{subject, predicate, object, subject_type, object_type, offsets}].'
    Config = IeConfig
    main_metric = "f1"
    formats = FORMATS
    predictions_are_gold = True
    threshold_fields = ("start_threshold", "end_threshold")
    speed_unit = "chars"  # counted on the text, so speeds compare across encoders (a tokenizer's or chars)
    onnx_methods = ("encode", "subject_logits", "object_logits")
    V1_WEIGHTS: ClassVar[dict[str, str]] = {"embed.": "encoder.embed.", "dgcnn.": "encoder.dgcnn."}
    config: IeConfig
    model: IeModel

    def __init__(self, config: IeConfig, assets: dict[str, Any], model: IeModel, tokenizer: Any = None):
        super().__init__(config, assets, model)
        self.predicates: list[str] = assets["predicates"]
        self.predicate_ids = {p: i for i, p in enumerate(self.predicates)}
        self.types: dict[str, list[str]] = assets.get("types", {})
        self.tokenizer = tokenizer
        self.encode = TextEncoder(assets, tokenizer, self.max_tokens or 512)

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
        config, new = cls.new_encoder(config, [ex.text for ex in train_examples])
        counts = location_counts(train_examples)
        assets: dict[str, Any] = {"predicates": predicates, "types": types, "train_triples": counts} | new.assets
        pipe = cls(config, assets, cls._model(config, new.module, len(predicates)), new.tokenizer)
        counts["cut_by_tokens"] = pipe.cut_by_tokens(train_examples)
        return pipe

    @classmethod
    def build(cls, config: IeConfig, assets: dict[str, Any], directory: Path | None = None) -> IePipeline:
        encoder, tokenizer = cls.saved_encoder(config, assets, directory)
        return cls(config, assets, cls._model(config, encoder, len(assets["predicates"])), tokenizer)

    @staticmethod
    def _model(config: IeConfig, encoder: Encoder, num_predicates: int) -> IeModel:
        enc, m = config.encoder, config.model
        return IeModel(
            encoder, num_predicates, m.max_positions, m.attention_heads, m.max_relative, enc.kernel_size, enc.dropout
        )

    def window_limit(self) -> int:
        return self.config.model.max_positions

    # --- encoding ---------------------------------------------------------------------------
    def training_examples(self, examples: list[IeExample]) -> list[IeExample]:
        """Long texts become overlapping windows; a triple stays where both its ends fit whole."""
        out = []
        for ex in examples:
            for w in self.text_windows(ex.text, training=True):
                triples = [_shift(t, w.start, w.end) for t in ex.triples]
                kept = [t for t in triples if t.subject_spans and t.object_spans]
                out.append(IeExample(ex.text[w.start : w.end], kept, ex.line, w.start, ex.path))
        return out

    def cut_by_tokens(self, examples: list[IeExample]) -> int:
        """Triples that fit a training window but can never be trained on: in every window, no mention of the
        subject or none of the object starts and ends on token boundaries (0 for the character DGCNN)."""
        if self.pretrained_encoder is None:
            return 0
        cut = 0
        for ex in examples:
            fits, kept = set(), set()
            for w in self.training_examples([ex]):
                enc = self.encode(w.text)
                for t in w.triples:
                    fits.add((t.subject, t.predicate, t.object))
                    if _positions(enc, t.subject_spans) and _positions(enc, t.object_spans):
                        kept.add((t.subject, t.predicate, t.object))
            cut += len(fits - kept)
        return cut

    def example_length(self, example: IeExample) -> int:
        return len(example.text)

    def collate_inputs(self, texts: list[str]) -> dict[str, Any]:
        """Model inputs; `attention_mask` marks real positions, `span_mask` those that cover characters (not a
        tokenizer's special tokens), `_encoded` maps positions back to characters."""
        encoded = [self.encode(t) for t in texts]
        batch: dict[str, Any] = dict(self.encode.pad(encoded))
        lengths = torch.tensor([len(e.offsets) for e in encoded])
        width = next(iter(batch.values())).shape[1]
        batch["attention_mask"] = torch.arange(width)[None] < lengths[:, None]
        span_mask = batch["attention_mask"].clone()
        if self.pretrained_encoder is not None:
            for b, e in enumerate(encoded):
                span_mask[b, : len(e.offsets)] = torch.tensor(e.spannable())
        batch["span_mask"] = span_mask
        batch["_encoded"] = encoded
        batch["_tokens"] = sum(len(t) for t in texts)
        return batch

    def collate(self, examples: list[IeExample]) -> dict[str, Any]:
        """Inputs plus targets: all gold subjects, one sampled subject per text and its objects per predicate.
        Character spans become positions; a mention cut by a token boundary is left out."""
        batch = self.collate_inputs([ex.text for ex in examples])
        b, width = batch["attention_mask"].shape
        subject_labels = torch.zeros(b, width, 2)
        object_labels = torch.zeros(b, width, len(self.predicates), 2)
        sampled = torch.zeros(b, 2, dtype=torch.long)
        s_index: list[tuple[int, int, int]] = []
        o_index: list[tuple[int, int, int, int]] = []
        for i, (ex, enc) in enumerate(zip(examples, batch["_encoded"])):
            triples = [(t, _positions(enc, t.subject_spans), _positions(enc, t.object_spans)) for t in ex.triples]
            triples = [(t, subs, objs) for t, subs, objs in triples if subs and objs]
            spans = sorted({s for _, subs, _ in triples for s in subs})
            s_index.extend((i, s, e) for s, e in spans)
            if not spans:
                continue
            chosen = random.choice(spans)
            sampled[i] = torch.tensor(chosen)
            for t, subs, objs in triples:
                if chosen in subs and t.predicate in self.predicate_ids:
                    p = self.predicate_ids[t.predicate]
                    o_index.extend((i, s, e, p) for s, e in objs)
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
        mask = batch["span_mask"].to(subject_logits.dtype)
        s_loss = F.binary_cross_entropy_with_logits(subject_logits, batch["subject_labels"], reduction="none").sum(-1)
        o_loss = F.binary_cross_entropy_with_logits(object_logits.float(), batch["object_labels"], reduction="none")
        o_loss = o_loss.sum((-2, -1))
        total = mask.sum().clamp(min=1)
        return (s_loss * mask).sum() / total + (o_loss * mask).sum() / total

    # --- prediction -------------------------------------------------------------------------
    def preprocess(self, record: dict[str, Any]) -> list[TextPiece]:
        return self.text_pieces(record["text"], self.text_windows(record["text"]))

    def piece_length(self, piece: TextPiece) -> int:
        return len(piece.text)

    def forward(self, pieces: list[TextPiece], **params: Any) -> list[list[Scored]]:
        """Triples (character offsets within each window) for one batch: all subjects decoded, their objects in
        one pass (`max_subjects` at a time); decoded positions map back to characters."""
        inf, model = self.config.inference, self.model
        batch = self.to_device(self.collate_inputs([p.text for p in pieces]))
        mask, spannable, encoded = batch["attention_mask"], batch["span_mask"], batch["_encoded"]
        h = model.encode(batch)
        s_prob = torch.sigmoid(model.subject_logits(h).float())
        subjects = pointer_spans(s_prob[..., 0], s_prob[..., 1], spannable, inf.start_threshold, inf.end_threshold)
        found: list[list[Scored]] = [[] for _ in pieces]
        for c in range(0, subjects.shape[0], inf.max_subjects):
            subs = subjects[c : c + inf.max_subjects]
            rows = subs[:, 0]
            o_prob = torch.sigmoid(model.object_logits(h[rows], mask[rows], subs[:, 1], subs[:, 2]).float())
            objects = decode_objects(o_prob, spannable[rows], inf.start_threshold, inf.end_threshold)
            triples = torch.cat([subs[objects[:, 0]], objects[:, 1:]], -1).tolist()  # [b, ss, se, p, os, oe]
            s_score = s_prob[rows, subs[:, 1], 0] * s_prob[rows, subs[:, 2], 1]
            n, p_, o_s, o_e = objects.unbind(-1)
            scores = (s_score[n] * o_prob[n, o_s, p_, 0] * o_prob[n, o_e, p_, 1]).tolist()
            for (b, ss, se, p, os_, oe), score in zip(triples, scores):
                enc: Encoded = encoded[b]
                found[b].append((*enc.chars(ss, se), p, *enc.chars(os_, oe), score))
        return found

    def postprocess(self, record: dict[str, Any], parts: list[tuple[TextPiece, list[Scored]]]) -> dict[str, Any]:
        """Adds `spo_list` [{subject, predicate, object, subject_type, object_type, subject_start,
        subject_end, object_start, object_end, score}] (ends exclusive); a triple belongs to its subject's
        window. `score` is the product of its four pointer probabilities, in (0, 1)."""
        best: dict[Found, float] = {}
        for piece, found in parts:
            w = piece.window.start
            for ss, se, p, os_, oe, score in found:
                if piece.window.owns(ss + w):
                    key = (ss + w, se + w, p, os_ + w, oe + w)
                    best[key] = max(score, best.get(key, 0.0))
        scored = [(*key, score) for key, score in sorted(best.items())]
        return {**record, "spo_list": self.spo_list(record["text"], scored)}

    def __call__(self, text: str | Sequence[str], batch_size: int | None = None) -> Any:  # type: ignore[override]
        """Triples of one text ([{subject, predicate, object, ..., offsets}]) or a list of those for a list."""
        return self._predict_texts(text, "spo_list", batch_size)

    @property
    def labels(self) -> list[str]:
        return list(self.predicates)

    def spo_list(self, text: str, found: list[Scored]) -> list[dict[str, Any]]:
        """Predictions in the training format plus offsets and score; one entry per distinct (s, p, o) string
        triple (its first place in the text, its best score)."""
        out: list[dict[str, Any]] = []
        seen: dict[tuple[str, str, str], dict[str, Any]] = {}
        for ss, se, p, os_, oe, score in found:
            pred = self.predicates[p]
            subject, obj = text[ss : se + 1], text[os_ : oe + 1]
            key = (subject, pred, obj)
            if key in seen:
                seen[key]["score"] = max(seen[key]["score"], round(score, 4))
                continue
            s_type, o_type = self.types.get(pred, ["", ""])
            out.append(
                {
                    "subject": subject,
                    "predicate": pred,
                    "object": obj,
                    "subject_type": s_type,
                    "object_type": o_type,
                    "subject_start": ss,
                    "subject_end": se + 1,
                    "object_start": os_,
                    "object_end": oe + 1,
                    "score": round(score, 4),
                }
            )
            seen[key] = out[-1]
        return out

    def evaluate(self, examples: list[IeExample], batch_size: int | None = None) -> dict[str, Any]:
        """Triple-level exact-match micro P/R/F1 (official normalisation) and a per-predicate table."""
        return self._evaluate(examples, batch_size, with_errors=False)[0]

    def evaluate_errors(
        self, examples: list[IeExample], batch_size: int | None = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return self._evaluate(examples, batch_size, with_errors=True)

    def _evaluate(
        self, examples: list[IeExample], batch_size: int | None, with_errors: bool
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The metrics, and the error list only when asked: a dev evaluation in training needs none."""
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
        return metrics, (self.errors(examples, gold, preds) if with_errors else [])

    @staticmethod
    def errors(
        examples: list[IeExample], gold: list[set[tuple[str, str, str]]], preds: list[set[tuple[str, str, str]]]
    ) -> list[dict[str, Any]]:
        """Each triple predicted but not gold (false_positive) and gold but not predicted (false_negative), as
        scored: mentions normalised the official way."""
        return [
            {"text": examples[i].text, "kind": kind, "subject": s, "predicate": p, "object": o}
            for i, kind, (s, p, o) in set_errors(gold, preds)
        ]

    @classmethod
    def report(cls, metrics: dict[str, Any], title: str) -> Report:
        return prf_report(metrics, title, "predicate")


def _positions(enc: Encoded, spans: list[Span]) -> list[Span]:
    """The positions of the character spans that start and end on position boundaries."""
    return [p for s, e in spans if (p := enc.positions(s, e)) is not None]


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
