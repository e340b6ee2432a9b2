"""A dialogue as the model reads it: `[CLS] u1 [SEP] u2 [SEP] ...` with speaker ids and the scored targets."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ChatExample:
    """An encoded window of a dialogue: token ids of whole turns (the first is context only)."""

    turns: list[list[int]]
    chars: int  # characters scored (scored turns' characters + one end mark per turn)
    loss: str = "responses"
    line: int | None = None


@dataclass
class Encoded:
    ids: list[int]
    speakers: list[int]
    scored: list[bool]  # scored[t]: token t+1 is a training target


def build_input(turns: list[list[int]], cls_id: int, sep_id: int, loss: str = "responses") -> Encoded:
    """`[CLS] u1 [SEP] u2 [SEP] ...`, speaker = turn index mod 2 ([CLS] is speaker 0), and which
    next-token targets count: response turns and their [SEP] ("responses"), or all after [CLS] ("all")."""
    ids, speakers, target = [cls_id], [0], [False]
    for i, t in enumerate(turns):
        ids += [*t, sep_id]
        speakers += [i % 2] * (len(t) + 1)
        target += [loss == "all" or i > 0] * (len(t) + 1)
    return Encoded(ids, speakers, target[1:])


def fit_latest_turns(turns: list[list[int]], budget: int) -> tuple[list[list[int]], int]:
    """The latest turns whose `[CLS] ... [SEP]` encoding fits `budget` tokens, and how many turns were kept.

    When even the last turn alone is too long, its last tokens are kept (the part nearest the reply).
    """
    used, kept = 1, []
    for t in reversed(turns):
        if used + len(t) + 1 > budget:
            break
        kept.append(t)
        used += len(t) + 1
    if not kept:
        return [turns[-1][-(budget - 2) :]], 1
    return kept[::-1], len(kept)
