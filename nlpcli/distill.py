"""Distillation: a trained teacher labels unlabelled text, and the student trains on it beside the gold.

`nlpcli train ner --teacher DIR --unlabelled FILE` is how a small, fast model gets a large or slow model's
accuracy: the teacher's predictions on plain text (one text a line) become training records, and the student
(whatever the training config describes, usually a narrow DGCNN) learns from the gold data and those records
together. The student sees text of the domain it will tag without anyone labelling it.

The teacher's predictions at its own threshold are the labels (hard labels, the "pseudo-labels" of
self-training). GlobalPointer scores every span of a text; soft targets would mean keeping n² scores per text
or running the teacher beside the student at every step, which makes training, the scarce part, slower.
The labels are written once, as the task's own prediction records (which its reader takes as gold:
`predictions_are_gold`), to OUTPUT/teacher/labels.jsonl, and reused by `--resume` or a rerun with the same
teacher and files. Only tasks that read one text per record can be distilled this way (ner, ie): a qa record
needs a question, which plain text does not have.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import load_checkpoint, resolve_checkpoint_dir
from .data.io import atomic_output, read_text
from .errors import ConfigError, DataError
from .records.jsonl import dumps

if TYPE_CHECKING:
    from .tasks.base import Pipeline

TEACHER_DIR = "teacher"
LABELS = "labels.jsonl"
KEY = "source.json"
PROGRESS_EVERY = 10_000  # texts labelled between progress lines


def check_distillable(pipe_cls: type[Pipeline]) -> None:
    """A ConfigError unless the task's predictions on a plain text are training records."""
    fields = pipe_cls.input_fields
    if not (pipe_cls.predictions_are_gold and len(fields) == 1 and fields[0].kind == "text"):
        raise ConfigError(
            f"--teacher: the {pipe_cls.name} task cannot learn from a teacher's labels on plain text "
            "(distillation needs a task that reads one text per record: ner, ie)"
        )


def read_unlabelled(paths: Sequence[str]) -> list[str]:
    """Plain text, one text a line; blank lines skipped. A file with no text is an error naming it."""
    texts: list[str] = []
    for path in paths:
        found = [line.strip() for line in read_text(path).splitlines()]
        found = [t for t in found if t]
        if not found:
            raise DataError(path, "no text in this --unlabelled file (plain text, one text a line)")
        texts.extend(found)
    return texts


def _key(teacher_dir: Path, paths: Sequence[str], config: dict[str, Any]) -> dict[str, Any]:
    """What the labels depend on: the teacher's weights, its inference settings, the unlabelled files."""
    from .models.archive import sha256_file

    weights = sorted(p for p in teacher_dir.iterdir() if p.suffix in (".safetensors", ".onnx", ".bin", ".pt"))
    return {
        "teacher": {p.name: sha256_file(p) for p in weights},
        "inference": config.get("inference", {}),
        "unlabelled": [sha256_file(Path(p)) for p in paths],
    }


def teacher_labels(
    pipe_cls: type[Pipeline],
    teacher: str,
    unlabelled: Sequence[str],
    out: Path,
    device: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> tuple[Path, int]:
    """OUTPUT/teacher/labels.jsonl: the teacher's predictions on the unlabelled texts (made now, or reused when
    the teacher and files are those it was made from); returns its path and how many texts it holds."""
    check_distillable(pipe_cls)
    if not unlabelled:
        raise ConfigError("--teacher needs --unlabelled FILE: plain text for the teacher to label")
    say = progress or (lambda _: None)
    teacher_dir = resolve_checkpoint_dir(teacher)
    ckpt = load_checkpoint(teacher_dir, expect_task=pipe_cls.name)
    key = _key(teacher_dir, unlabelled, ckpt.config)
    folder = out / TEACHER_DIR
    labels, key_file = folder / LABELS, folder / KEY
    if labels.is_file() and key_file.is_file() and json.loads(key_file.read_text(encoding="utf-8")) == key:
        count = sum(1 for _ in labels.open(encoding="utf-8"))
        say(f"teacher: reusing its labels on {count:,} texts ({labels})")
        return labels, count
    texts = read_unlabelled(unlabelled)
    pipe = pipe_cls.from_checkpoint(ckpt, None, device)
    say(f"teacher: labelling {len(texts):,} texts with {teacher}")
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_output(labels) as f:
        # One stream through the prediction loop, which chunks and sorts by length itself.
        for done, record in enumerate(pipe.predict_records({"text": t} for t in texts), 1):
            f.write(dumps(record) + "\n")
            if done % PROGRESS_EVERY == 0 or done == len(texts):
                say(f"teacher: labelled {done:,}/{len(texts):,} texts")
    with atomic_output(key_file) as f:
        f.write(json.dumps(key, indent=1) + "\n")
    return labels, len(texts)
