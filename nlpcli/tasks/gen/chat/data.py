"""Dialogues for `chat`: LCCC JSON, JSON of splits (`FILE#split`), JSONL histories, tab-separated turns."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ....data.io import ReadStats, check_file, iter_json_array, read_text
from ....errors import ConfigError, DataError

FORMATS = ("lccc", "jsonl", "tsv")


@dataclass
class Dialogue:
    """Turns in order (speakers alternate); spaces between characters already removed."""

    turns: list[str]
    line: int | None = None
    path: str = ""  # the file it came from (errors name it)


def clean_turn(turn: Any, path: str, line: int | None, index: int) -> str:
    """A turn as text without the corpus' inter-character spaces; non-text or empty turns are errors."""
    if not isinstance(turn, str):
        raise DataError(path, f"turn {index} is {type(turn).__name__}, expected text", line)
    text = "".join(turn.split())
    if not text:
        raise DataError(path, f"turn {index} is empty", line)
    return text


def clean_turns(turns: Any, path: str, line: int | None, what: str = "dialogue") -> list[str]:
    if not isinstance(turns, list):
        raise DataError(path, f"{what} must be a list of turns, got {type(turns).__name__}", line)
    if not turns:
        raise DataError(path, f"{what} is empty", line)
    return [clean_turn(t, path, line, i) for i, t in enumerate(turns)]


def record_turns(obj: Any, path: str, line: int | None) -> list[str]:
    """A JSONL record: a list of turns, or {"history": [...]} with an optional "reply"/"response"."""
    if isinstance(obj, list):
        return clean_turns(obj, path, line)
    if not isinstance(obj, dict):
        raise DataError(path, f"expected a list of turns or an object with 'history', got {type(obj).__name__}", line)
    if "history" not in obj:
        raise DataError(path, "missing field 'history' (a list of turns)", line)
    turns = clean_turns(obj["history"], path, line, "history")
    for key in ("reply", "response"):
        if key in obj:
            turns.append(clean_turn(obj[key], path, line, len(turns)))
            break
    return turns


def split_path(path: str | Path) -> tuple[Path, str | None]:
    """`FILE#split` names one split of a JSON object of splits (CDial-GPT toy_data.json)."""
    text = str(path)
    if "#" in text and not Path(text).exists():
        file, _, split = text.rpartition("#")
        return Path(file), split
    return Path(text), None


def detect_format(text: str, split: str | None = None) -> str:
    head = text.lstrip()[:1]
    if head == "{":
        if split is not None:
            return "lccc"
        first = text.lstrip().split("\n", 1)[0]
        try:
            obj = json.loads(first)
        except json.JSONDecodeError:
            return "lccc"
        # One line holding a whole object of splits (no 'history') is a splits file, not JSONL.
        return "jsonl" if "history" in obj or len(text.strip().splitlines()) > 1 else "lccc"
    if head == "[":
        # LCCC files open with "[" on its own line (or "[[" / "[ ["); JSONL lines are whole lists.
        first = text.lstrip().split("\n", 1)[0].strip()
        try:
            value = json.loads(first)
            return "jsonl" if isinstance(value, list) and all(isinstance(t, str) for t in value) else "lccc"
        except json.JSONDecodeError:
            return "lccc"
    return "tsv"


def read_dialogues(
    path: str | Path, fmt: str | None = None, skip_bad: bool = False
) -> tuple[list[Dialogue], ReadStats]:
    """Read any supported dialogue file; bad dialogues raise DataError (file, line) or are counted."""
    file, split = split_path(path)
    text = read_text(check_file(file))
    fmt = fmt or detect_format(text, split)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown chat format {fmt!r}; known: {', '.join(FORMATS)}")
    stats = ReadStats()
    items = {"lccc": _lccc_items, "jsonl": _jsonl_items, "tsv": _tsv_items}[fmt](text, str(file), split)
    out: list[Dialogue] = []
    for line, parse in items:
        try:
            out.append(Dialogue(parse(), line, str(path)))
        except DataError as err:
            if not skip_bad:
                raise
            stats.skip(err)
    if not out:
        raise DataError(path, "no usable dialogues in file")
    return out, stats


# A dialogue not parsed yet: (line or None, a call that returns its turns or raises DataError).
Item = tuple[int | None, Callable[[], list[str]]]


def _lccc_items(text: str, path: str, split: str | None) -> list[Item]:
    """(line, parser) per dialogue of a JSON array, or of one split of a JSON object."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(path, f"malformed JSON ({e.msg})", e.lineno) from None
        if split is None or split not in data:
            names = ", ".join(map(str, data)) if isinstance(data, dict) else ""
            raise DataError(path, f"a JSON object of splits: name one as {path}#SPLIT (splits: {names})")
        items = data[split]
        if not isinstance(items, list):
            raise DataError(path, f"split {split!r} is not a list of dialogues")
        # Line numbers are not kept by json.loads; the index names the dialogue instead.
        return [(None, _bind(clean_turns, d, path, None, f"{split}[{i}]")) for i, d in enumerate(items)]
    return [(line, _bind(clean_turns, d, path, line)) for line, d in iter_json_array(text, path)]


def _jsonl_items(text: str, path: str, split: str | None) -> list[Item]:
    items: list[Item] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        if raw.strip():
            items.append((lineno, _bind(_parse_jsonl_line, raw, path, lineno)))
    return items


def _parse_jsonl_line(raw: str, path: str, line: int) -> list[str]:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON ({e.msg})", line) from None
    return record_turns(obj, path, line)


def _tsv_items(text: str, path: str, split: str | None) -> list[Item]:
    """One dialogue a line, turns separated by tabs (CDial-GPT toy_train.txt: post<TAB>response)."""
    return [
        (lineno, _bind(clean_turns, raw.rstrip("\r").split("\t"), path, lineno))
        for lineno, raw in enumerate(text.splitlines(), 1)
        if raw.strip()
    ]


def _bind(fn: Callable[..., list[str]], *args: Any) -> Callable[[], list[str]]:
    return lambda: fn(*args)
