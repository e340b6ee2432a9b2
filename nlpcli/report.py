"""Training reports: the curves of one or more runs from their `train_log.jsonl`, drawn with matplotlib, and a
summary of each run (`nlpcli report RUN_DIR ...`).

A log holds a `step` record every log_every steps (loss, lr, speed, elapsed_s, ...), an `eval` record per
dev evaluation and an `end` record per finished run. A run resumed after a kill repeats the steps after its
last save; the repeated records replace the earlier ones here (and a resumed run drops them from the log), and
a line cut short by a kill or a full disk is skipped and counted. matplotlib is imported only to draw.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import safefiles
from .errors import DataError, NlpcliError

LOG_FILE = "train_log.jsonl"  # trainer.LOG_FILE, named here so reading a log needs no torch
LOG_LIMIT = 1 << 30  # a record every log_every steps is ~300 bytes: millions of records fit
CONFIG_LIMIT = 16 * safefiles.MiB


@dataclass
class RunLog:
    """One run's log, cleaned up: step and eval records in step order (the latest of repeated steps kept)."""

    name: str
    path: Path
    steps: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None
    task: str | None = None
    main_metric: str | None = None
    unreadable_lines: int = 0  # lines cut short by a kill or a full disk (skipped)

    def elapsed_at(self, step: int) -> float | None:
        """Wall time (seconds of training) at a step, interpolated from the step records (older logs' eval
        records carry no time)."""
        points = [(s["step"], s["elapsed_s"]) for s in self.steps if "elapsed_s" in s]
        if not points:
            return None
        before = [p for p in points if p[0] <= step]
        after = [p for p in points if p[0] >= step]
        if not before:
            return points[0][1] * step / max(points[0][0], 1)
        if not after:
            (s0, t0) = before[-1]
            rate = t0 / s0 if s0 else 0.0
            return t0 + rate * (step - s0)
        (s0, t0), (s1, t1) = before[-1], after[0]
        return t0 if s1 == s0 else t0 + (t1 - t0) * (step - s0) / (s1 - s0)

    def dev_points(self) -> list[tuple[int, float | None, float]]:
        """(step, elapsed seconds, main metric) of each evaluation that has the metric."""
        out = []
        for e in self.evals:
            value = e.get(self.main_metric or "")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append((e["step"], e.get("elapsed_s", self.elapsed_at(e["step"])), float(value)))
        return out

    def series(self, key: str) -> list[tuple[int, float, float]]:
        """(step, elapsed seconds, value) of each step record with a number under `key` ("loss", "lr", ...)."""
        return [
            (s["step"], float(s.get("elapsed_s", 0.0)), float(s[key]))
            for s in self.steps
            if isinstance(s.get(key), (int, float)) and not isinstance(s.get(key), bool)
        ]

    @property
    def speed_unit(self) -> str:
        """What the speed counts per second (the task's unit, logged with each step; older logs: tokens)."""
        units = [s["speed_unit"] for s in self.steps if isinstance(s.get("speed_unit"), str)]
        return units[-1] if units else "tokens"

    def best_checkpoint(self) -> tuple[int, float | None] | None:
        """(step, main metric) of the kept checkpoint `best/`, from its metrics.json (the trainer writes the
        step there), else the last evaluation the log marks best; None when neither says."""
        # The order checkpoint.current_version reads a swap in (not imported: reading a log needs no torch).
        for name in ("best.new", "best", "best.old"):
            try:
                metrics = json.loads((self.path / name / "metrics.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            step = metrics.get("step") if isinstance(metrics, dict) else None
            if isinstance(step, int) and not isinstance(step, bool):
                value = metrics.get(self.main_metric or "")
                return step, float(value) if isinstance(value, (int, float)) else None
        best = [e for e in self.evals if e.get("is_best")]
        if not best:
            return None
        value = best[-1].get(self.main_metric or "")
        return best[-1]["step"], float(value) if isinstance(value, (int, float)) else None

    def summary(self) -> dict[str, Any]:
        """Steps, training time, speed and its unit, last loss, the kept (best) checkpoint's dev value and
        step, and why it stopped."""
        last = self.steps[-1] if self.steps else {}
        best = self.best_checkpoint()
        end = self.end or {}
        return {
            "run": self.name,
            "task": self.task,
            "steps": end.get("step", last.get("step", self.evals[-1]["step"] if self.evals else 0)),
            "elapsed_s": end.get("elapsed_s", last.get("elapsed_s")),
            "tokens_per_s": last.get("tokens_per_s"),
            "speed_unit": self.speed_unit,
            "last_loss": last.get("loss"),
            "main_metric": self.main_metric,
            "best": best[1] if best else None,
            "best_step": best[0] if best else None,
            "stopped_by": end.get("stop_reason", "still running, or killed"),
            "unreadable_lines": self.unreadable_lines,
        }


def read_run(path: str | Path) -> RunLog:
    """A training output directory's log (`DIR/train_log.jsonl`; the log file itself may be given)."""
    p = Path(path)
    log = p if p.is_file() else p / LOG_FILE
    run_dir = log.parent
    if not log.is_file():
        raise DataError(p, f"no {LOG_FILE} here (not a training output directory, or nothing logged yet)")
    run = RunLog(name=str(path).rstrip("/") or str(path), path=run_dir)
    try:
        data = safefiles.read_bytes(log, LOG_LIMIT, error=lambda m: DataError(log, m.split(": ", 1)[-1]))
    except OSError as e:
        raise DataError(log, f"cannot read ({e.strerror or e})") from None
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # a line cut short by a kill or a full disk, wherever it is
            run.unreadable_lines += 1
            continue
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            continue
        step = record["step"]
        kind = record.get("event")
        if kind == "step":
            if run.steps and step <= run.steps[-1]["step"]:  # resumed after a kill: these steps ran again
                run.steps = [s for s in run.steps if s["step"] < step]
                run.evals = [e for e in run.evals if e["step"] < step]
            run.steps.append(record)
        elif kind == "eval":
            run.evals = [e for e in run.evals if e["step"] != step] + [record]
            run.main_metric = record.get("main_metric", run.main_metric)
        elif kind == "end":
            run.end = record
    run.task = _task_of(run_dir)
    if run.main_metric is None and run.task is not None:
        from .registry import get_task

        run.main_metric = get_task(run.task).main_metric
    return run


def _task_of(run_dir: Path) -> str | None:
    for name in ("best", "best.new", "best.old", "last", "last.new", "last.old"):
        config = run_dir / name / "config.json"
        if config.is_file():
            try:
                text = safefiles.read_text(config, CONFIG_LIMIT, within=run_dir)
                task = json.loads(text).get("task")
            except (NlpcliError, OSError, ValueError, AttributeError, RecursionError):
                continue
            if isinstance(task, str):
                return task
    return None


def plot_runs(runs: list[RunLog]) -> bytes:
    """A PNG of the curves `draw` makes: every run on the same axes, one colour each."""
    from .extras import require

    require("matplotlib", "report", "nlpcli report (drawing training curves)")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 13), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    draw(fig, runs)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def draw(fig: Any, runs: list[RunLog]) -> None:
    """Training loss (log scale), dev metric, learning rate and speed (from 0), over steps (left) and over
    training time (right), on a matplotlib Figure; a dotted line and a star mark each run's kept (best)
    checkpoint."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import LogFormatter

    axes = fig.subplots(4, 2)
    metrics = sorted({r.main_metric for r in runs if r.main_metric})
    units = sorted({r.speed_unit for r in runs})
    rows = [
        ("training loss", "loss"),
        (f"dev {' / '.join(metrics) or 'metric'}", None),
        ("learning rate", "lr"),
        (" / ".join(f"{u}/s" for u in units), "tokens_per_s"),
    ]
    for i, run in enumerate(runs):
        colour = f"C{i % 10}"
        best = run.best_checkpoint()
        eval_times = {s: t for s, t, _ in run.dev_points()}  # where the dev curve puts the evaluation
        best_time = (eval_times.get(best[0]) or run.elapsed_at(best[0])) if best else None
        for r, (_, key) in enumerate(rows):
            pts: list[tuple[int, float | None, float]] = [*(run.dev_points() if key is None else run.series(key))]
            for c in (0, 1):
                ax = axes[r][c]
                xs = [s if c == 0 else (t or 0.0) / 60 for s, t, _ in pts]
                ys = [v for _, _, v in pts]
                if key is None:
                    ax.plot(xs, ys, color=colour, marker="o", markersize=3, label=_label(run, len(runs)))
                else:
                    ax.plot(xs, ys, color=colour, linewidth=1, label=_label(run, len(runs)))
                if best is not None and (c == 0 or best_time is not None):
                    x = best[0] if c == 0 else (best_time or 0.0) / 60
                    ax.axvline(x, color=colour, linestyle=":", linewidth=1.2)
                    if key is None and best[1] is not None:
                        ax.plot([x], [best[1]], color=colour, marker="*", markersize=14, linestyle="none")
    for r, (label, key) in enumerate(rows):
        for c, xname in enumerate(("step", "training time (minutes)")):
            ax = axes[r][c]
            ax.set_xlabel(xname)
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
            if key == "loss" and all(v > 0 for run in runs for _, _, v in run.series("loss")):
                ax.set_yscale("log")
                # Plain numbers (4.7, not 4.7 x 10^0), also on the minor ticks a short range is labelled with.
                ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
                ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
            elif key in ("lr", "tokens_per_s"):
                ax.set_ylim(bottom=0)
    kept = Line2D([], [], color="grey", linestyle=":", marker="*", markersize=10, label="kept (best) checkpoint")
    handles, _ = axes[0][0].get_legend_handles_labels()
    axes[0][0].legend(handles=[*handles, kept], loc="best", fontsize="small")
    fig.suptitle("training report: " + ", ".join(run.name for run in runs))


def _label(run: RunLog, n: int) -> str:
    return f"{run.name} ({run.task})" if run.task and n > 1 else run.name


def write_png(data: bytes, path: str | Path) -> None:
    from .data.io import atomic_binary_output

    with atomic_binary_output(path) as f:
        f.write(data)
