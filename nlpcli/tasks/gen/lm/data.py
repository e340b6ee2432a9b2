"""Sentence corpora for the language models: plain text, char-per-line IOB (zip), tab-separated labels, JSONL."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ....data.io import ReadStats, read_text
from ....errors import DataError

FORMATS = ("text", "conll", "tsv", "jsonl")

_TAG = re.compile(r"^(O|[BIESM]-\S+)$")
_SPACE = re.compile(r"\s+")


@dataclass
class Sentence:
    """One training sentence; `tokens` is filled once by the pipeline (jieba is the slow part)."""

    text: str
    line: int = 0
    tokens: list[str] | None = field(default=None, repr=False)
    path: str = ""  # the file it came from (errors name it)


def sniff_format(lines: list[str]) -> str:
    """conll (char TAG per line), jsonl, tsv (a label column) or plain text, from the first lines."""
    sample = [ln for ln in lines[:200] if ln.strip()]
    if not sample:
        return "text"
    if all(ln.lstrip().startswith("{") for ln in sample[:20]):
        return "jsonl"
    conll = sum(1 for ln in sample if len(ln.split()) == 2 and len(ln.split()[0]) == 1 and _TAG.match(ln.split()[1]))
    if conll >= 0.9 * len(sample):
        return "conll"
    if sum("\t" in ln for ln in sample) >= 0.9 * len(sample):
        return "tsv"
    return "text"


def clean_sentence(text: str) -> str:
    """Undo char-per-token spacing ("生 完 小 孩" -> "生完小孩"); other whitespace runs become one space."""
    parts = text.split()
    if len(parts) >= 3 and sum(len(p) == 1 for p in parts) >= 0.8 * len(parts):
        return "".join(parts)
    return _SPACE.sub(" ", text).strip()


def _tsv_text(line: str) -> str:
    # The label column is the short one (a class name or id); the text is the longest field.
    return max(line.split("\t"), key=len)


def read_sentences(
    path: str | Path, fmt: str | None = None, skip_bad: bool = False
) -> tuple[list[Sentence], ReadStats]:
    """Sentences of a corpus file (a zip gives its first member); bad records raise DataError or are counted."""
    text = read_text(path)
    lines = text.splitlines()
    fmt = fmt or sniff_format(lines)
    if fmt not in FORMATS:
        raise DataError(path, f"unknown format {fmt!r} for lm; use one of {', '.join(FORMATS)}")
    stats = ReadStats()
    if fmt == "conll":
        return _read_conll(lines, str(path)), stats
    out: list[Sentence] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = _jsonl_text(line, path, lineno) if fmt == "jsonl" else _tsv_text(line) if fmt == "tsv" else line
        except DataError as err:
            if not skip_bad:
                raise
            stats.skip(err)
            continue
        sentence = clean_sentence(raw)
        if sentence:
            out.append(Sentence(sentence, lineno, path=str(path)))
    if not out:
        raise DataError(path, "no sentences found")
    return out, stats


def _jsonl_text(line: str, path: str | Path, lineno: int) -> str:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON ({e.msg})", lineno) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise DataError(path, "expected a JSON object with a string field 'text'", lineno)
    return obj["text"]


def _read_conll(lines: list[str], path: str) -> list[Sentence]:
    """Blocks of `char TAG` lines separated by blank lines; a sentence is its first column joined."""
    out: list[Sentence] = []
    chars: list[str] = []
    start = 0
    for lineno, line in enumerate([*lines, ""], 1):
        parts = line.split()
        if parts:
            if not chars:
                start = lineno
            chars.append(parts[0])
        elif chars:
            out.append(Sentence("".join(chars), start, path=path))
            chars = []
    return out


@dataclass
class KeywordLine:
    """One keyword set of a keyword file: its line number, words, and why it cannot be served ("" if it can)."""

    line: int
    words: list[str]
    error: str = ""


def read_keyword_file(path: str, check: Callable[[list[str]], object], skip_bad: bool = False) -> list[KeywordLine]:
    """The keyword sets of a file, one a non-blank line (words split on whitespace), each checked with `check`
    (which raises an NlpcliError for a set the model cannot serve): such a line raises DataError naming it, or,
    with `skip_bad`, is kept with its error."""
    from ....data.io import open_input
    from ....errors import NlpcliError

    out = []
    with open_input(path) as f:
        try:
            for lineno, line in enumerate(f, 1):
                words = line.split()
                if not words:
                    continue  # blank lines are skipped; output records carry their input line number
                try:
                    check(words)
                except NlpcliError as e:
                    if not skip_bad:
                        raise DataError(path, str(e), lineno) from None
                    out.append(KeywordLine(lineno, words, str(e)))
                    continue
                out.append(KeywordLine(lineno, words))
        except UnicodeDecodeError:
            raise DataError(path, "not UTF-8 text") from None
    if not out:
        raise DataError(path, "no keyword sets (the file has only blank lines)")
    return out
