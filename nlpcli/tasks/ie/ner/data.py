"""NER examples and readers: CLUENER JSONL, CMeEE JSON arrays, char-per-line BIO (plain or zip)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ....data.io import ReadStats, check_file, iter_json_array, iter_jsonl, read_text
from ....errors import ConfigError, DataError

FORMATS = ("cluener", "cmeee", "bio")


@dataclass
class NerExample:
    """A text and its entity spans (start, end inclusive, type); `record` keeps the input's fields.

    `types` names the entity types this text was annotated for, when that is not every type (a corpus that
    marks people and places but not organisations): the model learns nothing about the others from it, and
    an evaluation scores it on these types only. None: annotated for every type."""

    text: str
    spans: list[tuple[int, int, str]] = field(default_factory=list)
    record: dict[str, Any] | None = None
    line: int | None = None
    offset: int = 0  # where this text starts in its source text (windows)
    path: str = ""  # the file it was read from
    types: tuple[str, ...] | None = None


def detect_format(path: str | Path) -> str:
    p = check_file(path)
    if p.suffix.lower() == ".zip":
        return "bio"
    head = read_text(p).lstrip()[:1]
    if head == "[":
        return "cmeee"
    if head == "{":
        return "cluener"
    return "bio"


def read_ner(path: str | Path, fmt: str | None = None, skip_bad: bool = False) -> tuple[list[NerExample], ReadStats]:
    """Read any supported NER file; the format is sniffed unless given."""
    fmt = fmt or detect_format(path)
    readers = {"cluener": read_cluener, "cmeee": read_cmeee, "bio": read_bio}
    if fmt not in readers:
        raise ConfigError(f"unknown NER format {fmt!r}; known: {', '.join(FORMATS)}")
    stats = ReadStats()
    examples = readers[fmt](path, stats if skip_bad else None)
    if not examples:
        raise DataError(path, "no usable examples in file")
    return examples, stats


def _check_span(
    text: str, start: Any, end: Any, etype: Any, mention: Any, path: str, line: int
) -> tuple[int, int, str]:
    if not isinstance(etype, str) or not etype:
        raise DataError(path, f"entity type must be a non-empty string, got {etype!r}", line)
    if not (isinstance(start, int) and isinstance(end, int)) or isinstance(start, bool):
        raise DataError(path, f"entity offsets must be integers, got [{start!r}, {end!r}]", line)
    if not 0 <= start <= end < len(text):
        raise DataError(path, f"entity [{start}, {end}] lies outside the text (length {len(text)})", line)
    if mention is not None and text[start : end + 1] != mention:
        raise DataError(
            path, f"entity {mention!r} does not match text[{start}:{end + 1}] = {text[start : end + 1]!r}", line
        )
    return start, end, etype


def parse_record(obj: Any, path: str, line: int) -> NerExample:
    """One JSON record: `text` plus CLUENER `label` (inclusive ends), or an `entities` list: CMeEE's
    `start_idx`/`end_idx` (inclusive) or nlpcli's output `start`/`end` (exclusive). An optional
    `annotated_types` list says which types the record was annotated for (partial annotation)."""
    if not isinstance(obj, dict):
        raise DataError(path, f"expected a JSON object, got {type(obj).__name__}", line)
    text = obj.get("text")
    if not isinstance(text, str):
        raise DataError(path, "missing string field 'text'", line)
    spans: list[tuple[int, int, str]] = []
    label = obj.get("label")
    if label is not None:
        if not isinstance(label, dict):
            raise DataError(path, "'label' must be an object {type: {mention: [[start, end], ...]}}", line)
        for etype, mentions in label.items():
            if not isinstance(mentions, dict):
                raise DataError(path, f"label[{etype!r}] must be an object of mention -> offsets", line)
            for mention, offsets in mentions.items():
                if not isinstance(offsets, list) or not all(isinstance(o, list) and len(o) == 2 for o in offsets):
                    raise DataError(path, f"offsets of {mention!r} must be a list of [start, end] pairs", line)
                spans.extend(_check_span(text, s, e, etype, mention, path, line) for s, e in offsets)
    entities = obj.get("entities")
    if label is None and entities is not None:
        if not isinstance(entities, list):
            raise DataError(path, "'entities' must be a list", line)
        for ent in entities:
            if not isinstance(ent, dict):
                raise DataError(path, "each entity must be an object", line)
            start = ent.get("start_idx", ent.get("start"))
            # CMeEE's `end_idx` is inclusive; the `end` of nlpcli's own output is exclusive (text[start:end]).
            end = ent["end_idx"] if "end_idx" in ent else _inclusive(ent.get("end"))
            mention = ent.get("entity", ent.get("text"))
            spans.append(_check_span(text, start, end, ent.get("type"), mention, path, line))
    types = _annotated_types(obj.get("annotated_types"), spans, path, line)
    return NerExample(text=text, spans=sorted(set(spans)), record=obj, line=line, path=path, types=types)


def _annotated_types(value: Any, spans: list[tuple[int, int, str]], path: str, line: int) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(t, str) and t for t in value):
        raise DataError(path, "'annotated_types' must be a non-empty list of entity type names", line)
    outside = sorted({t for _, _, t in spans} - set(value))
    if outside:
        raise DataError(path, f"entities of types {outside} are not in 'annotated_types' {value}", line)
    return tuple(sorted(set(value)))


def _inclusive(end: Any) -> Any:
    """An exclusive end as the inclusive one spans keep (anything else is left for `_check_span` to refuse)."""
    return end - 1 if isinstance(end, int) and not isinstance(end, bool) else end


def _collect(items: Iterable[tuple[int, Any]], path: str, stats: ReadStats | None) -> list[NerExample]:
    out = []
    for line, obj in items:
        try:
            out.append(parse_record(obj, path, line))
        except DataError as err:
            if stats is None:
                raise
            stats.skip(err)
    return out


def read_cluener(path: str | Path, stats: ReadStats | None = None) -> list[NerExample]:
    text = read_text(path)
    return _collect(iter_jsonl(text.splitlines(), str(path), stats), str(path), stats)


def read_cmeee(path: str | Path, stats: ReadStats | None = None) -> list[NerExample]:
    text = read_text(path)
    if not text.lstrip().startswith("["):
        raise DataError(path, "expected a JSON array of {text, entities} objects", 1)
    return _collect(iter_json_array(text, str(path)), str(path), stats)


def read_bio(path: str | Path, stats: ReadStats | None = None) -> list[NerExample]:
    """Char-per-line `char tag` blocks separated by blank lines; tags O, B-/I- (and S-/E-/M- of BIOES)."""
    out: list[NerExample] = []
    chars: list[str] = []
    tags: list[tuple[str, int]] = []
    start_line = 1
    bad: DataError | None = None

    def flush() -> None:
        nonlocal bad
        if chars and bad is None:
            out.append(NerExample("".join(chars), _bio_spans(tags, str(path)), line=start_line, path=str(path)))
        elif bad is not None:
            if stats is None:
                raise bad
            stats.skip(bad)
        chars.clear()
        tags.clear()
        bad = None

    for lineno, raw in enumerate(read_text(path).splitlines(), 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            flush()
            continue
        if not chars and bad is None:
            start_line = lineno
        parts = line.split()
        if len(parts) == 1 and line[:1].isspace():
            parts = [" ", parts[0]]  # a space character tagged on its own line
        if len(parts) != 2 or len(parts[0]) != 1:
            bad = bad or DataError(path, f"expected 'char tag', got {line!r}", lineno)
            continue
        tag = parts[1]
        if tag != "O" and (len(tag) < 3 or tag[0] not in "BIESM" or tag[1] not in "-_"):
            bad = bad or DataError(path, f"unknown tag {tag!r} (expected O, B-X, I-X, E-X, S-X or M-X)", lineno)
            continue
        chars.append(parts[0])
        tags.append((tag, lineno))
    flush()
    return out


def _bio_spans(tags: list[tuple[str, int]], path: str) -> list[tuple[int, int, str]]:
    """Spans from BIO/BIOES tags; an I- that does not continue an entity starts one (as conlleval)."""
    spans: list[tuple[int, int, str]] = []
    start: int | None = None
    etype = ""
    for i, (tag, _) in enumerate(tags):
        prefix, kind = (tag[0], tag[2:]) if tag != "O" else ("O", "")
        continues = prefix in "IEM" and etype == kind and start is not None
        if not continues:
            if start is not None:
                spans.append((start, i - 1, etype))
            start, etype = (i, kind) if prefix != "O" else (None, "")
        if prefix in "ES" and start is not None:
            spans.append((start, i, etype))
            start, etype = None, ""
    if start is not None:
        spans.append((start, len(tags) - 1, etype))
    return spans
