"""Set-matching precision / recall / F1 (entities, triples), micro and per type."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, TypeVar

Item = TypeVar("Item", bound=tuple[Any, ...])  # an entity span or a triple: hashable, ordered


def prf(tp: int, n_pred: int, n_gold: int) -> dict[str, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f}


def set_prf(
    gold: Sequence[Iterable[Hashable]],
    pred: Sequence[Iterable[Hashable]],
    type_of: Callable[[Any], str] | None = None,
) -> dict[str, Any]:
    """Micro P/R/F1 of exact matches between per-example gold and predicted sets.

    `type_of(item)` names an item's type for the per-type table (`per_type`) and the macro averages (`macro`);
    omit it for neither.
    """
    if len(gold) != len(pred):
        raise ValueError("gold and predictions differ in length")
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # tp, pred, gold
    tp = n_pred = n_gold = 0
    for g_items, p_items in zip(gold, pred):
        g, p = set(g_items), set(p_items)
        hit = g & p
        tp, n_pred, n_gold = tp + len(hit), n_pred + len(p), n_gold + len(g)
        if type_of is not None:
            for item in hit:
                counts[type_of(item)][0] += 1
            for item in p:
                counts[type_of(item)][1] += 1
            for item in g:
                counts[type_of(item)][2] += 1
    out: dict[str, Any] = prf(tp, n_pred, n_gold) | {"tp": tp, "predicted": n_pred, "gold": n_gold}
    if type_of is not None:
        out["per_type"] = {
            t: prf(c[0], c[1], c[2]) | {"tp": c[0], "predicted": c[1], "gold": c[2]} for t, c in sorted(counts.items())
        }
        out["macro"] = macro(out["per_type"])
    return out


def set_errors(gold: Sequence[Iterable[Item]], pred: Sequence[Iterable[Item]]) -> list[tuple[int, str, Item]]:
    """(example index, "false_positive" or "false_negative", item) of every predicted item not in gold and
    every gold item not predicted: the `predicted - tp` and `gold - tp` of `set_prf`, in example order and,
    within an example, in item order (spans by position)."""
    out = []
    for i, (g_items, p_items) in enumerate(zip(gold, pred, strict=True)):
        g, p = set(g_items), set(p_items)
        wrong = [(item, "false_positive") for item in p - g] + [(item, "false_negative") for item in g - p]
        out += [(i, kind, item) for item, kind in sorted(wrong)]
    return out


def macro(per_type: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Unweighted means of the per-type precision, recall and F1 (over the types in gold or predictions), the
    way CLUENER's leaderboard ranks: a rare type counts as much as a frequent one."""
    n = len(per_type)
    if not n:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    return {k: sum(m[k] for m in per_type.values()) / n for k in ("precision", "recall", "f1")}
