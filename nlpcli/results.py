"""The shapes of what the library returns: plain dicts and lists, typed for readers and IDEs.

Each is exactly the JSON that the CLI writes (`predict` lines, `train --json`, `evaluate --json`), so a result
goes to `json.dumps` as it is. Character offsets are exclusive at the end, as in Python slices, Hugging Face
and spaCy: `text[e["start"] : e["end"]] == e["text"]` (docs/offsets.md).
"""

from __future__ import annotations

from typing import Any, TypedDict


class Entity(TypedDict):
    """One entity of `ner(text)` (the items of a `predict` line's `entities`)."""

    type: str
    start: int  # first character
    end: int  # one past the last character: text[start:end] == text
    text: str
    score: float  # sigmoid of the span's logit, in (0, 1)


class Triple(TypedDict):
    """One (subject, predicate, object) triple of `ie(text)` (the items of `spo_list`)."""

    subject: str
    predicate: str
    object: str
    subject_type: str
    object_type: str
    subject_start: int
    subject_end: int  # exclusive: text[subject_start:subject_end] == subject
    object_start: int
    object_end: int  # exclusive: text[object_start:object_end] == object
    score: float  # product of the four pointer probabilities, in (0, 1)


class Answer(TypedDict):
    """`qa(question=..., passages=[...])`: the answer ("" and None offsets when no passage holds one)."""

    answer: str
    score: float
    passage_index: int | None  # which passage holds it
    start: int | None
    end: int | None  # exclusive: passages[passage_index][start:end] == answer


class Sentence(TypedDict):
    """One sentence of `lm.generate(words)` (the items of `sentences`), best first."""

    text: str
    score: float


class ChatReply(TypedDict):
    """What `predict chat` adds to a {"history": [...]} line (`chat.reply(history)` returns the reply alone)."""

    reply: str
    turns_used: int  # the latest turns of the history that fit the model's context


class TrainReport(TypedDict):
    """What `nlpcli.train` returns; `train --json` prints a subset of it (with `best_<metric>`)."""

    task: str
    output: str  # the run directory: best/, last/, train_log.jsonl
    steps: int
    epochs_done: int
    stopped_by: str  # why training stopped
    elapsed_s: float
    tokens_per_s: float
    steps_per_s: float
    metric: str  # the task's main dev metric
    best_metric: float | None  # its best dev value (None: no dev evaluation ran)
    best_metrics: dict[str, Any]  # every dev metric at the best evaluation
    train_examples: int
    dev_examples: int
    dev: str  # the dev file, or how the dev split was carved
    skipped_bad_records: int
    skip_reasons: list[str]
    encoder: str | None
    encoder_note: str  # what `--encoder auto` took, and what a pull would give when it fell back
    config: dict[str, Any]  # the run's whole config, by section
    precision: str  # what training computed in: fp32, bf16 or fp16
    precision_note: str  # what `precision = "auto"` chose and why (empty when asked for by name)


# `evaluate` returns the task's metrics: the main metric (`f1` for ner/ie, `score` for qa, ...) and task-specific
# figures (per-type tables, counts), all plain JSON values; its keys differ per task, so it is a plain mapping.
EvaluateReport = dict[str, Any]
