"""What the reader reads, one small adapter per encoder kind: a question and a window of a passage -> a row of
model inputs, rows -> a batch, and (through `Encoded`) the map between the row's positions and the window's
characters. Everything else (cropping, labels, decoding, voting) is the pipeline's, the same for both kinds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ...data.batching import pad_ids
from ...errors import ConfigError
from ...nn.encoder import Encoded, TextEncoder, pad_id_of

# Question tokens a pair must have room for (a question cut shorter no longer says what it asks).
MIN_QUESTION_TOKENS = 16


@dataclass
class Text:
    """Char (and jieba word) ids of a whole text, for the DGCNN."""

    chars: torch.Tensor
    words: torch.Tensor | None

    def slice(self, lo: int, hi: int) -> Text:
        return Text(self.chars[lo:hi], self.words[lo:hi] if self.words is not None else None)


@dataclass
class Row:
    """One window of one passage with its question, as the model reads it.

    `encoded` maps the row's positions to the window's characters (positions that are no passage text never
    start or end an answer); an encoder's pair ids are in it too. The DGCNN reads `question` and `passage`.
    """

    encoded: Encoded
    question: Text | None = None
    passage: Text | None = None


class ReaderInputs:
    """The interface of the two adapters; a question/passage is whatever `row` needs of it."""

    def question(self, text: str) -> Any:
        raise NotImplementedError

    def passage(self, text: str) -> Any:
        raise NotImplementedError

    def spans(self, text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The answer spans of a passage that the model can point at (whole positions)."""
        return spans

    def row(self, question: Any, passage: Any, lo: int, hi: int) -> Row:
        """The row of characters [lo, hi) of a passage (as given by `passage`) with its question."""
        raise NotImplementedError

    def batch(self, rows: list[Row]) -> dict[str, Any]:
        """Model inputs of rows; `p_mask` marks the positions an answer may start or end at; `_tokens` counts."""
        raise NotImplementedError


class ScratchInputs(ReaderInputs):
    """The DGCNN's: char + jieba-word ids, one position a character. A passage is encoded whole (jieba sees
    it whole) and sliced into windows; the questions of a batch are encoded once each, apart from passages."""

    def __init__(self, assets: dict[str, Any]):
        self.text_encoder = TextEncoder(assets)
        self.has_words = bool(assets.get("words"))

    def encode(self, text: str) -> Text:
        ids = self.text_encoder(text).ids
        words = torch.tensor(ids["word_ids"], dtype=torch.long) if "word_ids" in ids else None
        return Text(torch.tensor(ids["char_ids"], dtype=torch.long), words)

    def question(self, text: str) -> Text:
        return self.encode(text)

    def passage(self, text: str) -> Text:
        return self.encode(text)

    def row(self, question: Text, passage: Text, lo: int, hi: int) -> Row:
        return Row(Encoded({}, [(i, i + 1) for i in range(hi - lo)]), question, passage.slice(lo, hi))

    def batch(self, rows: list[Row]) -> dict[str, Any]:
        questions = list({id(r.question): r.question for r in rows if r.question is not None}.values())
        index = {id(q): k for k, q in enumerate(questions)}
        passages = [r.passage for r in rows if r.passage is not None]
        return self.tensors(questions, passages, torch.tensor([index[id(r.question)] for r in rows]))

    def tensors(self, questions: list[Text], passages: list[Text], p_question: torch.Tensor) -> dict[str, Any]:
        """Questions [Q, Lq] and passages [N, Lp]; passage n belongs to question `p_question[n]`."""
        batch: dict[str, Any] = {
            "q_chars": pad_ids([q.chars for q in questions]),
            "p_chars": pad_ids([p.chars for p in passages]),
            "p_question": p_question,
        }
        batch["q_mask"] = lengths_mask([len(q.chars) for q in questions], batch["q_chars"].shape[1])
        batch["p_mask"] = lengths_mask([len(p.chars) for p in passages], batch["p_chars"].shape[1])
        if self.has_words:
            batch["q_words"] = pad_ids([q.words for q in questions if q.words is not None])
            batch["p_words"] = pad_ids([p.words for p in passages if p.words is not None])
        batch["_tokens"] = int(batch["p_mask"].sum() + batch["q_mask"].sum())
        return batch


class EncoderInputs(ReaderInputs):
    """A Hugging Face encoder's: the tokenizer's pair template, `[CLS] question [SEP] window [SEP]` for BERT
    (`<s> q </s></s> window </s>` for XLM-R), with its token types. The question is repeated in every window
    and cut (never the window) so that the pair fits the encoder's positions."""

    def __init__(self, tokenizer: Any, limit: int, window: int, type_vocab_size: int):
        self.tokenizer = tokenizer
        self.limit = limit
        self.specials = tokenizer.num_special_tokens_to_add(pair=True)
        # A window of n characters is at most n + 1 tokens for WordPiece (one a character, or fewer) and
        # SentencePiece (a bare "▁" before a word at most once more than its spaces).
        room = limit - self.specials - (window + 1)
        if room < MIN_QUESTION_TOKENS:
            most = limit - self.specials - 1 - MIN_QUESTION_TOKENS
            raise ConfigError(
                f"a passage window of {window} characters leaves the question fewer than {MIN_QUESTION_TOKENS} of "
                f"the encoder's {limit} positions; use --window {most} or less (and --train-window)"
            )
        self.token_types = "token_type_ids" in tokenizer.model_input_names and type_vocab_size > 1
        self.pad_id = pad_id_of(tokenizer)
        self._last: tuple[str, Encoded] = ("", Encoded({}, []))

    def question(self, text: str) -> str:
        return text

    def passage(self, text: str) -> str:
        return text

    def spans(self, text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        if text != self._last[0]:  # SQuAD-style files give a paragraph's questions one after another
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            self._last = (text, Encoded({}, [(s, e) for s, e in enc["offset_mapping"]]))
        encoded = self._last[1]
        return [(s, e) for s, e in spans if encoded.positions(s, e) is not None]

    def row(self, question: str, passage: str, lo: int, hi: int) -> Row:
        window = passage[lo:hi]
        tok = self.tokenizer
        enc = tok(question, window, return_offsets_mapping=True)
        if len(enc["input_ids"]) > self.limit:
            excess = len(enc["input_ids"]) - self.limit
            if excess >= sum(s == 0 for s in enc.sequence_ids()):
                raise ConfigError(
                    f"a {hi - lo}-character passage window makes {len(enc['input_ids'])} tokens with its question, "
                    f"more than the encoder's {self.limit} positions even with the question cut; lower --max-len"
                )
            enc = tok(question, window, truncation="only_first", max_length=self.limit, return_offsets_mapping=True)
        sequence = enc.sequence_ids()
        offsets = [(s, e) if seq == 1 else (0, 0) for (s, e), seq in zip(enc["offset_mapping"], sequence)]
        ids = {"input_ids": list(enc["input_ids"])}
        if self.token_types:
            ids["token_type_ids"] = list(enc["token_type_ids"])
        return Row(Encoded(ids, offsets))

    def batch(self, rows: list[Row]) -> dict[str, Any]:
        encoded = [r.encoded for r in rows]
        batch: dict[str, Any] = {"input_ids": pad_ids([e.ids["input_ids"] for e in encoded], self.pad_id)}
        if self.token_types:
            batch["token_type_ids"] = pad_ids([e.ids["token_type_ids"] for e in encoded])
        width = batch["input_ids"].shape[1]
        lengths = [len(e.offsets) for e in encoded]
        batch["attention_mask"] = lengths_mask(lengths, width)
        batch["p_mask"] = torch.zeros(len(rows), width, dtype=torch.bool)
        for b, e in enumerate(encoded):
            batch["p_mask"][b, : len(e.offsets)] = torch.tensor(e.spannable())
        batch["_tokens"] = sum(lengths)
        return batch


def lengths_mask(lengths: list[int], width: int) -> torch.Tensor:
    return torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
