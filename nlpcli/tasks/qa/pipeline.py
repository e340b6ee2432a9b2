"""Reading comprehension: the `qa` task. The DGCNN reader of docs/tasks/qa.md (default), or a pretrained Hugging Face
encoder over each question / passage-window pair (`--encoder NAME_OR_PATH`); windows, labels, losses, decoding
and voting are shared, and an adapter per encoder kind (`inputs.py`) turns text into model inputs."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ...config import POSITIVE, PROBABILITY, Section, TaskConfig, TrainerConfig, opt
from ...data.batching import Window, pad_ids
from ...data.io import ReadStats
from ...errors import ConfigError, DataError
from ...nn.encoder import AUTO, AutoChoice, Encoder, EncoderConfig, HFEncoder
from ...nn.encoder_task import EncoderTask, WindowConfig
from ...registry import register_task
from ..base import InputField, Pipeline
from .data import FORMATS, QAExample, passage_text, passages_field, read_qa
from .decode import Candidate, best_spans, vote
from .inputs import EncoderInputs, ReaderInputs, Row, ScratchInputs
from .metrics import normalize_answer, qa_metrics, sogou_scores
from .model import EncoderReader, QaModel, focal_loss, gate_loss, pointer_probs, span_loss


@dataclass
class QaModelConfig(Section):
    # DGCNN only (an encoder reads the question and the passage as one pair):
    question_dilations: list[int] = opt(
        [1, 2, 1], "Dilations of the question's DGCNN blocks (dgcnn only; the passage uses encoder.dilations)."
    )
    match_features: bool = opt(True, "Embed whether each passage char / word occurs in the question (dgcnn only).")
    answer_crop_prob: float = opt(0.8, "How often a training crop of a long passage keeps an answer.", **PROBABILITY)
    # softmax: cross-entropy over positions plus a gate loss (learns spans from a few thousand questions far
    # faster); focal: the original reader's per-position focal loss on sigmoid(pointer) * sigmoid(gate).
    pointer_loss: str = opt("softmax", "Pointer loss: softmax (over positions, plus a has-answer loss) | focal.")
    focal_alpha: float = opt(0.25, "Alpha of the focal pointer loss.")
    focal_gamma: float = opt(2.0, "Gamma of the focal pointer loss.")


@dataclass
class QaInference(Section):
    max_answer_len: int = opt(
        32, "Longest answer in the model's positions: characters (dgcnn) or tokens (encoder).", **POSITIVE
    )
    threshold: float = opt(
        0.1, "Start/end probabilities at or below this never make a candidate answer.", **PROBABILITY
    )
    voting: str = opt("vote", "How the candidates of several passages/windows become one answer: vote | max.")
    batch_size: int = opt(128, "Passage windows per forward pass.", **POSITIVE)


@dataclass
class QaConfig(TaskConfig):
    # warm-up short: a 30-minute CPU budget is only a few hundred steps
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(epochs=20, batch_size=32, lr=1e-3, warmup_steps=50, ema_decay=0.9999)
    )
    # dropout 0.3 (not 0.1): a few thousand training questions are memorised within minutes (a better WebQA dev score).
    encoder: EncoderConfig = field(
        default_factory=lambda: EncoderConfig(
            name=AUTO,
            hidden_size=128,
            dilations=[1, 2, 4, 8, 16, 1],
            dropout=0.3,
            embed_dropout=0.3,
            word_dim=128,
            char_min_count=2,
        )
    )
    model: QaModelConfig = field(default_factory=QaModelConfig)
    # Ranked by held-out WebQA score (30 CPU minutes, one thread): the DGCNN with word2vec-zhwiki vectors, then
    # the DGCNN alone; m3e-small runs too few steps in the budget to catch up (figures: docs/results.md).
    AUTO_ENCODER = (
        AutoChoice(
            (("name", "dgcnn"), ("word_vectors", "word2vec-zhwiki")),
            "word2vec-zhwiki",
            "a higher held-out WebQA score than the DGCNN alone (docs/results.md)",
        ),
    )
    # Passage windows of 128 characters: web evidence is short (WebQA: mean 68 chars), and SQuAD-style paragraphs
    # cropped to 128 train twice as many steps per minute and look more like it (docs/results.md: qa).
    windows: WindowConfig = field(default_factory=lambda: WindowConfig(window=128))
    inference: QaInference = field(default_factory=QaInference)
    RENAMES = TaskConfig.RENAMES | {"passage_dilations": "encoder.dilations"}
    # Format 2 kept the passage window (prediction, and the training crop) in `inference`.
    MOVED: ClassVar[dict[str, tuple[str, ...]]] = {
        "inference.max_len": ("windows.window",),
        "inference.window_overlap": ("windows.window_overlap",),
    }


@dataclass
class _TrainPassage:
    passage: Any  # as the inputs adapter gives it
    length: int  # characters
    spans: list[tuple[int, int]]


@dataclass
class _TrainItem:
    question: Any
    passages: list[_TrainPassage]


@dataclass
class _Piece:
    """One window of one passage of a question."""

    passage_index: int
    window: Window
    row: Row  # what the model reads of it


@register_task
class QaPipeline(EncoderTask, Pipeline):
    name = "qa"
    summary = "Reading-comprehension QA (DGCNN or a pretrained encoder) with answer voting across passages"
    input_fields = (
        InputField("question", column_option="--question-column", help="the question"),
        InputField(
            "passages",
            "list",
            "--passage",
            repeats=True,
            column_option="--passage-column",
            help="the passages to read the answer from",
            aliases=("--passages",),
        ),
    )
    example: ClassVar[dict[str, Any]] = {
        "question": "熊猫主要吃什么？",
        "passages": ["大熊猫主要以竹子为食，每天要吃大量的竹子。"],
    }
    output_help = "answer, score, passage_index, start, end (exclusive: the passage's [start:end] is the answer)."
    Config = QaConfig
    main_metric = "score"
    formats = FORMATS
    predictions_are_gold = True
    threshold_fields = ("threshold",)
    FIT_WINDOWS_TO_TOKENS = False  # the question is cut to fit a pretrained encoder, never the window
    onnx_methods = ("forward",)
    V1_WEIGHTS: ClassVar[dict[str, str]] = {"embed.": "encoder.embed.", "p_encoder.": "encoder.dgcnn."}
    config: QaConfig
    model: QaModel | EncoderReader

    def __init__(self, config: QaConfig, assets: dict[str, Any], model: QaModel | EncoderReader, tokenizer: Any = None):
        super().__init__(config, assets, model)
        self.tokenizer = tokenizer
        self.inputs: ReaderInputs
        encoder = self.pretrained_encoder
        if encoder is not None:
            types = int(getattr(encoder.model.config, "type_vocab_size", 1))
            w = config.windows
            self.inputs = EncoderInputs(tokenizer, self.max_tokens, max(w.window, w.training), types)
        else:
            self.inputs = ScratchInputs(assets)

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def read(
        cls, path: str | Path, fmt: str | None = None, skip_bad: bool = False
    ) -> tuple[list[QAExample], ReadStats]:
        return read_qa(path, fmt, skip_bad)

    @classmethod
    def create(cls, config: QaConfig, train_examples: list[QAExample]) -> QaPipeline:
        cls._check(config)
        texts = list(dict.fromkeys(t for ex in train_examples for t in [ex.question] + [p.text for p in ex.passages]))
        config, new = cls.new_encoder(config, texts)
        return cls(config, new.assets, cls._model(config, new.module), new.tokenizer)

    @classmethod
    def build(cls, config: QaConfig, assets: dict[str, Any], directory: Path | None = None) -> QaPipeline:
        cls._check(config)
        encoder, tokenizer = cls.saved_encoder(config, assets, directory)
        return cls(config, assets, cls._model(config, encoder), tokenizer)

    @staticmethod
    def _check(config: QaConfig) -> None:
        if config.model.pointer_loss not in ("softmax", "focal"):
            raise ConfigError(f"pointer_loss must be softmax or focal, not {config.model.pointer_loss!r}")

    @staticmethod
    def _model(config: QaConfig, encoder: Encoder) -> QaModel | EncoderReader:
        if isinstance(encoder, HFEncoder):
            return EncoderReader(encoder)
        enc, m = config.encoder, config.model
        return QaModel(encoder, m.question_dilations, enc.kernel_size, enc.dropout, m.match_features)

    # --- encoding ---------------------------------------------------------------------------
    def training_examples(self, examples: list[QAExample]) -> list[_TrainItem]:
        """One item per question with its usable passages (answers that cannot be located, or that an encoder's
        tokens cut through, are left out)."""
        inputs = self.inputs
        items = []
        for ex in examples:
            ps = []
            for p in ex.passages:
                if not (p.labelled and p.text):
                    continue
                spans = inputs.spans(p.text, p.spans)
                if spans or not p.spans:
                    ps.append(_TrainPassage(inputs.passage(p.text), len(p.text), spans))
            if ps:
                items.append(_TrainItem(inputs.question(ex.question), ps))
        return items

    def example_length(self, item: _TrainItem) -> int:
        return min(self.config.windows.training, max(p.length for p in item.passages))

    def _crop(self, p: _TrainPassage) -> int:
        """Start of a random training window over a long passage, usually one holding an answer."""
        length, size = p.length, self.config.windows.training
        if p.spans and random.random() < self.config.model.answer_crop_prob:
            s, e = random.choice(p.spans)
            lo, hi = max(0, e - size + 1), min(s, length - size)
            if lo <= hi:
                return random.randint(lo, hi)
        return random.randint(0, length - size)

    def collate(self, items: list[_TrainItem]) -> dict[str, Any]:
        """A training batch: one random passage per question, long ones cropped to the training window."""
        size = self.config.windows.training
        rows, starts, ends = [], [], []
        for b, item in enumerate(items):
            p = random.choice(item.passages)
            lo = self._crop(p) if p.length > size else 0
            hi = min(p.length, lo + size)
            row = self.inputs.row(item.question, p.passage, lo, hi)
            rows.append(row)
            inside = [
                pos
                for s, e in sorted(p.spans)
                if s >= lo and e < hi and (pos := row.encoded.positions(s - lo, e - lo)) is not None
            ]
            if self.config.model.pointer_loss == "softmax":
                # One occurrence: with every occurrence gold, start and end may learn different ones,
                # and a span from the first to the last occurrence wins.
                inside = inside[:1]
            starts += [(b, s) for s, _ in inside]
            ends += [(b, e) for _, e in inside]
        batch = self.inputs.batch(rows)
        start_t = torch.zeros_like(batch["p_mask"])
        end_t = torch.zeros_like(batch["p_mask"])
        if starts:
            start_t[tuple(torch.tensor(starts).T)] = True
            end_t[tuple(torch.tensor(ends).T)] = True
        batch.update(start_labels=start_t, end_labels=end_t)
        return batch

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        out = model(batch)
        mask = batch["p_mask"].float()
        if self.config.model.pointer_loss == "softmax":
            return (
                span_loss(out["start"], batch["start_labels"], mask)
                + span_loss(out["end"], batch["end_labels"], mask)
                + gate_loss(out["gate"], batch["start_labels"], mask)
            )
        a, g = self.config.model.focal_alpha, self.config.model.focal_gamma
        return focal_loss(out["start"], out["gate"], batch["start_labels"], mask, a, g) + focal_loss(
            out["end"], out["gate"], batch["end_labels"], mask, a, g
        )

    # --- prediction -------------------------------------------------------------------------
    def validate_record(self, record: dict[str, Any], path: str, line: int) -> None:
        q = record.get("question")
        if not isinstance(q, str) or not q.strip():
            raise DataError(path, "missing or empty 'question'", line)
        for p in passages_field(record, path, line):
            passage_text(p, path, line, "")

    def preprocess(self, record: dict[str, Any]) -> list[_Piece]:
        """Every window of every passage of the record's question."""
        question = self.inputs.question(record["question"])
        pieces = []
        for pi, p in enumerate(passages_field(record, "", None)):
            text = passage_text(p, "", None, "")[0]
            if not text:
                continue
            passage = self.inputs.passage(text)
            pieces += [
                _Piece(pi, w, self.inputs.row(question, passage, w.start, w.end)) for w in self.text_windows(text)
            ]
        return pieces

    def piece_length(self, piece: _Piece) -> int:
        return piece.window.end - piece.window.start

    def forward(self, pieces: list[_Piece], **params: Any) -> list[tuple[float, int, int]]:
        """(score, start, end) of the best span owned by each window, in the window's characters (end inclusive;
        score 0: none)."""
        rows = [p.row for p in pieces]
        batch = self.to_device(self.inputs.batch(rows))
        start, end = pointer_probs(self.model(batch), batch["p_mask"], self.config.model.pointer_loss)
        # A window only proposes spans starting in the part it owns, so overlaps are not counted twice.
        first = pad_ids([[s for s, _ in r.encoded.offsets] for r in rows]).to(start.device)  # a position's 1st char
        own = torch.tensor(
            [[p.window.own_start - p.window.start, p.window.own_end - p.window.start] for p in pieces],
            device=start.device,
        )
        start = start * ((first >= own[:, :1]) & (first < own[:, 1:]))
        inf = self.config.inference
        score, i, j = best_spans(start, end, inf.max_answer_len, inf.threshold)
        return [
            (sc, *r.encoded.chars(a, b)) if sc > 0 else (sc, a, b)
            for r, sc, a, b in zip(rows, score.tolist(), i.tolist(), j.tolist())
        ]

    def postprocess(self, record: dict[str, Any], parts: list[tuple[_Piece, tuple[float, int, int]]]) -> dict[str, Any]:
        """Adds answer ("" if none), score, passage_index, start and end (exclusive, in that passage): the best
        span of each window, voted with those of the question's other windows and passages."""
        texts = [passage_text(p, "", None, "")[0] for p in passages_field(record, "", None)]
        candidates = []
        for piece, (score, i, j) in parts:
            if score > 0:
                s, e = piece.window.start + i, piece.window.start + j
                candidates.append(Candidate(texts[piece.passage_index][s : e + 1], score, piece.passage_index, s, e))
        best, score = vote(candidates, self.config.inference.voting)
        if best is None:
            return {**record, "answer": "", "score": 0.0, "passage_index": None, "start": None, "end": None}
        return {
            **record,
            "answer": best.text,
            "score": round(score, 6),
            "passage_index": best.passage,
            "start": best.start,
            "end": best.end + 1,
        }

    def onnx_examples(self, texts: list[str]) -> list[dict[str, Any]]:
        return [{"question": texts[-1], "passages": texts}]

    def __call__(  # type: ignore[override]
        self,
        question: str | Sequence[dict[str, Any]] | None = None,
        passages: Sequence[Any] | None = None,
        batch_size: int | None = None,
    ) -> Any:
        """`qa(question=..., passages=[...])` -> {answer, score, passage_index, start, end}; a list of
        {"question", "passages"} records -> a list of those (batched as `predict` batches)."""
        keys = ("answer", "score", "passage_index", "start", "end")
        if isinstance(question, str):
            record = {"question": question, "passages": list(passages or [])}
            return {k: self.predict_checked([record], batch_size)[0][k] for k in keys}
        if question is None or passages is not None:
            raise ConfigError("give qa(question=..., passages=[...]) or a list of {question, passages} records")
        return [{k: r[k] for k in keys} for r in self.predict_checked(list(question), batch_size)]

    def answer(
        self, questions: list[str], passages: list[list[str]], batch_size: int | None = None
    ) -> list[dict[str, Any]]:
        """For each question: answer ("" if none), score, passage index and span (end exclusive)."""
        records = ({"question": q, "passages": ps} for q, ps in zip(questions, passages))
        keys = ("answer", "score", "passage_index", "start", "end")
        return [{k: r[k] for k in keys} for r in self.predict_records(records, batch_size)]

    def evaluate(self, examples: list[QAExample], batch_size: int | None = None) -> dict[str, Any]:
        return self._evaluate(examples, batch_size, with_errors=False)[0]

    def evaluate_errors(
        self, examples: list[QAExample], batch_size: int | None = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return self._evaluate(examples, batch_size, with_errors=True)

    def _evaluate(
        self, examples: list[QAExample], batch_size: int | None, with_errors: bool
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The metrics, and the error list only when asked: a dev evaluation in training needs none."""
        preds = self.answer(
            [ex.question for ex in examples], [[p.text for p in ex.passages] for ex in examples], batch_size
        )
        answers = [p["answer"] for p in preds]
        metrics = qa_metrics([ex.answers for ex in examples], answers, [ex.kind for ex in examples])
        return metrics, (self.errors(examples, answers) if with_errors else [])

    @staticmethod
    def errors(examples: list[QAExample], answers: list[str]) -> list[dict[str, Any]]:
        """One record per question answered wrong (not accurate as scored): an answer where gold has none is a
        false_positive, no answer where gold has one a false_negative, another answer a wrong_answer."""
        out = []
        for ex, answer in zip(examples, answers, strict=True):
            if sogou_scores(answer, ex.answers)[0] == 1.0:
                continue
            given = bool(normalize_answer(answer))
            kind = "wrong_answer" if given and ex.answers else "false_positive" if given else "false_negative"
            out.append({"question": ex.question, "kind": kind, "answer": answer, "gold": ex.answers})
        return out
