"""`nlpcli train TASK`: train a task with a progress bar; dev evaluation each epoch; best checkpoint kept."""

from __future__ import annotations

import inspect
import json
import shlex
import sys
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..callbacks import LogLines, TrainCallbacks, TrainResult, start_notes
from .common import (
    DEVICE_HELP,
    EXTRA_HELP,
    SEED_HELP,
    cli_errors,
    err_console,
    out_console,
    parse_extra,
    stderr_is_tty,
    task_argument,
)


class RichCallbacks(TrainCallbacks):
    """Shows training progress on stderr: loss, speed, ETA; a line per dev evaluation."""

    def __init__(self, main_metric: str):
        self.metric = main_metric
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err_console,
            transient=False,
        )
        self.bar: TaskID | None = None
        self.unit = "tokens"

    def on_start(self, total_steps: int, start_step: int, info: dict[str, Any]) -> None:
        self.progress.start()
        for note in start_notes(info):
            self.progress.console.print(note, highlight=False)
        # Progress is the larger of steps done and time budget used, so the ETA holds for both.
        self.total_steps = total_steps
        self.unit = str(info.get("speed_unit", "tokens"))
        done = round(1000 * start_step / max(total_steps, 1))
        self.bar = self.progress.add_task("train", total=1000, completed=done, stats="")

    def on_step(self, step: int, stats: dict[str, float]) -> None:
        text = (
            f"step {step}/{self.total_steps} loss {stats['loss']:.4f} "
            f"{stats['tokens_per_s']:,.0f} {self.unit}/s ep {stats['epoch'] + 1}"
        )
        if self.bar is not None:
            self.progress.update(self.bar, completed=round(1000 * stats["progress"]), stats=text)

    def on_eval(self, step: int, metrics: dict[str, Any], is_best: bool) -> None:
        value = metrics.get(self.metric)
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        self.progress.console.print(
            f"step {step}: dev {self.metric} {shown}" + (" [green](best, saved)[/]" if is_best else "")
        )

    def on_end(self, result: TrainResult) -> None:
        self.progress.stop()

    def on_status(self, message: str) -> None:
        err_console.print(message, highlight=False)


@cli_errors
def train(
    ctx: typer.Context,
    task: str = task_argument(),
    train_files: list[str] = typer.Option(
        ..., "--train", help="Training file(s); several may follow --train.", metavar="PATH..."
    ),
    output: str = typer.Option(
        ...,
        "--output",
        "-o",
        help="Output directory: best/ (for --model), last/ (for --resume), train_log.jsonl.",
        metavar="DIR",
    ),
    dev: str | None = typer.Option(
        None, "--dev", help="Dev file; without it a seeded split is carved from train.", metavar="PATH"
    ),
    config: str | None = typer.Option(
        None,
        "--config",
        help="TOML or JSON file of config fields (`nlpcli info TASK --toml` writes one).",
        metavar="FILE",
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="Passes over the training data.", metavar="N"),
    max_steps: int | None = typer.Option(
        None, "--max-steps", help="Stop after this many optimiser steps.", metavar="N"
    ),
    time_budget: float | None = typer.Option(
        None, "--time-budget", help="Stop after this many minutes (the LR decays to fit).", metavar="MINUTES"
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Training examples per optimiser step (default: the task's).", metavar="N"
    ),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate.", metavar="X"),
    device: str | None = typer.Option(None, "--device", help=DEVICE_HELP + " (default: auto)", metavar="DEVICE"),
    seed: int | None = typer.Option(None, "--seed", help=SEED_HELP + " (default: 42)", metavar="N"),
    tensorboard: str | None = typer.Option(
        None, "--tensorboard", help="Also log to TensorBoard in this directory (needs tensorboard).", metavar="DIR"
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUTPUT/last."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a model already in OUTPUT."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip and count malformed records instead of stopping."),
    fmt: str | None = typer.Option(
        None, "--format", help="Input format, when sniffing the file is not enough.", metavar="FORMAT"
    ),
    teacher: str | None = typer.Option(
        None,
        "--teacher",
        help="A trained model of this task (directory or name) whose predictions on --unlabelled text the model "
        "also learns from (distillation: ner, ie).",
        metavar="DIR",
    ),
    unlabelled: list[str] = typer.Option(
        [],
        "--unlabelled",
        help="Plain text for --teacher to label, one text a line (repeat for more files).",
        metavar="FILE",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the final summary as one JSON object on stdout."),
) -> None:
    """Train TASK on files and keep the best checkpoint by dev score.

    Ctrl-C saves the training state; --resume continues from it. Progress: a bar on a terminal, else a
    plain line every log_every steps. Every checkpoint carries a model card (README.md).
    """
    from .. import api
    from ..registry import get_task

    extra, bare = parse_extra(ctx.args)
    given = {
        "epochs": epochs,
        "max_steps": max_steps,
        "time_budget": time_budget,
        "batch_size": batch_size,
        "lr": lr,
        "device": device,
        "seed": seed,
        "tensorboard": tensorboard,
    }
    overrides = {k: v for k, v in given.items() if v is not None} | extra
    cls = get_task(task)  # looked up once: the library takes the class
    metric, unit = cls.main_metric, cls.speed_unit
    callbacks = RichCallbacks(metric) if stderr_is_tty() else LogLines(metric)
    report = api.train(
        cls,
        [*train_files, *bare],
        output,
        dev,
        config,
        resume=resume,
        overwrite=overwrite,
        skip_bad=skip_bad,
        fmt=fmt,
        callbacks=callbacks,
        command=shlex.join(["nlpcli", *sys.argv[1:]]),
        teacher=teacher,
        unlabelled=unlabelled,
        **overrides,
    )
    summary = {
        "task": task,
        "output": output,
        "steps": report["steps"],
        "epochs_done": report["epochs_done"],
        "stopped_by": report["stopped_by"],
        "elapsed_s": round(report["elapsed_s"], 1),
        "tokens_per_s": round(report["tokens_per_s"], 1),
        "best_" + metric: report["best_metric"],
        "train_examples": report["train_examples"],
        "dev_examples": report["dev_examples"],
        "dev": report["dev"],
        "skipped_bad_records": report["skipped_bad_records"],
        "encoder": report["encoder"],
        "precision": report["precision"],
    }
    if as_json:
        print(json.dumps(summary, ensure_ascii=False))
        return
    skipped = report["skipped_bad_records"]
    if skipped:
        err_console.print(f"skipped {skipped} bad record(s); first: {report['skip_reasons'][:1]}", highlight=False)
    out_console.print(f"dev: {report['dev']}", highlight=False)
    best = f"{report['best_metric']:.4f}" if report["best_metric"] is not None else "n/a"
    out_console.print(
        f"done: {report['steps']} steps ({report['stopped_by']}), {report['elapsed_s']:.0f}s, "
        f"{report['tokens_per_s']:,.0f} {unit}/s, "
        f"best dev {metric} {best} -> {output}/best",
        highlight=False,
    )


train.__doc__ = inspect.cleandoc(train.__doc__ or "") + "\n\n" + EXTRA_HELP
