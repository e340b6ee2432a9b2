"""What the verbs do, as library calls: train, evaluate, predict. The CLI only parses and prints."""

from __future__ import annotations

import os
import random
import shlex
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from .callbacks import TrainCallbacks
from .card import read_card
from .checkpoint import (
    BEST,
    LAST,
    NEW,
    OLD,
    current_version,
    load_checkpoint,
    recover_run,
    resolve_checkpoint_dir,
    run_lock,
)
from .config import TaskConfig, read_config_file
from .data.io import ReadStats
from .device import init_distributed, resolve_device, seed_everything, set_threads, shutdown_distributed
from .errors import ConfigError, NlpcliError
from .predictor import Predictor
from .records import predict as records
from .records.stats import PredictStats
from .registry import get_task
from .results import EvaluateReport, TrainReport
from .tasks.base import Pipeline

PathLike = str | Path


def make_config(task: str | type[Pipeline], config_file: str | None, overrides: dict[str, Any]) -> TaskConfig:
    """Task defaults, then a config file, then command-line overrides. An unknown field in the file is a
    ConfigError naming the file; an unknown override an `UnknownOption` (a usage error on the command line)."""
    cfg = _task_class(task).Config()
    if config_file:
        try:
            cfg = cfg.updated(read_config_file(config_file))
        except ConfigError as e:  # an unknown field or a value out of range: the file's, not an option's
            raise ConfigError(f"{config_file}: {e}") from None
    return cfg.updated(overrides)


def read_many(pipe_cls: type[Pipeline], paths: list[str], fmt: str | None, skip_bad: bool) -> tuple[list, ReadStats]:
    examples: list = []
    total = ReadStats()
    for p in paths:
        exs, stats = pipe_cls.read(p, fmt, skip_bad)
        examples.extend(exs)
        total.skipped += stats.skipped
        total.reasons.extend(stats.reasons[: 5 - len(total.reasons)])
    return examples, total


def carve_dev(examples: list, ratio: float, cap: int, seed: int) -> tuple[list, list]:
    """A seeded random dev split (the same on --resume)."""
    n_dev = min(cap, int(len(examples) * ratio))
    if n_dev < 1 or len(examples) - n_dev < 1:
        return examples, []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    dev_idx = set(order[:n_dev])
    return [e for i, e in enumerate(examples) if i not in dev_idx], [examples[i] for i in sorted(dev_idx)]


def train(
    task: str | type[Pipeline],
    train: PathLike | Sequence[PathLike],
    output: PathLike,
    dev: PathLike | None = None,
    config: PathLike | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    skip_bad: bool = False,
    fmt: str | None = None,
    callbacks: TrainCallbacks | None = None,
    command: str | None = None,
    teacher: PathLike | None = None,
    unlabelled: Sequence[PathLike] = (),
    **fields: Any,
) -> TrainReport:
    """Train TASK (a name, or the task's class) on files into `output` (best/ and last/ checkpoints,
    train_log.jsonl), as `nlpcli train`.

    `fields` set config values over the task's defaults and the `config` file: flat names (`epochs=3`),
    dotted ones through a dict (`**{"encoder.name": "m3e-small"}`) or whole sections (`encoder={...}`).
    One run writes an output directory at a time (a lock, taken by the launcher's rank 0), and a run starts
    by repairing a checkpoint swap that a kill cut short. Resuming a run that already reached its end
    trains nothing (the report's stop reason says so). Every checkpoint carries a model card (README.md)
    naming `command` (default: this process's command line) and the data files with their sha256.
    `teacher` (a trained model of the same task: a directory or a model name) labels the `unlabelled` files
    (plain text, one text a line), and the model trains on those labels beside the gold (`nlpcli.distill`);
    a `resume` keeps the labels the run started with.
    The report is a plain dict (`nlpcli.results.TrainReport`), ready for `json.dumps`.
    """
    pipe_cls = _task_class(task)
    out = Path(output)
    train_paths = [str(train)] if isinstance(train, (str, Path)) else [str(p) for p in train]
    dev_path = str(dev) if dev is not None else None
    config_file = str(config) if config is not None else None
    if out.exists() and not out.is_dir():
        raise NlpcliError(f"{out}: exists and is not a directory (--output names the run's directory)")
    main = int(os.environ.get("RANK", "0")) == 0
    with run_lock(out) if main else nullcontext():
        if main:
            recover_run(out)
        else:
            _wait_for_recovery(out)
        run = {"command": command or shlex.join(sys.argv), "cwd": os.getcwd()}
        return _train(
            pipe_cls,
            train_paths,
            out,
            dev_path,
            config_file,
            fields,
            resume,
            overwrite,
            skip_bad,
            fmt,
            callbacks,
            run,
            str(teacher) if teacher is not None else None,
            [str(p) for p in unlabelled],
        )


def _train(
    pipe_cls: type[Pipeline],
    train_paths: list[str],
    out: Path,
    dev_path: str | None,
    config_file: str | None,
    overrides: dict[str, Any] | None,
    resume: bool,
    overwrite: bool,
    skip_bad: bool,
    fmt: str | None,
    callbacks: TrainCallbacks | None,
    run: dict[str, Any],
    teacher: str | None = None,
    unlabelled: list[str] | None = None,
) -> TrainReport:
    overrides = dict(overrides or {})
    unlabelled = unlabelled or []
    if unlabelled and teacher is None:
        raise ConfigError("--unlabelled needs --teacher: the trained model that labels that text")
    if teacher is not None:
        from .distill import check_distillable

        check_distillable(pipe_cls)
    resume_state = None
    if resume:
        resumed = pipe_cls.load(out / LAST, overrides, resume=True)
        task_config = resumed.config
        resume_state = load_checkpoint(out / LAST).train_state()
        if resume_state is None:
            raise NlpcliError(f"{out / LAST}: no train_state.pt to resume from")
    else:
        if (current_version(out / BEST) or current_version(out / LAST)) and not overwrite:
            raise NlpcliError(f"{out} already holds a trained model; use --resume to continue or --overwrite")
        task_config = make_config(pipe_cls, config_file, overrides)
    trainer_cfg = task_config.trainer
    if trainer_cfg.tensorboard:
        from .tblog import require

        require()
    device = resolve_device(trainer_cfg.device)
    set_threads(trainer_cfg.threads)
    seed_everything(trainer_cfg.seed)
    dist = init_distributed(device)
    try:
        train_ex, stats = read_many(pipe_cls, train_paths, fmt, skip_bad)
        train_ex = pipe_cls.check_examples(task_config, train_ex, stats if skip_bad else None)
        if dev_path:
            dev_ex, dev_stats = pipe_cls.read(dev_path, fmt, skip_bad)
            dev_ex = pipe_cls.check_examples(task_config, dev_ex, dev_stats if skip_bad else None)
            stats.skipped += dev_stats.skipped
            dev_source = dev_path
        else:
            train_ex, dev_ex = carve_dev(train_ex, trainer_cfg.dev_ratio, trainer_cfg.dev_max, trainer_cfg.seed)
            dev_source = (
                f"{len(dev_ex)} examples carved from train (seed {trainer_cfg.seed}, ratio {trainer_cfg.dev_ratio})"
            )
        # After the dev split: the dev score stays a score against gold.
        taught = _teacher_examples(pipe_cls, task_config, out, teacher, unlabelled, resume, device, callbacks)
        if taught is not None:
            train_ex = train_ex + taught[0]
            run = run | {"teacher": teacher or "(as the run started)", "taught_examples": len(taught[0])}
        if resume:
            pipe = resumed
        else:
            if overwrite and dist.is_main:
                _clear_run(out, keep_teacher_labels=teacher is not None)
            dist.barrier()
            pipe = pipe_cls.create(task_config, train_ex)
        if dist.is_main:
            from .card import file_facts

            files = [("train", p) for p in train_paths] + [("unlabelled", p) for p in unlabelled]
            files += [("teacher labels", str(taught[1]))] if taught is not None else []
            files += [("dev", dev_path)] if dev_path else []
            run = run | {"data": [file_facts(p, role) for role, p in files], "dev": dev_source}
        from .trainer import Trainer  # here: prediction never needs it (start-up, nlpcli/cli.py)

        trainer = Trainer(pipe, train_ex, dev_ex, out, device, callbacks, resume_state, dist, run)
        finished = trainer.finished_reason() if resume else None
        result = trainer.finished_result(finished) if finished else trainer.fit()
    finally:
        shutdown_distributed()
    config = pipe.config.to_dict()
    return TrainReport(
        task=pipe_cls.name,
        output=str(out),
        steps=result.step,
        epochs_done=result.epoch,
        stopped_by=result.stop_reason,
        elapsed_s=result.elapsed_s,
        tokens_per_s=result.tokens_per_s,
        steps_per_s=result.steps_per_s,
        metric=pipe_cls.main_metric,
        best_metric=result.best_metric,
        best_metrics=result.best_metrics,
        train_examples=len(train_ex),
        dev_examples=len(dev_ex),
        dev=dev_source,
        skipped_bad_records=stats.skipped,
        skip_reasons=stats.reasons,
        encoder=(config.get("encoder") or {}).get("name"),
        encoder_note=pipe.assets.get("encoder_note", ""),
        config=config,
        precision=trainer.precision.name,
        precision_note=trainer.precision.note,
    )


def _teacher_examples(
    pipe_cls: type[Pipeline],
    config: TaskConfig,
    out: Path,
    teacher: str | None,
    unlabelled: list[str],
    resume: bool,
    device: Any,
    callbacks: TrainCallbacks | None,
) -> tuple[list, Path] | None:
    """The examples a teacher's labels make (labelled now, or those a resumed run started with) and their file."""
    from .distill import LABELS, TEACHER_DIR, teacher_labels

    labels = out / TEACHER_DIR / LABELS
    if teacher is None:
        if not (resume and labels.is_file()):
            return None
    else:
        say = callbacks.on_status if callbacks is not None else None
        labels, _ = teacher_labels(pipe_cls, teacher, unlabelled, out, str(device), say)
    examples, _ = pipe_cls.read(str(labels))
    return pipe_cls.check_examples(config, examples, None), labels


def _wait_for_recovery(out: Path, timeout_s: float = 60.0) -> None:
    """Ranks other than 0 read last/ only after rank 0 has repaired a swap cut short (it renames)."""
    deadline = time.monotonic() + timeout_s
    pending = [out / (name + suffix) for name in (BEST, LAST) for suffix in (NEW, OLD)]
    while any(p.exists() for p in pending) and time.monotonic() < deadline:
        time.sleep(0.1)


def _clear_run(out: Path, keep_teacher_labels: bool = False) -> None:
    """Remove a run's checkpoints and log; a teacher's labels too unless this run has a teacher (which reuses
    them only if they are its own), so that a later --resume never trains on another run's labels."""
    import shutil

    from .distill import TEACHER_DIR

    for name in (BEST, LAST, BEST + NEW, LAST + NEW, BEST + OLD, LAST + OLD):
        shutil.rmtree(out / name, ignore_errors=True)
    if not keep_teacher_labels:
        shutil.rmtree(out / TEACHER_DIR, ignore_errors=True)
    (out / "train_log.jsonl").unlink(missing_ok=True)


def load(
    model: PathLike,
    *,
    task: str | type[Pipeline] | None = None,
    device: str = "auto",
    quantize: bool = False,
    precision: str = "auto",
    **overrides: Any,
) -> Predictor:
    """A trained model from a checkpoint (or training output) directory, as a `Predictor`; its task is read
    from it (`task`, a name or a task class, refuses another task's checkpoint). `overrides` change inference
    settings (`threshold=0.5`, ...). The one way to load a checkpoint of any task.

    The `Predictor` is callable in its task's shape: `ner("text")`, `ie(["t1", "t2"])`,
    `qa(question=..., passages=[...])`, `lm.generate(["北京", "游客"])`, `chat.reply(history)`."""
    cls = _task_class(task) if task else None
    ckpt = load_checkpoint(model, expect_task=cls.name if cls else None)
    cls = cls or get_task(ckpt.task)
    pipe = cls.from_checkpoint(ckpt, overrides or None, device, quantize=quantize, precision=precision)
    return Predictor(pipe, model)


def model_card(model: PathLike) -> tuple[str, bool]:
    """A checkpoint's model card (README.md, else MODEL_CARD.md), and whether it had to be made now from the
    checkpoint's files (checkpoints from before cards), as `nlpcli info --model` prints it."""
    directory = resolve_checkpoint_dir(model)
    text = read_card(directory, Path(model))
    if text is not None:
        return text, False
    ckpt = load_checkpoint(directory)
    cls = get_task(ckpt.task)
    return cls.model_card(cls.saved_config(ckpt), ckpt.metrics, {"checkpoint": None}), True


def _task_class(task: str | type[Pipeline]) -> type[Pipeline]:
    """A task given by name or as its class: the verbs look a task up once and pass the class on."""
    return get_task(task) if isinstance(task, str) else task


def pipeline_of(model: Predictor | Pipeline) -> Pipeline:
    """The task pipeline behind what `load` returned (or the pipeline itself): what the verbs work on."""
    return model.pipeline if isinstance(model, Predictor) else model


def evaluate(
    model: PathLike | Predictor | Pipeline,
    data: PathLike,
    *,
    task: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    skip_bad: bool = False,
    fmt: str | None = None,
    errors: PathLike | None = None,
    precision: str = "auto",
    **overrides: Any,
) -> EvaluateReport:
    """Metrics of a trained model (a directory, loaded with `precision`, or a loaded model) on a gold file, as
    `nlpcli evaluate`: a plain dict, ready for `json.dumps`; `errors` names a JSON Lines file to write every
    false positive and false negative to (ner, ie, qa)."""
    if isinstance(model, (Predictor, Pipeline)):
        pipe = pipeline_of(model)
        pipe = pipe.configured(**overrides) if overrides else pipe
    else:
        pipe = load(model, task=task, device=device, precision=precision, **overrides).pipeline
    examples, stats = pipe.read(str(data), fmt, skip_bad)
    import torch

    with torch.no_grad():
        if errors is None:
            metrics = pipe.evaluate(examples, batch_size)
        else:
            from .records.sink import write_records

            metrics, wrong = pipe.evaluate_errors(examples, batch_size)
            write_records(str(errors), wrong)
    if stats.skipped:
        metrics["skipped_bad_records"] = stats.skipped
    return metrics


def evaluate_thresholds(
    model: PathLike | Predictor | Pipeline, data: PathLike, thresholds: Sequence[float], **options: Any
) -> list[dict[str, Any]]:
    """`evaluate` at each threshold (the task's `threshold_fields`, set together): one metrics dict each, with
    its `threshold`. `options` as for `evaluate`."""
    pipe = pipeline_of(
        model
        if isinstance(model, (Predictor, Pipeline))
        else load(model, task=options.pop("task", None), device=options.pop("device", "auto"))
    )
    fields = pipe.threshold_fields
    if not fields:
        raise ConfigError(f"the {pipe.name} task has no threshold to sweep")
    return [
        {"threshold": t} | evaluate(pipe.configured(**dict.fromkeys(fields, t)), data, **options) for t in thresholds
    ]


def predict(
    pipe: Predictor | Pipeline,
    lines: Iterable[str],
    path: str,
    batch_size: int | None = None,
    skip_bad: bool = False,
    stats: PredictStats | None = None,
) -> Iterator[dict[str, Any]]:
    """Stream predictions: JSONL lines in, records with predictions out, in order (`records.predict`)."""
    return records.predict(pipeline_of(pipe), lines, path, batch_size, skip_bad, stats)
