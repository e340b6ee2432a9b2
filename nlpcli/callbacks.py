"""Training progress hooks (no torch here: the CLI builds its progress display from this before torch loads)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from .card import clock


@dataclass
class TrainResult:
    """How a training run ended (what `Trainer.fit` returns and `on_end` is told)."""

    step: int
    epoch: int
    stop_reason: str
    elapsed_s: float
    best_metric: float | None
    best_metrics: dict[str, Any] = field(default_factory=dict)
    tokens_per_s: float = 0.0
    steps_per_s: float = 0.0
    output: str = ""


def start_notes(info: dict[str, Any]) -> list[str]:
    """The lines `on_start` shows once: what `--encoder auto` and precision auto chose, and why."""
    return [note for note in (info.get("encoder_note"), info.get("precision_note")) if note]


class TrainCallbacks:
    """Hooks for showing progress; the default does nothing.

    `on_start` gets the planned steps, the step a resumed run starts from, and `info`: train_examples,
    dev_examples, log_every, main_metric, encoder_note and precision_note (what `--encoder auto` and precision
    auto chose and why, or empty)."""

    def on_start(self, total_steps: int, start_step: int, info: dict[str, Any]) -> None: ...

    def on_step(self, step: int, stats: dict[str, float]) -> None: ...

    def on_eval(self, step: int, metrics: dict[str, Any], is_best: bool) -> None: ...

    def on_end(self, result: TrainResult) -> None: ...

    def on_status(self, message: str) -> None:
        """A line about work before training starts (e.g. a teacher labelling text); ignored by default."""


class LogLines(TrainCallbacks):
    """Plain progress lines for logs (CI, nohup, a file): one every `log_every` steps with the step, loss,
    learning rate, speed (in the task's unit), elapsed time and ETA, and one per dev evaluation. Flushed as written."""

    def __init__(self, main_metric: str, stream: TextIO | None = None):
        self.metric = main_metric
        self.stream = stream
        self.total = 0
        self.every = 0
        self.unit = "tokens"

    def _print(self, line: str) -> None:
        out = self.stream or sys.stderr
        out.write(line + "\n")
        out.flush()

    def on_start(self, total_steps: int, start_step: int, info: dict[str, Any]) -> None:
        self.total = total_steps
        self.every = int(info.get("log_every", 20))
        self.unit = str(info.get("speed_unit", "tokens"))
        resumed = f", resuming at step {start_step}" if start_step else ""
        self._print(
            f"train: {total_steps} steps planned, {info.get('train_examples', '?')} train / "
            f"{info.get('dev_examples', '?')} dev examples{resumed}"
        )
        for note in start_notes(info):
            self._print(note)

    def on_step(self, step: int, stats: dict[str, float]) -> None:
        if not self.every or step % self.every:
            return
        eta = stats.get("eta_s")
        self._print(
            f"step {step}/{self.total} ({100 * stats.get('progress', 0.0):.0f}%) loss {stats['loss']:.4f} "
            f"lr {stats['lr']:.2e} {stats['tokens_per_s']:,.0f} {self.unit}/s "
            f"elapsed {clock(stats.get('elapsed_s', 0.0))} eta {clock(eta) if eta is not None else '?'}"
        )

    def on_eval(self, step: int, metrics: dict[str, Any], is_best: bool) -> None:
        value = metrics.get(self.metric)
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        self._print(f"step {step}: dev {self.metric} {shown}" + (" (best, saved)" if is_best else ""))

    def on_status(self, message: str) -> None:
        self._print(message)


class CallbackList(TrainCallbacks):
    """Several callbacks as one."""

    def __init__(self, *callbacks: TrainCallbacks):
        self.callbacks = callbacks

    def on_start(self, total_steps: int, start_step: int, info: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_start(total_steps, start_step, info)

    def on_step(self, step: int, stats: dict[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_step(step, stats)

    def on_eval(self, step: int, metrics: dict[str, Any], is_best: bool) -> None:
        for cb in self.callbacks:
            cb.on_eval(step, metrics, is_best)

    def on_end(self, result: TrainResult) -> None:
        for cb in self.callbacks:
            cb.on_end(result)

    def on_status(self, message: str) -> None:
        for cb in self.callbacks:
            cb.on_status(message)
