"""QA metrics: SogouQA/WebQA accuracy + char-F1 (score = their mean) and CMRC 2018 EM/F1."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ...data.vocab import normalize_char

# Symbols of the official SogouQA punctuation list that unicodedata does not call punctuation.
_EXTRA_PUNCT = set("`^~<=>|_-+$&#%@*\\/…‰※•—‖№←↑→↓∴∨∵∶∩∈∑√∞≯≡≮≤≥≈≌⊥⊙⌒□◆◇◎●★☆♀♂¨°·§¤±〃々〓÷×′▲″△∠≠■ˇˉ￣￥￠")


def is_punct(ch: str) -> bool:
    return ch in _EXTRA_PUNCT or unicodedata.category(ch).startswith("P")


def _pieces(text: str) -> list[str]:
    """Half-width, lower-case, punctuation as spaces, split on whitespace (the official steps)."""
    return "".join(" " if is_punct(c) else normalize_char(c) for c in text).split()


def normalize_answer(text: str) -> str:
    """SogouQA/WebQA normalisation: full -> half width, lower-case, no punctuation, no spaces."""
    return "".join(_pieces(text))


def char_f1(pred: str, gold: str) -> float:
    """F1 of the character multisets of two normalised strings."""
    common = sum((Counter(pred) & Counter(gold)).values())
    if not common:
        return 0.0
    p, r = common / len(pred), common / len(gold)
    return 2 * p * r / (p + r)


def sogou_scores(pred: str, golds: Sequence[str]) -> tuple[float, float]:
    """(accuracy, F1) of one prediction; with no gold answer, only an empty prediction is right."""
    norm = normalize_answer(pred)
    if not golds:
        return (1.0, 1.0) if not norm else (0.0, 0.0)
    if not norm:
        return 0.0, 0.0
    gold_norms = {normalize_answer(g) for g in golds}
    acc = norm in gold_norms or any(set(_pieces(pred)) == set(_pieces(g)) for g in golds)
    return float(acc), max(char_f1(norm, g) for g in gold_norms if g) if any(gold_norms) else 0.0


_CMRC_PUNCT = set("-:_*^/\\~`+=，。：？！“”；’《》……·、「」（）－～『』")
_TOKEN = re.compile(r"[A-Za-z0-9]+|\S")


def _cmrc_tokens(text: str) -> list[str]:
    """Single CJK chars, alphanumeric runs as words; punctuation dropped (CMRC 2018 script)."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in _CMRC_PUNCT and not (len(t) == 1 and is_punct(t))]


def _longest_common_run(a: list[str], b: list[str]) -> int:
    best, prev = 0, [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


def cmrc_scores(pred: str, golds: Sequence[str]) -> tuple[float, float]:
    """(EM, F1) of CMRC 2018: best over gold answers; F1 from the longest common substring."""
    if not golds:
        return (1.0, 1.0) if not pred.strip() else (0.0, 0.0)
    p = _cmrc_tokens(pred)
    em, f1 = 0.0, 0.0
    for g in golds:
        gt = _cmrc_tokens(g)
        em = max(em, float("".join(p) == "".join(gt)))
        lcs = _longest_common_run(p, gt)
        if lcs:
            prec, rec = lcs / len(p), lcs / len(gt)
            f1 = max(f1, 2 * prec * rec / (prec + rec))
    return em, f1


def qa_metrics(golds: Sequence[Sequence[str]], preds: Sequence[str], kinds: Sequence[str]) -> dict:
    """Corpus metrics: accuracy, f1, score for all questions; em/cmrc_f1 over SQuAD-style ones; no-answer counts."""
    n = len(golds)
    accs, f1s, ems, cf1s = [], [], [], []
    na = {"gold": 0, "predicted": 0, "correct": 0}
    for gold, pred, kind in zip(golds, preds, kinds):
        acc, f1 = sogou_scores(pred, gold)
        accs.append(acc)
        f1s.append(f1)
        if kind == "squad":
            em, cf1 = cmrc_scores(pred, gold)
            ems.append(em)
            cf1s.append(cf1)
        empty = not normalize_answer(pred)
        na["gold"] += not gold
        na["predicted"] += empty
        na["correct"] += empty and not gold
    out: dict[str, Any] = {"score": 0.0, "accuracy": sum(accs) / max(n, 1), "f1": sum(f1s) / max(n, 1), "examples": n}
    out["score"] = (out["accuracy"] + out["f1"]) / 2
    if ems:
        out["em"] = sum(ems) / len(ems)
        out["cmrc_f1"] = sum(cf1s) / len(cf1s)
        out["squad_examples"] = len(ems)
    out["no_answer"] = na | {"accuracy": na["correct"] / na["gold"] if na["gold"] else None}
    return out
