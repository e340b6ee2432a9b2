"""DGCNN reading comprehension: the `qa` task (METHODS.md §1)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...data import vocab as V
from ...data.batching import Window, pad_ids, windows
from ...data.io import ReadStats
from ...errors import ConfigError, DataError
from ..base import Pipeline, TaskConfig
from .data import FORMATS, QAExample, passages_field, read_qa, passage_text
from .decode import Candidate, best_spans, vote
from .metrics import qa_metrics
from .model import QaModel, focal_loss, gate_loss, pointer_probs, span_loss


@dataclass
class QaConfig(TaskConfig):
    hidden_size: int = 128
    question_dilations: str = "1,2,1"
    passage_dilations: str = "1,2,4,8,16,1"
    kernel_size: int = 3
    # 0.3 (not 0.1): a few thousand training questions are memorised within minutes (WebQA dev 0.47 -> 0.49).
    dropout: float = 0.3
    embed_dropout: float = 0.3
    use_words: bool = True  # add the jieba word of each char
    match_features: bool = True  # embed whether each passage char / word occurs in the question
    word_dim: int = 128
    word_min_count: int = 2
    word_vocab_size: int = 50000
    char_min_count: int = 2
    # Passage window in characters; longer passages are windowed (or cropped around an answer in training).
    # 128: web evidence is short (WebQA: mean 68 chars), and SQuAD-style paragraphs cropped to 128 train
    # twice as many steps per minute and look more like it (WebQA dev 0.40 -> 0.50 at 10 CPU minutes).
    max_len: int = 128
    window_overlap: int = 64
    answer_crop_prob: float = 0.8  # training crops of long passages keep an answer this often
    max_answer_len: int = 32
    threshold: float = 0.1  # start/end probabilities at or below it never make a candidate
    voting: str = "vote"  # vote | max: how candidates of several passages/windows become one answer
    # softmax: cross-entropy over positions plus a gate loss (default: learns spans from few thousand
    # questions far faster); focal: METHODS §1's per-position focal loss on sigmoid(pointer) * sigmoid(gate).
    pointer_loss: str = "softmax"
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    eval_batch_size: int = 128  # passage windows per forward pass
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 50  # short: a 30-minute CPU budget is only a few hundred steps
    ema_decay: float = 0.9999


@dataclass
class _Text:
    chars: torch.Tensor
    words: torch.Tensor | None


@dataclass
class _TrainPassage:
    text: _Text
    spans: list[tuple[int, int]]


@dataclass
class _TrainItem:
    question: _Text
    passages: list[_TrainPassage]


class QaPipeline(Pipeline):
    name = "qa"
    summary = "DGCNN reading-comprehension QA with answer voting across passages"
    Config = QaConfig
    main_metric = "score"
    formats = FORMATS

    def __init__(self, config: QaConfig, assets: dict[str, Any], model: nn.Module):
        super().__init__(config, assets, model)
        self.vocab = V.CharWordVocab(assets)

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def read(cls, path, fmt=None, skip_bad=False) -> tuple[list[QAExample], ReadStats]:
        return read_qa(path, fmt, skip_bad)

    @classmethod
    def create(cls, config: QaConfig, train_examples: list[QAExample]) -> "QaPipeline":
        texts = list(dict.fromkeys(t for ex in train_examples for t in [ex.question] + [p.text for p in ex.passages]))
        assets = V.CharWordVocab.build_assets(texts, config.char_min_count, config.use_words,
                                              config.word_min_count, config.word_vocab_size)
        return cls.build(config, assets)

    @classmethod
    def build(cls, config: QaConfig, assets: dict[str, Any], checkpoint_dir: Path | None = None) -> "QaPipeline":
        if config.pointer_loss not in ("softmax", "focal"):
            raise ConfigError(f"pointer_loss must be softmax or focal, not {config.pointer_loss!r}")
        n_words = len(assets.get("words") or [])
        model = QaModel(len(assets["chars"]), n_words, config.hidden_size, config.word_dim if n_words else 0,
                        config.question_dilations, config.passage_dilations, config.kernel_size, config.dropout,
                        config.embed_dropout, config.match_features)
        return cls(config, assets, model)

    # --- encoding ---------------------------------------------------------------------------
    def encode(self, text: str) -> _Text:
        ids = self.vocab.encode(text)
        words = torch.tensor(ids["word_ids"], dtype=torch.long) if "word_ids" in ids else None
        return _Text(torch.tensor(ids["char_ids"], dtype=torch.long), words)

    def _encoder(self) -> Callable[[str], _Text]:
        """encode() with a cache, for texts repeated across questions (SQuAD paragraphs)."""
        cache: dict[str, _Text] = {}

        def get(text: str) -> _Text:
            if text not in cache:
                cache[text] = self.encode(text)
            return cache[text]

        return get

    def training_examples(self, examples: list[QAExample]) -> list[_TrainItem]:
        """One item per question with its usable passages (answers that cannot be located are left out)."""
        enc = self._encoder()
        items = []
        for ex in examples:
            ps = [_TrainPassage(enc(p.text), p.spans) for p in ex.passages if p.labelled and p.text]
            if ps:
                items.append(_TrainItem(enc(ex.question), ps))
        return items

    def example_length(self, item: _TrainItem) -> int:
        return min(self.config.max_len, max(len(p.text.chars) for p in item.passages))

    def _crop(self, p: _TrainPassage) -> int:
        """Start of a random max_len window over a long passage, usually one holding an answer."""
        length, size = len(p.text.chars), self.config.max_len
        if p.spans and random.random() < self.config.answer_crop_prob:
            s, e = random.choice(p.spans)
            lo, hi = max(0, e - size + 1), min(s, length - size)
            if lo <= hi:
                return random.randint(lo, hi)
        return random.randint(0, length - size)

    def collate(self, items: list[_TrainItem]) -> dict[str, Any]:
        """A training batch: one random passage per question, long ones cropped to max_len."""
        size = self.config.max_len
        rows, starts, ends = [], [], []
        for b, item in enumerate(items):
            p = random.choice(item.passages)
            lo = self._crop(p) if len(p.text.chars) > size else 0
            hi = min(len(p.text.chars), lo + size)
            rows.append(_slice(p.text, lo, hi))
            inside = sorted((s - lo, e - lo) for s, e in p.spans if s >= lo and e < hi)
            if self.config.pointer_loss == "softmax":
                # One occurrence: with every occurrence gold, start and end may learn different ones,
                # and a span from the first to the last occurrence wins.
                inside = inside[:1]
            starts += [(b, s) for s, _ in inside]
            ends += [(b, e) for _, e in inside]
        batch = self._tensors([it.question for it in items], rows, torch.arange(len(items)))
        start_t = torch.zeros_like(batch["p_mask"])
        end_t = torch.zeros_like(batch["p_mask"])
        if starts:
            start_t[tuple(torch.tensor(starts).T)] = True
            end_t[tuple(torch.tensor(ends).T)] = True
        batch.update(start_labels=start_t, end_labels=end_t)
        return batch

    def _tensors(self, questions: list[_Text], passages: list[_Text], p_question: torch.Tensor) -> dict[str, Any]:
        batch: dict[str, Any] = {"q_chars": pad_ids([q.chars for q in questions]),
                                 "p_chars": pad_ids([p.chars for p in passages]), "p_question": p_question}
        batch["q_mask"] = _mask([len(q.chars) for q in questions], batch["q_chars"].shape[1])
        batch["p_mask"] = _mask([len(p.chars) for p in passages], batch["p_chars"].shape[1])
        if self.vocab.words is not None:
            batch["q_words"] = pad_ids([q.words for q in questions])
            batch["p_words"] = pad_ids([p.words for p in passages])
        batch["_tokens"] = int(batch["p_mask"].sum() + batch["q_mask"].sum())
        return batch

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        out = model(batch)
        mask = batch["p_mask"].float()
        if self.config.pointer_loss == "softmax":
            return (span_loss(out["start"], batch["start_labels"], mask)
                    + span_loss(out["end"], batch["end_labels"], mask)
                    + gate_loss(out["gate"], batch["start_labels"], mask))
        a, g = self.config.focal_alpha, self.config.focal_gamma
        return (focal_loss(out["start"], out["gate"], batch["start_labels"], mask, a, g)
                + focal_loss(out["end"], out["gate"], batch["end_labels"], mask, a, g))

    # --- prediction -------------------------------------------------------------------------
    @torch.no_grad()
    def answer(self, questions: list[str], passages: list[list[str]], batch_size: int | None = None
               ) -> list[dict[str, Any]]:
        """For each question: answer ("" if none), score, passage index and span (end inclusive).

        Every passage window of every question is a row; rows of similar length share a forward pass,
        and the best span of each window is voted with those of the question's other windows/passages.
        """
        cfg = self.config
        rows: list[tuple[int, int, Window]] = [
            (qi, pi, w) for qi, ps in enumerate(passages) for pi, text in enumerate(ps)
            for w in windows(len(text), cfg.max_len, cfg.window_overlap) if w.end > w.start
        ]
        rows.sort(key=lambda r: r[2].end - r[2].start)
        enc = self._encoder()
        candidates: list[list[Candidate]] = [[] for _ in questions]
        bs = batch_size or cfg.eval_batch_size
        self.model.eval()
        for k in range(0, len(rows), bs):
            chunk = rows[k : k + bs]
            for (qi, pi, w), (score, i, j) in zip(chunk, self._decode_rows(chunk, questions, passages, enc)):
                if score > 0:
                    s, e = w.start + i, w.start + j
                    candidates[qi].append(Candidate(passages[qi][pi][s : e + 1], score, pi, s, e))
        out = []
        for cands in candidates:
            best, score = vote(cands, cfg.voting)
            if best is None:
                out.append({"answer": "", "score": 0.0, "passage_index": None, "start": None, "end": None})
            else:
                out.append({"answer": best.text, "score": round(score, 6), "passage_index": best.passage,
                            "start": best.start, "end": best.end})
        return out

    def _decode_rows(self, chunk: list[tuple[int, int, Window]], questions: list[str], passages: list[list[str]],
                     enc: Callable[[str], _Text]) -> list[tuple[float, int, int]]:
        """(score, start, end) of the best span owned by each window (score 0: none)."""
        q_index: dict[int, int] = {}
        for qi, _, _ in chunk:
            q_index.setdefault(qi, len(q_index))
        rows = [_slice(enc(passages[qi][pi]), w.start, w.end) for qi, pi, w in chunk]
        batch = self._tensors([enc(questions[qi]) for qi in q_index], rows,
                              torch.tensor([q_index[qi] for qi, _, _ in chunk]))
        batch = self.to_device(batch)
        start, end = pointer_probs(self.model(batch), batch["p_mask"], self.config.pointer_loss)
        # A window only proposes spans starting in the part it owns, so overlaps are not counted twice.
        pos = torch.arange(start.shape[1], device=start.device)
        own = torch.tensor([[w.own_start - w.start, w.own_end - w.start] for _, _, w in chunk], device=start.device)
        start = start * ((pos >= own[:, :1]) & (pos < own[:, 1:]))
        score, i, j = best_spans(start, end, self.config.max_answer_len, self.config.threshold)
        return list(zip(score.tolist(), i.tolist(), j.tolist()))

    def evaluate(self, examples: list[QAExample], batch_size: int | None = None) -> dict[str, Any]:
        preds = self.answer([ex.question for ex in examples], [[p.text for p in ex.passages] for ex in examples],
                            batch_size)
        return qa_metrics([ex.answers for ex in examples], [p["answer"] for p in preds], [ex.kind for ex in examples])

    def validate_record(self, record: dict[str, Any], path: str, line: int) -> None:
        q = record.get("question")
        if not isinstance(q, str) or not q.strip():
            raise DataError(path, "missing or empty 'question'", line)
        for p in passages_field(record, path, line):
            passage_text(p, path, line, "")

    def predict_records(self, records: Iterable[dict[str, Any]], batch_size: int | None = None
                        ) -> Iterator[dict[str, Any]]:
        """Adds answer, score, passage_index, start and end (inclusive, in that passage)."""
        it = iter(records)
        while chunk := list(islice(it, 256)):
            texts = [[passage_text(p, "", None, "")[0] for p in passages_field(r, "", None)] for r in chunk]
            for rec, ans in zip(chunk, self.answer([r["question"] for r in chunk], texts, batch_size)):
                yield {**rec, **ans}


def _slice(t: _Text, lo: int, hi: int) -> _Text:
    return _Text(t.chars[lo:hi], t.words[lo:hi] if t.words is not None else None)


def _mask(lengths: list[int], width: int) -> torch.Tensor:
    return torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
