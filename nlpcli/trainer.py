"""The one training loop for every task.

AdamW, warm-up then decay (by steps or by the time budget, whichever runs out first),
gradient clipping, optional EMA, mixed precision where the device supports it, dev
evaluation with the best checkpoint kept, early stopping, resumable state saved in
`last/`, Ctrl-C saving before it exits, DDP under torchrun, and a JSONL log.
The trainer never prints: progress goes to callbacks.

One module on purpose, above the usual size: the loop, its resumable state and the save/evaluate points share
the run's state (step, RNG, EMA, budget clock), and split apart they would pass it all back and forth.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import safefiles, startup
from .callbacks import TrainCallbacks, TrainResult
from .card import commands_from_json
from .checkpoint import BEST, LAST
from .data.batching import bucket_batches
from .data.io import atomic_binary_output, os_reason
from .device import DistContext, autocast, choose_precision
from .ema import EMA
from .errors import CheckpointError, NlpcliError, TrainingInterrupted
from .report import LOG_LIMIT
from .tasks.base import Pipeline

LOG_FILE = "train_log.jsonl"


@dataclass
class _State:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: float | None = None
    best_metrics: dict[str, Any] = field(default_factory=dict)
    bad_evals: int = 0
    elapsed_before: float = 0.0
    tokens: int = 0


class Trainer:
    def __init__(
        self,
        pipeline: Pipeline,
        train_examples: list[Any],
        dev_examples: list[Any],
        output_dir: str | Path,
        device: torch.device,
        callbacks: TrainCallbacks | None = None,
        resume_state: dict[str, Any] | None = None,
        dist: DistContext | None = None,
        run_info: dict[str, Any] | None = None,
    ):
        """`run_info` goes into every checkpoint's model card: `data` (the files with size and sha256), `dev`
        (where dev came from) and `command` (this invocation, added to those of the runs it resumes)."""
        self.pipe = pipeline
        self.cfg = pipeline.config.trainer
        self.train = pipeline.training_examples(train_examples)
        if not self.train:
            raise NlpcliError("no training examples")
        self.dev = dev_examples
        self.out = Path(output_dir)
        self.device = device
        self.cb = callbacks or TrainCallbacks()
        self.dist = dist or DistContext()
        from .nn.hf import holds_pretrained

        self.precision = choose_precision(
            device, self.cfg.precision, training=True, pretrained=holds_pretrained(self.pipe.model)
        )
        self.dtype = self.precision.dtype
        self.pipe.to(device)
        self.model: nn.Module = self.pipe.model
        if self.dist.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.pipe.model, device_ids=ids)
        groups = self.pipe.param_groups() or _param_groups(self.pipe.model, self.cfg.weight_decay)
        # The fused kernel updates each parameter in one pass instead of a dozen: on one CPU thread a 5M-row
        # embedding table's step took 6 ms against 47 ms, as much as the rest of a small model's step.
        fused = device.type in ("cpu", "cuda") and all(p.is_floating_point() for g in groups for p in g["params"])
        self.optimizer = torch.optim.AdamW(groups, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, fused=fused)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        self.ema = EMA(self.pipe.model, self.cfg.ema_decay) if self.cfg.ema_decay > 0 else None
        self.lengths = [self.pipe.example_length(e) for e in self.train]
        self.state = _State()
        self.run_info = dict(run_info or {})
        self.commands: list[dict[str, Any]] = []
        self._t0 = time.time()
        self._tokens_per_s = 0.0
        self.tb: Any = None
        if resume_state is not None:
            self._restore(resume_state)
        if self.run_info.get("command"):
            self.commands.append({"command": self.run_info["command"], "step": self.state.step})

    # --- plan ---------------------------------------------------------------------------
    def _epoch_plan(self, epoch: int) -> list[list[int]]:
        plan = bucket_batches(self.lengths, self.cfg.batch_size, shuffle=True, seed=self.cfg.seed * 1000 + epoch)
        if self.dist.enabled:  # equal shards, so every rank takes the same number of steps
            ws = self.dist.world_size
            plan = plan[: len(plan) // ws * ws][self.dist.rank :: ws]
        return plan

    def planned_steps(self) -> int:
        per_epoch = len(self._epoch_plan(0))
        total = per_epoch * self.cfg.epochs
        return min(total, self.cfg.max_steps) if self.cfg.max_steps else total

    def _lr_factor(self, step: int, progress: float) -> float:
        warm = min(1.0, (step + 1) / self.cfg.warmup_steps) if self.cfg.warmup_steps > 0 else 1.0
        p = min(max(progress, 0.0), 1.0)
        if self.cfg.schedule == "linear":
            decay = max(0.0, 1.0 - p)
        elif self.cfg.schedule == "cosine":
            decay = 0.5 * (1 + math.cos(math.pi * p))
        else:
            decay = 1.0
        return warm * max(decay, 0.01)

    # --- loop ---------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        startup.resume()  # a command's start-up ends where its training begins
        cfg, st = self.cfg, self.state
        total = self.planned_steps()
        budget_s = cfg.time_budget * 60 if cfg.time_budget else 0.0
        t0 = time.time()
        tokens_run, steps_run = 0, 0
        last_eval_step = st.step if st.step else -1
        stop_reason = "epochs"
        self._t0 = t0
        if self.cfg.tensorboard and self.dist.is_main:
            from .tblog import open_writer

            self.tb = open_writer(self.cfg.tensorboard)
        info = {
            "train_examples": len(self.train),
            "dev_examples": len(self.dev),
            "log_every": cfg.log_every,
            "main_metric": self.pipe.main_metric,
            "speed_unit": self.pipe.speed_unit,
            "precision_note": self.precision.note,
            # what `--encoder auto` took and why, said once, when the run starts (a resumed run chose before)
            "encoder_note": "" if st.step else self.pipe.assets.get("encoder_note", ""),
        }
        if self.dist.is_main:
            self._prepare_log()
        self.cb.on_start(total, st.step, info)
        nan_run = 0
        try:
            while st.epoch < cfg.epochs:
                plan = self._epoch_plan(st.epoch)
                while st.batch_in_epoch < len(plan):
                    batch = self.pipe.collate([self.train[i] for i in plan[st.batch_in_epoch]])
                    elapsed = st.elapsed_before + time.time() - t0
                    progress = max(st.step / max(total, 1), elapsed / budget_s if budget_s else 0.0)
                    lr = cfg.lr * self._lr_factor(st.step, progress)
                    for g in self.optimizer.param_groups:
                        g["lr"] = lr * g.get("lr_scale", 1.0)
                    loss = self._step(batch)
                    st.batch_in_epoch += 1
                    if not math.isfinite(loss):
                        nan_run += 1
                        if nan_run >= 10:
                            raise NlpcliError(f"loss is not finite for 10 steps in a row (step {st.step}); lower --lr")
                        continue
                    nan_run = 0
                    st.step += 1
                    steps_run += 1
                    tokens_run += int(batch.get("_tokens", 0))
                    run_s = max(time.time() - t0, 1e-9)
                    self._tokens_per_s = tokens_run / run_s
                    elapsed = st.elapsed_before + run_s
                    progress = max(st.step / max(total, 1), elapsed / budget_s if budget_s else 0.0)
                    # Time left: the steps left at this run's pace, or the budget left, whichever ends first.
                    eta = max(total - st.step, 0) * run_s / steps_run
                    if budget_s:
                        eta = min(eta, max(budget_s - elapsed, 0.0))
                    stats = {
                        "loss": loss,
                        "lr": lr,
                        "epoch": st.epoch,
                        "tokens_per_s": tokens_run / run_s,
                        "progress": min(progress, 1.0),
                        "steps_per_s": steps_run / run_s,
                        "elapsed_s": elapsed,
                        "eta_s": eta,
                    }
                    self.cb.on_step(st.step, stats)
                    if cfg.log_every and st.step % cfg.log_every == 0:
                        self._log({"event": "step", "step": st.step, **stats, "speed_unit": self.pipe.speed_unit})
                    if cfg.eval_every and st.step % cfg.eval_every == 0:
                        last_eval_step = st.step
                        if self._evaluate():
                            stop_reason = "early_stopping"
                    if cfg.save_every and st.step % cfg.save_every == 0:
                        self._save_last(t0)
                    reason = self._should_stop(stop_reason, budget_s, t0)
                    if reason:
                        stop_reason = reason
                        raise _Stop
                st.epoch += 1
                st.batch_in_epoch = 0
                if not cfg.eval_every:
                    last_eval_step = st.step
                    if self._evaluate():
                        stop_reason = "early_stopping"
                        raise _Stop
        except _Stop:
            pass
        except KeyboardInterrupt:
            self._save_last(t0)
            self._close_tb()
            raise TrainingInterrupted(st.step, str(self.out / LAST)) from None
        except BaseException:
            self._close_tb()
            raise
        if last_eval_step != st.step:
            self._evaluate()
        self._save_last(t0)
        run_s = max(time.time() - t0, 1e-9)
        result = TrainResult(
            step=st.step,
            epoch=st.epoch,
            stop_reason=stop_reason,
            elapsed_s=st.elapsed_before + run_s,
            best_metric=st.best,
            best_metrics=st.best_metrics,
            tokens_per_s=tokens_run / run_s,
            steps_per_s=steps_run / run_s,
            output=str(self.out),
        )
        self._log({"event": "end", **result.__dict__})
        self._close_tb()
        self.cb.on_end(result)
        return result

    def _close_tb(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None

    def finished_reason(self) -> str | None:
        """Why a resumed run has nothing left to do (its state already meets a stop condition), or None."""
        cfg, st = self.cfg, self.state
        if cfg.max_steps and st.step >= cfg.max_steps:
            return "max_steps"
        if cfg.time_budget and st.elapsed_before >= cfg.time_budget * 60:
            return "time_budget"
        if cfg.patience and st.bad_evals >= cfg.patience:
            return "early_stopping"
        if st.epoch >= cfg.epochs:
            return "epochs"
        return None

    def finished_result(self, reason: str) -> TrainResult:
        """The result of a run that had already finished: nothing trained, nothing written."""
        st = self.state
        return TrainResult(
            step=st.step,
            epoch=st.epoch,
            stop_reason=f"already finished at {reason}, nothing trained",
            elapsed_s=st.elapsed_before,
            best_metric=st.best,
            best_metrics=st.best_metrics,
            output=str(self.out),
        )

    def _should_stop(self, current: str, budget_s: float, t0: float) -> str | None:
        cfg, st = self.cfg, self.state
        flags = [
            ("early_stopping", current == "early_stopping"),
            ("max_steps", bool(cfg.max_steps) and st.step >= cfg.max_steps),
            ("time_budget", bool(budget_s) and st.elapsed_before + time.time() - t0 >= budget_s),
        ]
        for name, hit in flags:  # every rank must agree, or DDP would hang
            if self.dist.all_max(float(hit)) > 0:
                return name
        return None

    def _step(self, batch: dict[str, Any]) -> float:
        self.model.train()
        batch = self.pipe.to_device(batch)
        with autocast(self.device, self.dtype):
            loss = self.pipe.loss(self.model, batch)
        if not torch.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            return float("nan")
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.pipe.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.pipe.model, self.state.step)
        return float(loss.detach())

    # --- evaluation and checkpoints --------------------------------------------------------
    def _evaluate(self) -> bool:
        """Evaluate on dev (rank 0), keep the best checkpoint; True when patience ran out."""
        st, cfg = self.state, self.cfg
        stop = 0.0
        if self.dist.is_main:
            self.pipe.model.eval()
            with torch.no_grad(), autocast(self.device, self.dtype):
                if self.ema is not None:
                    with self.ema.applied(self.pipe.model):
                        metrics = self.pipe.evaluate(self.dev) if self.dev else {}
                else:
                    metrics = self.pipe.evaluate(self.dev) if self.dev else {}
            value = metrics.get(self.pipe.main_metric)
            better = value is not None and (
                st.best is None or (value > st.best if self.pipe.higher_is_better else value < st.best)
            )
            if better or not self.dev:
                st.best, st.best_metrics, st.bad_evals = value, metrics, 0
                self._save(BEST, metrics=metrics | {"step": st.step}, with_state=False)
            else:
                st.bad_evals += 1
            elapsed = st.elapsed_before + time.time() - self._t0
            record = {"event": "eval", "step": st.step, "is_best": better, "elapsed_s": elapsed}
            self._log(record | {"main_metric": self.pipe.main_metric} | metrics)
            self.cb.on_eval(st.step, metrics, better)
            stop = float(bool(cfg.patience) and st.bad_evals >= cfg.patience)
        self.dist.barrier()
        return self.dist.all_max(stop) > 0

    def _model_state(self, averaged: bool) -> dict[str, torch.Tensor]:
        if averaged and self.ema is not None:
            return self.ema.state_dict(self.pipe.model)
        return self.pipe.model.state_dict()

    def _save(self, which: str, metrics: dict | None, with_state: bool, t0: float | None = None) -> None:
        if not self.dist.is_main:
            return
        train_state = self._train_state(t0) if with_state else None
        self.pipe.save(
            self.out / which,
            metrics,
            weights=self._model_state(averaged=not with_state),
            train_state=train_state,
            run=self._card_run(which),
        )

    def _card_run(self, which: str) -> dict[str, Any]:
        """What the model card of a checkpoint saved now says about the run."""
        st = self.state
        return {
            "checkpoint": which,
            "step": st.step,
            "epoch": st.epoch,
            "elapsed_s": st.elapsed_before + time.time() - self._t0,
            "tokens_per_s": self._tokens_per_s,
            "device": str(self.device),
            "precision": self.precision.name,
            "precision_reason": self.precision.reason,
            "dev": self.run_info.get("dev"),
            "cwd": self.run_info.get("cwd"),
            "data": self.run_info.get("data", []),
            "teacher": self.run_info.get("teacher"),
            "taught_examples": self.run_info.get("taught_examples"),
            "commands": self.commands,
        }

    def _save_last(self, t0: float) -> None:
        self._save(LAST, metrics=self.state.best_metrics or None, with_state=True, t0=t0)
        self.dist.barrier()

    def _train_state(self, t0: float | None) -> dict[str, Any]:
        st = self.state
        return {
            "step": st.step,
            "epoch": st.epoch,
            "batch_in_epoch": st.batch_in_epoch,
            "best": st.best,
            "best_metrics_json": json.dumps(st.best_metrics, ensure_ascii=False),
            "bad_evals": st.bad_evals,
            "elapsed": st.elapsed_before + (time.time() - t0 if t0 else 0.0),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.shadow if self.ema is not None else None,
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "commands_json": json.dumps(self.commands, ensure_ascii=False),
        }

    def _restore(self, ts: dict[str, Any]) -> None:
        try:
            self._restore_state(ts)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
            what = f"{type(e).__name__}: {e}".splitlines()[0]
            raise CheckpointError(f"{self.out / LAST / 'train_state.pt'}: does not fit this run ({what})") from None

    def _restore_state(self, ts: dict[str, Any]) -> None:
        st = self.state
        st.step, st.epoch, st.batch_in_epoch = ts["step"], ts["epoch"], ts["batch_in_epoch"]
        st.best, st.bad_evals, st.elapsed_before = ts["best"], ts["bad_evals"], ts["elapsed"]
        st.best_metrics = json.loads(ts.get("best_metrics_json") or "{}")
        self.optimizer.load_state_dict(ts["optimizer"])
        self.scaler.load_state_dict(ts["scaler"])
        if self.ema is not None and ts.get("ema") is not None:
            self.ema.shadow = {k: v.to(self.device) for k, v in ts["ema"].items()}
        torch.set_rng_state(ts["torch_rng"])
        random.setstate(ts["python_rng"])
        self.commands = commands_from_json(ts.get("commands_json"))

    def _log(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        if self.tb is not None and record["event"] in ("step", "eval"):
            from .tblog import write_scalars

            write_scalars(self.tb, record)
        line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            fd = _open_log(self.out / LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, line)  # one write per record: a kill cuts at most this line
            finally:
                os.close(fd)
        except OSError as e:
            raise NlpcliError(f"{self.out / LOG_FILE}: cannot write ({os_reason(e)})") from None

    def _prepare_log(self) -> None:
        """Before this run's first record: drop a last line cut short by a kill or a full disk (the next record
        would be glued onto it), and the records of the steps after the one this run starts from (a resumed
        run does them again; kept, they would be logged twice). The log is rewritten only when that changes it."""
        path = self.out / LOG_FILE
        try:
            lines = safefiles.read_bytes(path, LOG_LIMIT, within=self.out, error=NlpcliError).split(b"\n")
        except FileNotFoundError:
            return
        cut = lines.pop() != b""  # what follows the last newline: nothing, or a line cut short
        kept = [line for line in lines if _record_step(line) <= self.state.step]
        if not cut and len(kept) == len(lines):
            return
        with atomic_binary_output(path) as f:  # a kill now leaves the old log or the new one
            f.write(b"".join(line + b"\n" for line in kept))


def _open_log(path: Path, flags: int) -> int:
    """The log, opened without following a link planted in the output directory (a run must not write
    through it); only a regular file is taken."""
    fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0), 0o666)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return fd


def _record_step(line: bytes) -> int:
    """The step of a log record; -1 for a line without one (kept as it is)."""
    try:
        step = json.loads(line).get("step")
    except (ValueError, AttributeError, RecursionError):
        return -1
    return step if isinstance(step, int) else -1


class _Stop(Exception):
    """Internal: leave the training loop."""


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norms and embeddings' 1-d parameters."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
