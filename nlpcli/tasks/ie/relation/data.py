"""SKE / DuIE 1.0 relation data: string triples located in their text, schemas, the official normalisation."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ....data.io import ReadStats, iter_jsonl, read_text
from ....errors import ConfigError, DataError

FORMATS = ("ske",)
Span = tuple[int, int]  # (start, end inclusive) character offsets


@dataclass
class Triple:
    """A gold SPO triple with every place its subject and object occur in the text."""

    subject: str
    predicate: str
    object: str
    subject_type: str = ""
    object_type: str = ""
    subject_spans: list[Span] = field(default_factory=list)
    object_spans: list[Span] = field(default_factory=list)
    case_folded: bool = False  # located only after lower-casing (annotation and text differ in case)


@dataclass
class IeExample:
    """A text and its triples; `line` is the source line, `offset` where a window starts in its text."""

    text: str
    triples: list[Triple] = field(default_factory=list)
    line: int | None = None
    offset: int = 0
    path: str = ""


def normalize_mention(s: str) -> str:
    """The official scorer's normalisation: lower-case, strip one surrounding 《》."""
    s = s.lower()
    if len(s) >= 2 and s.startswith("《") and s.endswith("》"):
        s = s[1:-1]
    return s


def gold_key(t: Triple) -> tuple[str, str, str]:
    return normalize_mention(t.subject), t.predicate, normalize_mention(t.object)


def _fold(s: str) -> str:
    """Lower-case without changing the length (so offsets in the folded text are offsets in the text)."""
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in s)


def find_all(text: str, mention: str) -> tuple[list[Span], bool]:
    """Every (possibly overlapping) occurrence of `mention`; case-insensitive when there is no exact one."""
    for hay, needle, folded in ((text, mention, False), (_fold(text), _fold(mention), True)):
        spans, pos = [], hay.find(needle)
        while pos >= 0:
            spans.append((pos, pos + len(needle) - 1))
            pos = hay.find(needle, pos + 1)
        if spans:
            return spans, folded
    return [], False


def _field(spo: dict, key: str, path: str, line: int, n: int, required: bool = True) -> str:
    value = spo.get(key, "" if not required else None)
    if not isinstance(value, str) or (required and not value.strip()):
        raise DataError(path, f"triple {n}: '{key}' must be a non-empty string, got {value!r}", line)
    return value


def parse_record(obj: dict[str, Any], path: str, line: int) -> IeExample:
    """One SKE record: `text` and `spo_list` [{subject, predicate, object, subject_type?, object_type?}]."""
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        raise DataError(path, "missing non-empty string field 'text'", line)
    spo_list = obj.get("spo_list")
    if not isinstance(spo_list, list):
        raise DataError(path, "missing list field 'spo_list'", line)
    triples = []
    for n, spo in enumerate(spo_list, 1):
        if not isinstance(spo, dict):
            raise DataError(path, f"triple {n}: expected an object, got {type(spo).__name__}", line)
        subject, predicate, obj_ = (_field(spo, k, path, line, n) for k in ("subject", "predicate", "object"))
        s_spans, s_folded = find_all(text, subject)
        if not s_spans:
            raise DataError(path, f"triple {n}: subject {subject!r} is not in the text", line)
        o_spans, o_folded = find_all(text, obj_)
        if not o_spans:
            raise DataError(path, f"triple {n}: object {obj_!r} is not in the text", line)
        s_type, o_type = (_field(spo, k, path, line, n, required=False) for k in ("subject_type", "object_type"))
        triples.append(Triple(subject, predicate, obj_, s_type, o_type, s_spans, o_spans, s_folded or o_folded))
    return IeExample(text, triples, line=line, path=path)


def read_ske(path: str | Path, fmt: str | None = None, skip_bad: bool = False) -> tuple[list[IeExample], ReadStats]:
    """Read SKE/DuIE JSON Lines; bad records raise a line-numbered DataError or are skipped and counted."""
    if fmt not in (None, *FORMATS):
        raise ConfigError(f"unknown ie format {fmt!r}; known: {', '.join(FORMATS)}")
    stats = ReadStats()
    sink = stats if skip_bad else None
    examples = []
    for line, obj in iter_jsonl(read_text(path).splitlines(), str(path), sink):
        try:
            examples.append(parse_record(obj, str(path), line))
        except DataError as err:
            if sink is None:
                raise
            stats.skip(err)
    if not examples:
        raise DataError(path, "no usable examples in file")
    return examples, stats


@dataclass
class Schema:
    """Predicates and, per predicate, the (subject_type, object_type) pairs allowed."""

    types: dict[str, list[tuple[str, str]]]

    @property
    def predicates(self) -> list[str]:
        return sorted(self.types)


def read_schema(path: str | Path) -> Schema:
    """The official schema file: JSON Lines {subject_type, predicate, object_type}."""
    types: dict[str, list[tuple[str, str]]] = {}
    for line, obj in iter_jsonl(read_text(path).splitlines(), str(path)):
        pred = obj.get("predicate")
        if not isinstance(pred, str) or not pred:
            raise DataError(path, "schema entry without a string 'predicate'", line)
        pair = (str(obj.get("subject_type", "")), str(obj.get("object_type", "")))
        types.setdefault(pred, [])
        if pair not in types[pred]:
            types[pred].append(pair)
    return Schema(types)


def check_predicates(
    examples: list[IeExample], known: set[str], source: str, stats: ReadStats | None
) -> list[IeExample]:
    """Examples whose predicates are all in `known`; others raise a line-numbered error or are counted."""
    kept = []
    for ex in examples:
        bad = next((t.predicate for t in ex.triples if t.predicate not in known), None)
        if bad is None:
            kept.append(ex)
            continue
        err = DataError(ex.path or "data", f"predicate {bad!r} is not in the schema {source}", ex.line)
        if stats is None:
            raise err
        stats.skip(err)
    return kept


def predicate_types(examples: list[IeExample], schema: Schema | None) -> dict[str, list[str]]:
    """Per predicate, the (subject_type, object_type) written in predictions: the most frequent in training
    data, else the schema's first (成立日期 has two schema entries, 企业 and 机构)."""
    counts: dict[str, Counter] = {}
    for ex in examples:
        for t in ex.triples:
            if t.subject_type or t.object_type:
                counts.setdefault(t.predicate, Counter())[(t.subject_type, t.object_type)] += 1
    preds = set(counts) | set(schema.types if schema else ())
    out = {}
    for p in sorted(preds):
        if p in counts:
            out[p] = list(counts[p].most_common(1)[0][0])
        elif schema is not None:
            out[p] = list(schema.types[p][0])
    return out


def location_counts(examples: list[IeExample]) -> dict[str, int]:
    """How the triples' strings were found in their texts (every kept triple was found)."""
    triples = [t for ex in examples for t in ex.triples]
    return {
        "triples": len(triples),
        "exact": sum(not t.case_folded for t in triples),
        "case_insensitive": sum(t.case_folded for t in triples),
        "repeated_mentions": sum(len(t.subject_spans) > 1 or len(t.object_spans) > 1 for t in triples),
    }
