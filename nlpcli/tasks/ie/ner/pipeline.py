"""GlobalPointer NER, nested and flat, over the shared encoder (from-scratch DGCNN or Hugging Face)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ....config import POSITIVE, PROBABILITY, Section, TaskConfig, TrainerConfig, even_when, opt
from ....data.io import ReadStats
from ....errors import ConfigError, DataError
from ....metrics import set_errors, set_prf
from ....nn.encoder import AUTO, AutoChoice, Encoder, EncoderConfig, TextEncoder
from ....nn.encoder_task import EncoderTask, WindowConfig
from ....nn.globalpointer import decode_spans, globalpointer_loss
from ....registry import register_task
from ....tables import Report, prf_report
from ...base import InputField, Pipeline, TextPiece
from .data import FORMATS, NerExample, read_ner
from .model import NerModel

# A predicted entity: start, end (exclusive), type, score.
Span = tuple[int, int, str, float]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _logit(p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"threshold {p} is not a probability between 0 and 1")
    return -math.inf if p == 0.0 else math.inf if p == 1.0 else math.log(p / (1.0 - p))


@dataclass
class NerModelConfig(Section):
    head: str = opt("efficient", "GlobalPointer head: efficient (Efficient GlobalPointer) | standard.")
    head_size: int = opt(64, "Width of the head's start/end projections per entity type.", **POSITIVE)
    rope: bool = opt(True, "Rotary position embedding in the head (span scores see relative positions).")

    RULES = (even_when("head_size", "rope"),)


@dataclass
class NerInference(Section):
    # score = sigmoid(GlobalPointer logit), so 0.5 is the paper's "logit > 0". (Format-1 checkpoints kept a
    # logit threshold; it is converted on load.)
    threshold: float = opt(0.5, "Entities scoring above this probability are predicted.", **PROBABILITY)
    # Spans longer than any trained on get untrained (often positive) scores, e.g. on texts longer than the
    # training ones.
    max_span_len: int = opt(0, "Longest span predicted, in characters; 0: the longest entity seen in training.")
    batch_size: int = opt(64, "Windows per forward pass when predicting and evaluating.", **POSITIVE)


@dataclass
class NerConfig(TaskConfig):
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(epochs=30, batch_size=32, lr=2e-3, warmup_steps=200, ema_decay=0.0)
    )
    # The DGCNN 128 wide, not the shared 256: in the same minutes it makes twice the passes, and it scored
    # higher on both MSRA and CLUENER (docs/results.md, "ner: faster than LAC").
    encoder: EncoderConfig = field(
        default_factory=lambda: EncoderConfig(name=AUTO, embed_dropout=0.2, char_min_count=1, hidden_size=128)
    )
    model: NerModelConfig = field(default_factory=NerModelConfig)
    windows: WindowConfig = field(default_factory=WindowConfig)
    inference: NerInference = field(default_factory=NerInference)
    # Format 2 kept the window (training and prediction alike) in `inference`.
    MOVED: ClassVar[dict[str, tuple[str, ...]]] = {
        "inference.max_len": ("windows.window",),
        "inference.window_overlap": ("windows.window_overlap",),
    }
    # Ranked by micro F1 on CLUENER (our 90/10 split, 20 CPU minutes, one thread): m3e-small, then the DGCNN
    # with word2vec vectors, then the DGCNN alone; e5-small came last (figures: docs/results.md).
    # Above nn.encoder.LARGE_TRAINING_SET training texts auto takes the DGCNN instead (docs/encoder-auto.md).
    SCRATCH_ENCODERS = ("dgcnn", "bilstm")
    BIGRAMS = True
    AUTO_ENCODER = (
        AutoChoice((("name", "m3e-small"),), "m3e-small", "the best micro F1 on CLUENER in docs/results.md"),
        AutoChoice(
            (("name", "dgcnn"), ("word_vectors", "word2vec-zhwiki")),
            "word2vec-zhwiki",
            "a higher micro F1 on CLUENER than the DGCNN alone (docs/results.md)",
        ),
    )


@register_task
class NerPipeline(EncoderTask, Pipeline):
    name = "ner"
    summary = "GlobalPointer named-entity recognition (nested and flat)"
    input_fields = (InputField("text", help="the text to find entities in"),)
    example: ClassVar[dict[str, Any]] = {"text": "张伟在北京的华为公司担任工程师。"}
    output_help = '"entities": [{type, start, end (exclusive), text, score}].'
    Config = NerConfig
    main_metric = "f1"
    formats = FORMATS
    predictions_are_gold = True
    threshold_fields = ("threshold",)
    speed_unit = "chars"  # counted on the text, so speeds compare across encoders (a tokenizer's or chars)
    FIT_WINDOWS_TO_TOKENS = False
    onnx_methods = ("forward",)
    config: NerConfig
    model: NerModel

    def __init__(self, config: NerConfig, assets: dict[str, Any], model: NerModel, tokenizer: Any = None):
        super().__init__(config, assets, model)
        self.types: list[str] = assets["types"]
        self.type_ids = {t: i for i, t in enumerate(self.types)}
        self.tokenizer = tokenizer
        self.encode = TextEncoder(assets, tokenizer, self.max_tokens or 512)

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def read(
        cls, path: str | Path, fmt: str | None = None, skip_bad: bool = False
    ) -> tuple[list[NerExample], ReadStats]:
        return read_ner(path, fmt, skip_bad)

    @classmethod
    def create(cls, config: NerConfig, train_examples: list[NerExample]) -> NerPipeline:
        types = sorted({t for ex in train_examples for t in (*(s[2] for s in ex.spans), *(ex.types or ()))})
        if not types:
            raise DataError(", ".join(sorted({ex.path for ex in train_examples})), "no entities in the training data")
        longest = max(e - s + 1 for ex in train_examples for s, e, _ in ex.spans)
        config, new = cls.new_encoder(config, [ex.text for ex in train_examples])
        flat = not any(_overlapping(ex.spans) for ex in train_examples)
        assets: dict[str, Any] = {"types": types, "longest_entity": longest, "flat": flat} | new.assets
        return cls(config, assets, cls._model(config, new.module, len(types)), new.tokenizer)

    @classmethod
    def build(cls, config: NerConfig, assets: dict[str, Any], directory: Path | None = None) -> NerPipeline:
        encoder, tokenizer = cls.saved_encoder(config, assets, directory)
        return cls(config, assets, cls._model(config, encoder, len(assets["types"])), tokenizer)

    @classmethod
    def saved_config(cls, ckpt: Any) -> TaskConfig:
        config = super().saved_config(ckpt)
        if ckpt.format_version == 1:  # format 1 thresholded the logit; now the score, sigmoid(logit)
            config = config.updated({"inference.threshold": _sigmoid(float(ckpt.config.get("threshold", 0.0)))})
        return config

    @staticmethod
    def _model(config: NerConfig, encoder: Encoder, num_types: int) -> NerModel:
        m = config.model
        return NerModel(encoder, num_types, m.head, m.head_size, m.rope)

    # --- encoding ---------------------------------------------------------------------------
    def training_examples(self, examples: list[NerExample]) -> list[NerExample]:
        """Long texts become overlapping windows; each window keeps the spans it holds whole."""
        out = []
        for ex in examples:
            for w in self.text_windows(ex.text, training=True):
                spans = [(s - w.start, e - w.start, t) for s, e, t in ex.spans if s >= w.start and e < w.end]
                text = ex.text[w.start : w.end]
                out.append(NerExample(text, spans, line=ex.line, offset=w.start, path=ex.path, types=ex.types))
        return out

    def example_length(self, example: NerExample) -> int:
        return len(example.text)

    def collate(self, examples: list[NerExample]) -> dict[str, Any]:
        encoded = [self.encode(ex.text) for ex in examples]
        batch: dict[str, Any] = dict(self.encode.pad(encoded))
        width = next(iter(batch.values())).shape[1]
        lengths = torch.tensor([len(enc.offsets) for enc in encoded])
        attention = torch.arange(width)[None, :] < lengths[:, None]
        # One position a character covers every real position; a tokenizer's special tokens cover none.
        spannable = attention.clone() if self.tokenizer is None else torch.zeros_like(attention)
        labels = torch.zeros(len(encoded), len(self.types), width, width, dtype=torch.bool)
        index: list[tuple[int, int, int, int]] = []
        for b, (ex, enc) in enumerate(zip(examples, encoded)):
            if self.tokenizer is not None:
                spannable[b, : len(enc.offsets)] = torch.tensor(enc.spannable())
            for s, e, t in ex.spans:
                pos = enc.positions(s, e)
                if pos is not None and t in self.type_ids:
                    index.append((b, self.type_ids[t], *pos))
        if index:
            labels[tuple(torch.tensor(index).T)] = True
        if any(ex.types is not None for ex in examples):
            batch["type_mask"] = torch.tensor(
                [[ex.types is None or t in ex.types for t in self.types] for ex in examples], dtype=torch.bool
            )
        batch.update(
            attention_mask=attention,
            span_mask=spannable,
            labels=labels,
            _offsets=[e.offsets for e in encoded],
            _tokens=sum(len(ex.text) for ex in examples),
        )
        return batch

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return globalpointer_loss(model(batch), batch["labels"], batch.get("type_mask"))

    # --- prediction -------------------------------------------------------------------------
    def preprocess(self, record: dict[str, Any]) -> list[TextPiece]:
        return self.text_pieces(record["text"], self.text_windows(record["text"]))

    def piece_length(self, piece: TextPiece) -> int:
        return len(piece.text)

    def forward(self, pieces: list[TextPiece], **params: Any) -> list[list[Span]]:
        """Spans (start, end inclusive, type, score) in each window's own characters."""
        batch = self.collate([NerExample(p.text) for p in pieces])
        logits = self.model(self.to_device(batch))
        limit = self.config.inference.max_span_len or self.assets.get("longest_entity", 0)
        found = decode_spans(logits, _logit(self.config.inference.threshold), limit)
        return [
            [(offsets[i][0], offsets[j][1] - 1, self.types[t], _sigmoid(v)) for t, i, j, v in spans]
            for offsets, spans in zip(batch["_offsets"], found)
        ]

    def postprocess(self, record: dict[str, Any], parts: list[tuple[TextPiece, list[Span]]]) -> dict[str, Any]:
        """Adds `entities`: [{type, start, end (exclusive), text, score}]; a window gives the entities starting
        in the part of the text it owns. `score` is the sigmoid of the span's GlobalPointer logit, in (0, 1):
        every entity scores above the inference threshold (0.5 by default). A model trained on flat entities
        (no two overlap in its training data: MSRA, CLUENER) predicts flat ones: of overlapping candidates the
        higher-scoring one is kept (a span head scores every span alone, so in a run of names without
        separators it may find a name and a wrong span across it, both above the threshold)."""
        text = record["text"]
        best: dict[tuple[int, int, str], float] = {}
        for p, found in parts:
            w = p.window.start
            for s, e, t, score in found:
                if p.window.owns(w + s):
                    key = (w + s, w + e, t)
                    best[key] = max(score, best.get(key, 0.0))
        if self.assets.get("flat"):
            best = _flat(best)
        entities = [
            {"type": t, "start": s, "end": e + 1, "text": text[s : e + 1], "score": round(v, 4)}
            for (s, e, t), v in sorted(best.items())
        ]
        return {**record, "entities": entities}

    def __call__(self, text: str | Sequence[str], batch_size: int | None = None) -> Any:  # type: ignore[override]
        """Entities of one text ([{type, start, end, text, score}]) or, for a list of texts, a list of those."""
        return self._predict_texts(text, "entities", batch_size)

    @property
    def labels(self) -> list[str]:
        return list(self.types)

    def predict_spans(self, texts: list[str], batch_size: int | None = None) -> list[list[tuple[int, int, str]]]:
        """Entity spans (start, end inclusive, type) of each text."""
        records = self.predict_records(({"text": t} for t in texts), batch_size)
        return [[(e["start"], e["end"] - 1, e["type"]) for e in r["entities"]] for r in records]

    # --- evaluation -------------------------------------------------------------------------
    def evaluate(self, examples: list[NerExample], batch_size: int | None = None) -> dict[str, Any]:
        return self._evaluate(examples, batch_size, with_errors=False)[0]

    def evaluate_errors(
        self, examples: list[NerExample], batch_size: int | None = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return self._evaluate(examples, batch_size, with_errors=True)

    def _evaluate(
        self, examples: list[NerExample], batch_size: int | None, with_errors: bool
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The metrics, and the error list only when asked: a dev evaluation in training needs none."""
        for ex in examples:
            for _, _, t in ex.spans:
                if t not in self.type_ids:
                    raise DataError(ex.path, f"unknown entity type {t!r}; the model knows {self.types}", ex.line)
        preds = self.predict_spans([ex.text for ex in examples], batch_size)
        # A partially annotated text is scored on the types it was annotated for.
        preds = [p if ex.types is None else [s for s in p if s[2] in ex.types] for ex, p in zip(examples, preds)]
        gold = [ex.spans for ex in examples]
        metrics = set_prf(gold, preds, type_of=lambda span: span[2])
        metrics["nested"] = _nested_counts(gold, preds)
        metrics["examples"] = len(examples)
        return metrics, (self.errors(examples, preds) if with_errors else [])

    @staticmethod
    def errors(examples: list[NerExample], preds: list[list[tuple[int, int, str]]]) -> list[dict[str, Any]]:
        """Each entity predicted but not gold (false_positive) and gold but not predicted (false_negative), its
        offsets as the task's predictions give them (`end` exclusive) and its text."""
        return [
            {
                "text": examples[i].text,
                "kind": kind,
                "type": t,
                "start": s,
                "end": e + 1,
                "entity": examples[i].text[s : e + 1],
            }
            for i, kind, (s, e, t) in set_errors([ex.spans for ex in examples], preds)
        ]

    @classmethod
    def report(cls, metrics: dict[str, Any], title: str) -> Report:
        return prf_report(metrics, title, "type")


def _overlapping(spans: Sequence[tuple[int, int, str]]) -> bool:
    """Whether two of the (start, end inclusive, type) spans share a character (the same extent included)."""
    ordered = sorted(spans)
    return any(b[0] <= a[1] for a, b in itertools.pairwise(ordered))


def _flat(found: dict[tuple[int, int, str], float]) -> dict[tuple[int, int, str], float]:
    """The spans (start, end inclusive, type) -> score kept greedily by score, dropping any that overlaps one kept."""
    taken: set[int] = set()
    kept: dict[tuple[int, int, str], float] = {}
    for key, score in sorted(found.items(), key=lambda kv: -kv[1]):
        chars = range(key[0], key[1] + 1)
        if not taken.intersection(chars):
            taken.update(chars)
            kept[key] = score
    return kept


def _nested_counts(gold: list[list[tuple]], preds: list[list[tuple]]) -> dict[str, int]:
    """Gold entities that nest in or around another gold entity, and how many of them were predicted."""
    n_gold = n_hit = 0
    for g, p in zip(gold, preds):
        pset = set(p)
        for a in g:
            if any(b != a and ((b[0] <= a[0] and a[1] <= b[1]) or (a[0] <= b[0] and b[1] <= a[1])) for b in g):
                n_gold += 1
                n_hit += a in pset
    return {"gold": n_gold, "correct": n_hit}
