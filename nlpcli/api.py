"""What the verbs do, as library calls: train, evaluate, predict. The CLI only parses and prints."""

from __future__ import annotations

import json
import os
import random
import shlex
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from .callbacks import TrainCallbacks
from .checkpoint import BEST, LAST, NEW, OLD, current_version, load_checkpoint, recover_run, run_lock
from .config import TaskConfig, read_config_file
from .data.io import STALL, STALL_LINE, ReadStats, has_bad_bytes
from .data.tables import Table
from .device import DistContext, init_distributed, resolve_device, seed_everything, set_threads, shutdown_distributed
from .errors import ConfigError, DataError, NlpcliError, UnknownOption
from .registry import get_task
from .tasks.base import Pipeline
from .trainer import Trainer, TrainResult

PathLike = str | Path


@dataclass
class TrainReport:
    result: TrainResult
    train_examples: int
    dev_examples: int
    dev_source: str  # the --dev file, or how the dev split was carved
    skipped: int = 0
    skip_reasons: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    encoder_note: str = ""  # what `--encoder auto` took, and what a pull would give when it fell back
    precision: str = ""  # what training computed in: fp32, bf16 or fp16
    precision_note: str = ""  # what `precision = "auto"` chose and why (empty when asked for by name)


def make_config(task: str, config_file: str | None, overrides: dict[str, Any]) -> TaskConfig:
    """Task defaults, then a config file, then command-line overrides. An unknown field in the file is a
    ConfigError naming the file; an unknown override an `UnknownOption` (a usage error on the command line)."""
    cfg = get_task(task).Config()
    if config_file:
        try:
            cfg = cfg.updated(read_config_file(config_file))
        except UnknownOption as e:
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
    task: str,
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
    **fields: Any,
) -> TrainReport:
    """Train TASK on files into `output` (best/ and last/ checkpoints, train_log.jsonl), as `nlpcli train`.

    `fields` set config values over the task's defaults and the `config` file: flat names (`epochs=3`),
    dotted ones through a dict (`**{"encoder.name": "m3e-small"}`) or whole sections (`encoder={...}`).
    One run writes an output directory at a time (a lock, taken by the launcher's rank 0), and a run starts
    by repairing a checkpoint swap that a kill cut short. Resuming a run that already reached its end
    trains nothing (the report's stop reason says so). Every checkpoint carries a model card (README.md)
    naming `command` (default: this process's command line) and the data files with their sha256.
    """
    pipe_cls = get_task(task)
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
            pipe_cls, train_paths, out, dev_path, config_file, fields, resume, overwrite, skip_bad, fmt, callbacks, run
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
) -> TrainReport:
    task = pipe_cls.name
    overrides = dict(overrides or {})
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
        task_config = make_config(task, config_file, overrides)
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
        if resume:
            pipe = resumed
        else:
            if overwrite and dist.is_main:
                _clear_run(out)
            dist.barrier()
            pipe = pipe_cls.create(task_config, train_ex)
        if dist.is_main:
            from .card import file_facts

            files = [("train", p) for p in train_paths] + ([("dev", dev_path)] if dev_path else [])
            run = run | {"data": [file_facts(p, role) for role, p in files], "dev": dev_source}
        trainer = Trainer(pipe, train_ex, dev_ex, out, device, callbacks, resume_state, dist, run)
        finished = trainer.finished_reason() if resume else None
        result = trainer.finished_result(finished) if finished else trainer.fit()
    finally:
        shutdown_distributed()
    return TrainReport(
        result,
        len(train_ex),
        len(dev_ex),
        dev_source,
        stats.skipped,
        stats.reasons,
        pipe.config.to_dict(),
        pipe.assets.get("encoder_note", ""),
        trainer.precision.name,
        trainer.precision.note,
    )


def _wait_for_recovery(out: Path, timeout_s: float = 60.0) -> None:
    """Ranks other than 0 read last/ only after rank 0 has repaired a swap cut short (it renames)."""
    deadline = time.monotonic() + timeout_s
    pending = [out / (name + suffix) for name in (BEST, LAST) for suffix in (NEW, OLD)]
    while any(p.exists() for p in pending) and time.monotonic() < deadline:
        time.sleep(0.1)


def _clear_run(out: Path) -> None:
    import shutil

    for name in (BEST, LAST, BEST + NEW, LAST + NEW, BEST + OLD, LAST + OLD):
        shutil.rmtree(out / name, ignore_errors=True)
    (out / "train_log.jsonl").unlink(missing_ok=True)


def load(
    model: PathLike,
    *,
    task: str | None = None,
    device: str = "auto",
    quantize: bool = False,
    precision: str = "auto",
    **overrides: Any,
) -> Pipeline:
    """A trained model from a checkpoint (or training output) directory; its task is read from it (`task`
    refuses another task's checkpoint). `overrides` change inference settings (`threshold=0.5`, ...).

    The object is callable in its task's shape: `ner("text")`, `ie(["t1", "t2"])`,
    `qa(question=..., passages=[...])`, `lm.generate(["北京", "游客"])`, `chat.reply(history)`."""
    cls = get_task(task) if task else Pipeline
    return cls.load(model, overrides or None, device, quantize=quantize, precision=precision)


def evaluate(
    model: PathLike | Pipeline,
    data: PathLike,
    *,
    task: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    skip_bad: bool = False,
    fmt: str | None = None,
    precision: str = "auto",
    **overrides: Any,
) -> dict[str, Any]:
    """Metrics of a trained model (a directory, loaded with `precision`, or a loaded model) on a gold file, as
    `nlpcli evaluate`."""
    if isinstance(model, Pipeline):
        pipe = model.configured(**overrides) if overrides else model
    else:
        pipe = load(model, task=task, device=device, precision=precision, **overrides)
    examples, stats = pipe.read(str(data), fmt, skip_bad)
    import torch

    with torch.no_grad():
        metrics = pipe.evaluate(examples, batch_size)
    if stats.skipped:
        metrics["skipped_bad_records"] = stats.skipped
    return metrics


def evaluate_thresholds(
    model: PathLike | Pipeline, data: PathLike, thresholds: Sequence[float], **options: Any
) -> list[dict[str, Any]]:
    """`evaluate` at each threshold (the task's `threshold_fields`, set together): one metrics dict each, with
    its `threshold`. `options` as for `evaluate`."""
    pipe = (
        model
        if isinstance(model, Pipeline)
        else load(model, task=options.pop("task", None), device=options.pop("device", "auto"))
    )
    fields = pipe.threshold_fields
    if not fields:
        raise ConfigError(f"the {pipe.name} task has no threshold to sweep")
    return [
        {"threshold": t} | evaluate(pipe.configured(**dict.fromkeys(fields, t)), data, **options) for t in thresholds
    ]


@dataclass
class PredictStats:
    read: int = 0
    written: int = 0
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)


def count_skipped(stats: PredictStats, err: DataError, skip_bad: bool) -> None:
    """A bad record: with `skip_bad` counted (the first five reasons kept for the summary), else raised."""
    if not skip_bad:
        raise err
    stats.skipped += 1
    if len(stats.reasons) < 5:
        stats.reasons.append(str(err))


def read_records(
    lines: Iterable[str], path: str, pipe: Pipeline, skip_bad: bool, stats: PredictStats
) -> Iterator[dict]:
    """JSON objects from JSONL lines, validated by the task; bad lines raise or are counted.

    Where the input stalls (STALL_LINE), a STALL marker is passed on for the prediction loop."""
    lineno = 0
    for line in lines:
        if line is STALL_LINE:
            yield STALL
            continue
        lineno += 1
        if not line.strip():
            continue
        try:
            record = parse_record(line, path, lineno, pipe)
        except DataError as err:
            count_skipped(stats, err, skip_bad)
            continue
        stats.read += 1
        yield record


def parse_record(line: str, path: str, lineno: int, pipe: Pipeline) -> dict[str, Any]:
    """One JSONL line -> a record the task can predict; DataError naming path and line otherwise."""
    if has_bad_bytes(line):
        raise DataError(path, "not UTF-8 text", lineno)
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON ({e.msg})", lineno) from None
    if not isinstance(record, dict):
        raise DataError(path, "expected a JSON object", lineno)
    pipe.validate_record(record, path, lineno)
    return record


def predict(
    pipe: Pipeline,
    lines: Iterable[str],
    path: str,
    batch_size: int | None = None,
    skip_bad: bool = False,
    stats: PredictStats | None = None,
) -> Iterator[dict[str, Any]]:
    """Stream predictions: JSONL lines in, records with predictions out, in order."""
    stats = stats if stats is not None else PredictStats()
    records = read_records(lines, path, pipe, skip_bad, stats)
    for out in pipe.predict_records(records, batch_size):
        stats.written += 1
        yield out


@contextmanager
def predict_ranks(pipe: Pipeline) -> Iterator[RankedPredict]:
    """`predict` over the ranks of a torchrun launch (a plain run is one rank, and `predict` itself).

    Under torchrun the process group is joined (gloo on CPU, nccl on CUDA) and left on the way out."""
    dist = init_distributed(pipe.device)
    try:
        yield RankedPredict(pipe, dist)
    finally:
        shutdown_distributed()


@dataclass
class RankedPredict:
    """Prediction sharded over ranks: line i of the input goes to rank (i - 1) % N, and rank 0 gets every
    output back, in input order, to write one file. Every rank reads the same input file (a shared or copied
    path), so the line numbers of errors are the file's, and one bad line stops every rank with its message.

    The input is taken a round of lines at a time (`round_records` per rank), so memory stays bounded on
    every rank: after each round rank 0 gathers the round's outputs (over the process group, so no shared
    filesystem is needed for them) and yields them sorted by line."""

    pipe: Pipeline
    dist: DistContext
    round_records: int | None = None  # records per rank and round (default: as a prediction chunk)

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def predict(
        self,
        lines: Iterable[str],
        path: str,
        batch_size: int | None = None,
        skip_bad: bool = False,
        stats: PredictStats | None = None,
    ) -> Iterator[dict[str, Any]]:
        """As `predict`; with several ranks, outputs come out of rank 0 only (the others yield nothing), and
        `stats` hold the totals over all ranks on every rank."""
        stats = stats if stats is not None else PredictStats()
        if not self.dist.enabled:
            yield from predict(self.pipe, lines, path, batch_size, skip_bad, stats)
            return
        import torch.distributed as tdist

        world, rank = self.dist.world_size, self.dist.rank
        per_rank = self.round_records or max(256, 4 * (batch_size or self.pipe.config.inference.batch_size))  # type: ignore[attr-defined]
        numbered = ((n, line) for n, line in enumerate(lines, 1) if line is not STALL_LINE)
        while block := list(islice(numbered, per_rank * world)):  # the same blocks on every rank: same file
            mine = [(n, line) for n, line in block if (n - 1) % world == rank]
            outputs, status = self._round(mine, path, batch_size, skip_bad)
            statuses: list[Any] = [None] * world
            tdist.all_gather_object(statuses, status)
            errors = sorted(s["error"] for s in statuses if s["error"] is not None)
            if errors:
                raise NlpcliError(errors[0][1])  # the first bad line of the file, as a single process reports
            stats.read += sum(s["read"] for s in statuses)
            stats.skipped += sum(s["skipped"] for s in statuses)
            reasons = sorted(r for s in statuses for r in s["reasons"])
            stats.reasons.extend(text for _, text in reasons[: 5 - len(stats.reasons)])
            gathered: list[Any] = [None] * world if self.is_main else []
            tdist.gather_object(outputs, gathered if self.is_main else None, dst=0)
            if self.is_main:
                for _, record in sorted((pair for part in gathered for pair in part), key=lambda p: p[0]):
                    stats.written += 1
                    yield record
            else:
                stats.written += sum(s["read"] for s in statuses)

    def _round(
        self, mine: list[tuple[int, str]], path: str, batch_size: int | None, skip_bad: bool
    ) -> tuple[list[tuple[int, dict[str, Any]]], dict[str, Any]]:
        """This rank's share of a round: (line, output) pairs, and what the other ranks need to know (records
        read, skipped with their reasons, or the error that stops every rank: (line, message))."""
        records: list[tuple[int, dict[str, Any]]] = []
        status: dict[str, Any] = {"read": 0, "skipped": 0, "reasons": [], "error": None}
        try:
            for n, line in mine:
                if not line.strip():
                    continue
                try:
                    records.append((n, parse_record(line, path, n, self.pipe)))
                except DataError as err:
                    if not skip_bad:
                        raise
                    status["skipped"] += 1
                    status["reasons"].append((n, str(err)))
            outputs = list(self.pipe.predict_records([r for _, r in records], batch_size))
        except NlpcliError as e:  # caught, so that every rank stops together instead of waiting on this one
            status["error"] = (getattr(e, "line", None) or 0, str(e))
            return [], status
        except Exception as e:
            text = f"{type(e).__name__}: {e}".strip().splitlines()[0]
            status["error"] = (0, f"internal error on rank {self.dist.rank}: {text}")
            return [], status
        status["read"] = len(records)
        status["reasons"] = status["reasons"][:5]
        return [(n, out) for (n, _), out in zip(records, outputs)], status


def table_records(
    pipe: Pipeline,
    table: Table,
    columns: dict[str, list[str]] | None = None,
    skip_bad: bool = False,
    stats: PredictStats | None = None,
    options: dict[str, str] | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row index, input record) for each good row of a table: the task's `table_fields` read from their
    columns (`columns`: field -> column names; by default the field's own name, and for `passages` also
    `passage`). A missing column is a DataError (naming `options[field]`, the option that sets it); a bad cell
    one naming file, row and column, or with `skip_bad` a skipped row."""
    from .data.tables import list_cell, missing_column, text_cell

    stats = stats if stats is not None else PredictStats()
    chosen: dict[str, list[str]] = {}
    for name in pipe.table_fields:
        wanted = (columns or {}).get(name)
        if not wanted:
            singular = name[:-1] if name.endswith("s") else name
            wanted = [name if name in table.columns or singular not in table.columns else singular]
        for col in wanted:
            if col not in table.columns:
                raise missing_column(table, col, (options or {}).get(name, f"--{name}-column"))
        chosen[name] = wanted
    for index, row in enumerate(table.rows):
        try:
            record: dict[str, Any] = {}
            for name, kind in pipe.table_fields.items():
                if kind == "text":
                    record[name] = text_cell(table, index, chosen[name][0], row[chosen[name][0]])
                else:
                    record[name] = [
                        item for col in chosen[name] for item in list_cell(table, index, col, row[col], kind == "words")
                    ]
            try:
                pipe.validate_record(record, table.path, None)  # type: ignore[arg-type]  # no line: rows say
            except DataError as e:
                raise DataError(table.path, f"row {table.row_number(index)}: {e.reason}") from None
        except DataError as err:
            count_skipped(stats, err, skip_bad)
            continue
        stats.read += 1
        yield index, record


def predict_table(
    pipe: Pipeline,
    table: Table,
    columns: dict[str, list[str]] | None = None,
    batch_size: int | None = None,
    skip_bad: bool = False,
    stats: PredictStats | None = None,
    options: dict[str, str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Each good row of a table with the prediction columns added (its own cells as read, every column kept;
    a prediction column of the same name as an input column replaces it), in order. See `table_records`."""
    stats = stats if stats is not None else PredictStats()
    fed: deque[int] = deque()

    def records() -> Iterator[dict[str, Any]]:
        for index, record in table_records(pipe, table, columns, skip_bad, stats, options):
            fed.append(index)
            yield record

    for out in pipe.predict_records(records(), batch_size):
        row = table.rows[fed.popleft()]
        stats.written += 1
        yield row | {k: v for k, v in out.items() if k not in pipe.table_fields}


def iter_generate(pipe: Pipeline, keyword_sets: list[list[str]]) -> Iterator[Any]:
    """CGMH sentences for each keyword set (an `lm` pipeline; its inference section is the sampler's)."""
    from .tasks.gen.lm.cgmh import iter_generate as run

    return run(pipe, keyword_sets, pipe.config.inference)  # type: ignore[arg-type]


def generate(pipe: Pipeline, keyword_sets: list[list[str]]) -> list[Any]:
    return list(iter_generate(pipe, keyword_sets))


def read_keyword_file(pipe: Pipeline, path: str) -> list[tuple[int, list[str]]]:
    """(line, words) of each non-blank line of a keyword file; every line is checked against the model."""
    from .tasks.gen.lm.cgmh import read_keyword_file as read

    return read(pipe, path)  # type: ignore[arg-type]
