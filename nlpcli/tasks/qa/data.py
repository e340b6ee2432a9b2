"""QA examples and readers: DGCNN WebQA/SogouQA JSON lists, WebQA `*.ann.json`, SQuAD/CMRC/DRCD JSON, JSONL.

Every reader gives question-level examples: a question, its passages (each with the answer
spans located in it) and the accepted answers (an empty list means "no passage holds one").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...data.io import ReadStats, check_file, iter_json_array, iter_jsonl, read_text
from ...errors import ConfigError, DataError

FORMATS = ("dgcnn", "webqa", "squad", "jsonl")
VARIANTS_FILE = "qid_answer_expand"  # SogouQA's official key of accepted answer variants


@dataclass
class Passage:
    text: str
    spans: list[tuple[int, int]] = field(default_factory=list)  # answer spans, end inclusive
    labelled: bool = True  # False when an answer is claimed but cannot be found in the text


@dataclass
class QAExample:
    question: str
    passages: list[Passage]
    answers: list[str] = field(default_factory=list)  # accepted answers; [] = no answer
    kind: str = "webqa"  # "webqa" (accuracy/F1 scoring) or "squad" (also EM/F1 CMRC-style)
    qid: str | None = None
    line: int | None = None


def detect_format(path: str | Path, text: str) -> str:
    head = text.lstrip()[:1]
    if head == "[":
        return "dgcnn"
    if head != "{":
        raise DataError(path, "not a QA file: expected a JSON list, a JSON object or JSON lines", 1)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return "jsonl"  # several objects, one a line
    if isinstance(obj, dict) and isinstance(obj.get("data"), list):
        return "squad"
    if isinstance(obj, dict) and ("question" in obj or "passages" in obj or "passage" in obj):
        return "jsonl"  # a one-line JSONL file
    return "webqa"


def read_qa(path: str | Path, fmt: str | None = None, skip_bad: bool = False) -> tuple[list[QAExample], ReadStats]:
    """Read any supported QA file; the format is sniffed unless given."""
    text = read_text(check_file(path))
    fmt = fmt or detect_format(path, text)
    readers = {"dgcnn": _read_dgcnn, "webqa": _read_webqa, "squad": _read_squad, "jsonl": _read_jsonl}
    if fmt not in readers:
        raise ConfigError(f"unknown QA format {fmt!r}; known: {', '.join(FORMATS)}")
    stats = ReadStats()
    examples = readers[fmt](text, str(path), stats if skip_bad else None)
    if not examples:
        raise DataError(path, "no usable questions in file")
    _add_variants(examples, Path(path))
    return examples, stats


def locate(text: str, answer: str) -> list[tuple[int, int]]:
    """Every occurrence of an answer in a passage, as (start, end inclusive)."""
    if not answer:
        return []
    return [(m.start(), m.start() + len(answer) - 1) for m in re.finditer(re.escape(answer), text)]


def passage_of(text: str, answers: list[str]) -> Passage:
    """A passage labelled with every occurrence of any of its answers."""
    spans = sorted({s for a in answers for s in locate(text, a)})
    return Passage(text, spans, labelled=bool(spans) or not any(answers))


def _question(obj: dict, path: str, line: int | None, where: str = "") -> str:
    q = obj.get("question")
    if not isinstance(q, str) or not q.strip():
        raise DataError(path, f"{where}missing or empty 'question'", line)
    return q


def passage_text(p: Any, path: str, line: int | None, where: str) -> tuple[str, str | None]:
    """(text, passage-level answer: "" for none, None when not given) of a passage string or object."""
    if isinstance(p, str):
        return p, None
    if isinstance(p, dict):
        text = p.get("passage", p.get("text", p.get("evidence")))
        answer = p.get("answer")
        if isinstance(answer, list):
            answer = answer[0] if answer else ""
        if isinstance(text, str) and (answer is None or isinstance(answer, str)):
            return text, answer
    raise DataError(path, f"{where}a passage must be a string or {{'passage': str, 'answer': str}}", line)


def passages_field(obj: dict, path: str, line: int | None, where: str = "") -> list[Any]:
    """The passages of a record: `passages` (a list) or `passage` (one string or a list)."""
    ps = obj.get("passages", obj.get("passage"))
    if isinstance(ps, (str, dict)):
        ps = [ps]
    if not isinstance(ps, list):
        raise DataError(path, f"{where}missing 'passages' (a list of passages)", line)
    if not ps:
        raise DataError(path, f"{where}empty passage list", line)
    return ps


def _guarded(stats: ReadStats | None, fn: Callable[..., QAExample], *args: Any) -> QAExample | None:
    try:
        return fn(*args)
    except DataError as err:
        if stats is None:
            raise
        stats.skip(err)
        return None


def _dgcnn_item(obj: Any, path: str, line: int) -> QAExample:
    if not isinstance(obj, dict):
        raise DataError(path, "expected an object {question, passages, id}", line)
    where = f"id {obj['id']}: " if "id" in obj else ""
    question = _question(obj, path, line, where)
    raw = [passage_text(p, path, line, where) for p in passages_field(obj, path, line, where)]
    answers = list(dict.fromkeys(a for _, a in raw if a))
    passages = [passage_of(t, [a or ""]) for t, a in raw]
    return QAExample(question, passages, answers, "webqa", str(obj.get("id")) if "id" in obj else None, line)


def _read_dgcnn(text: str, path: str, stats: ReadStats | None) -> list[QAExample]:
    items = (_guarded(stats, _dgcnn_item, obj, path, line) for line, obj in iter_json_array(text, path))
    return [ex for ex in items if ex is not None]


def _webqa_item(qid: str, obj: Any, path: str) -> QAExample:
    where = f"question {qid}: "
    if not isinstance(obj, dict):
        raise DataError(path, f"{where}expected an object with 'question' and 'evidences'")
    question = _question(obj, path, None, where)
    evidences = obj.get("evidences")
    if not isinstance(evidences, dict) or not evidences:
        raise DataError(path, f"{where}missing or empty 'evidences'")
    passages, answers = [], []
    for ev in evidences.values():
        if (
            not isinstance(ev, dict)
            or not isinstance(ev.get("evidence"), str)
            or not isinstance(ev.get("answer"), list)
        ):
            raise DataError(path, f"{where}an evidence must be {{'evidence': str, 'answer': [str]}}")
        found = [a for a in ev["answer"] if isinstance(a, str) and a and a != "no_answer"]
        passages.append(passage_of(ev["evidence"], found))
        answers.extend(found)
    return QAExample(question, passages, list(dict.fromkeys(answers)), "webqa", qid)


def _read_webqa(text: str, path: str, stats: ReadStats | None) -> list[QAExample]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON ({e.msg})", e.lineno) from None
    if not isinstance(data, dict):
        raise DataError(path, "expected an object of question id -> {question, evidences}")
    items = (_guarded(stats, _webqa_item, qid, obj, path) for qid, obj in data.items())
    return [ex for ex in items if ex is not None]


def _squad_question(qa: Any, context: str, path: str, where: str) -> QAExample:
    if not isinstance(qa, dict):
        raise DataError(path, f"{where}expected a question object")
    where = f"{where}question {qa.get('id', '?')}: "
    question = _question(qa, path, None, where)
    answers = qa.get("answers")
    if not isinstance(answers, list):
        raise DataError(path, f"{where}missing 'answers' list")
    texts, spans = [], set()
    for a in answers:
        if not isinstance(a, dict) or not isinstance(a.get("text"), str):
            raise DataError(path, f"{where}an answer must be {{'text': str, 'answer_start': int}}")
        t, start = a["text"].strip(), a.get("answer_start", -1)
        if not t:
            continue
        texts.append(t)
        if isinstance(start, int) and start >= 0 and context[start : start + len(t)] == t:
            spans.add((start, start + len(t) - 1))
        else:  # a misaligned offset (CMRC has some): the nearest verbatim occurrence, if any
            found = locate(context, t)
            if found:
                spans.add(min(found, key=lambda s: abs(s[0] - (start if isinstance(start, int) else 0))))
    labelled = bool(spans) or not texts
    return QAExample(
        question,
        [Passage(context, sorted(spans), labelled)],
        list(dict.fromkeys(texts)),
        "squad",
        str(qa.get("id")) if "id" in qa else None,
    )


def _read_squad(text: str, path: str, stats: ReadStats | None) -> list[QAExample]:
    data = json.loads(text)["data"]
    out: list[QAExample] = []
    for ai, article in enumerate(data):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            err = DataError(path, f"data[{ai}]: missing 'paragraphs' list")
            if stats is None:
                raise err
            stats.skip(err)
            continue
        for pi, para in enumerate(paragraphs):
            where = f"data[{ai}].paragraphs[{pi}]: "
            if (
                not isinstance(para, dict)
                or not isinstance(para.get("context"), str)
                or not isinstance(para.get("qas"), list)
            ):
                err = DataError(path, f"{where}expected {{'context': str, 'qas': [...]}}")
                if stats is None:
                    raise err
                stats.skip(err)
                continue
            for qa in para["qas"]:
                ex = _guarded(stats, _squad_question, qa, para["context"], path, where)
                if ex is not None:
                    out.append(ex)
    return out


def _jsonl_item(obj: dict, path: str, line: int) -> QAExample:
    """nlpcli's own shape (also what `predict qa` writes): question, passages, answer/answers."""
    question = _question(obj, path, line)
    raw = [passage_text(p, path, line, "") for p in passages_field(obj, path, line)]
    gold = obj.get("answers", obj.get("answer"))
    if gold is None and all(a is None for _, a in raw):
        raise DataError(path, "no gold answer: give 'answer' (\"\" for none), 'answers', or per-passage answers", line)
    if isinstance(gold, str):
        gold = [gold]
    if gold is not None and not (isinstance(gold, list) and all(isinstance(a, str) for a in gold)):
        raise DataError(path, "'answer' must be a string and 'answers' a list of strings", line)
    answers = list(dict.fromkeys([a for a in (gold or []) if a] + [a for _, a in raw if a]))
    # Passages without their own answer are labelled by searching the question-level answers.
    passages = [passage_of(t, answers if a is None else [a]) for t, a in raw]
    return QAExample(question, passages, answers, "webqa", str(obj["id"]) if "id" in obj else None, line)


def _read_jsonl(text: str, path: str, stats: ReadStats | None) -> list[QAExample]:
    items = (_guarded(stats, _jsonl_item, obj, path, line) for line, obj in iter_jsonl(text.splitlines(), path, stats))
    return [ex for ex in items if ex is not None]


def _add_variants(examples: list[QAExample], path: Path) -> None:
    """Accepted answer variants from SogouQA's `qid_answer_expand` when it sits beside the data file."""
    key = path.parent / VARIANTS_FILE
    if not key.is_file():
        return
    variants: dict[str, list[str]] = {}
    for line in read_text(key).splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            variants[parts[0]] = [parts[1], *parts[2].split("|")]
    for ex in examples:
        if ex.qid in variants and ex.answers:
            ex.answers = list(dict.fromkeys(ex.answers + [v for v in variants[ex.qid] if v]))
