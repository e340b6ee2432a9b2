"""One checkpoint format for every task: a directory written atomically.

    config.json        task name, format version, nlpcli version, the task config in sections
                       (format 1, before config sections, kept one flat dict: still read)
    vocab.json         the task's assets (vocabularies, label sets)
    model.safetensors  weights (no pickle)
    metrics.json       metrics of this checkpoint (optional)
    train_state.pt     optimizer/scheduler/step/RNG for --resume (optional; weights_only load)
    <extra>/           task files such as a Hugging Face tokenizer and config

A training output directory holds `best/` (what --model loads) and `last/` (what --resume loads).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .errors import CheckpointError

FORMAT_VERSION = 2
BEST, LAST = "best", "last"


@dataclass
class Checkpoint:
    """A loaded checkpoint directory (weights are read on demand)."""

    path: Path
    task: str
    config: dict[str, Any]
    assets: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def state_dict(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.path / "model.safetensors"))

    def train_state(self) -> dict[str, Any] | None:
        p = self.path / "train_state.pt"
        return torch.load(p, map_location="cpu", weights_only=True) if p.exists() else None


def save_checkpoint(
    path: str | Path,
    task: str,
    config: dict[str, Any],
    model_state: dict[str, torch.Tensor],
    assets: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
    write_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write a checkpoint into a temp dir, then swap it into place (never a half checkpoint)."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        meta = {"format_version": FORMAT_VERSION, "nlpcli_version": __version__, "task": task, "config": config}
        (tmp / "config.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
        (tmp / "vocab.json").write_text(json.dumps(assets, ensure_ascii=False), encoding="utf-8")
        # Clones break weight sharing (tied embeddings), which safetensors refuses to store.
        weights = {k: v.detach().to("cpu").contiguous().clone() for k, v in model_state.items()}
        save_file(weights, str(tmp / "model.safetensors"), metadata={"task": task})
        if metrics is not None:
            (tmp / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2), encoding="utf-8")
        if train_state is not None:
            torch.save(train_state, tmp / "train_state.pt")
        if write_extra is not None:
            write_extra(tmp)
        _swap_into_place(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _swap_into_place(tmp: Path, dest: Path) -> None:
    old = dest.with_name(dest.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """A checkpoint dir itself, or a training output dir (its best/, else last/)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint directory")
    for candidate in (p, p / BEST, p / (BEST + ".old"), p / LAST):
        if (candidate / "config.json").is_file():
            return candidate
    raise CheckpointError(f"{p}: not an nlpcli checkpoint (no config.json)")


def load_checkpoint(path: str | Path, expect_task: str | None = None) -> Checkpoint:
    """Read config and assets; refuse checkpoints of another task or a newer format."""
    d = resolve_checkpoint_dir(path)
    try:
        meta = json.loads((d / "config.json").read_text(encoding="utf-8"))
        assets = json.loads((d / "vocab.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{d}: unreadable checkpoint ({e})") from None
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{d}: checkpoint format {version} is newer than this nlpcli reads ({FORMAT_VERSION}); upgrade nlpcli"
        )
    task = meta.get("task")
    if expect_task is not None and task != expect_task:
        raise CheckpointError(f"{d}: this is a '{task}' checkpoint, not '{expect_task}'")
    if not (d / "model.safetensors").is_file():
        raise CheckpointError(f"{d}: model.safetensors is missing")
    metrics_path = d / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.exists() else {}
    return Checkpoint(
        path=d, task=task, config=meta.get("config", {}), assets=assets, metrics=metrics, format_version=version
    )
