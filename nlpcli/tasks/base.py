"""What every task provides, so the verbs and the trainer never branch on task names."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..checkpoint import Checkpoint
from ..data.io import ReadStats
from ..errors import ConfigError, DataError


@dataclass
class TaskConfig:
    """Training settings shared by all tasks; each task extends it with its model settings.

    The defaults are the recommended settings; everything is saved in the checkpoint.
    """

    epochs: int = 10
    max_steps: int = 0  # 0: no limit
    time_budget: float = 0.0  # minutes, 0: no limit
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    schedule: str = "linear"  # linear | cosine | constant (decay follows steps or the time budget)
    grad_clip: float = 1.0
    ema_decay: float = 0.0  # 0: off; evaluation and the best checkpoint use the EMA weights
    eval_every: int = 0  # steps between dev evaluations; 0: once per epoch
    patience: int = 0  # evaluations without improvement before stopping; 0: never
    dev_ratio: float = 0.1  # share of train carved out as dev when no --dev is given
    dev_max: int = 2000  # cap on the carved dev size
    save_every: int = 200  # steps between resume states in last/
    seed: int = 42
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    threads: int = 0  # torch intra-op threads; 0: torch default
    log_every: int = 20

    # Fields that may change on --resume without changing the model.
    RUNTIME_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"epochs", "max_steps", "time_budget", "device", "precision", "threads", "eval_every", "patience",
         "save_every", "log_every"}
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], strict: bool = True) -> "TaskConfig":
        return cls().updated(values, strict=strict)

    def updated(self, values: dict[str, Any], strict: bool = True) -> "TaskConfig":
        """A copy with values set; strings are converted to the field's type."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        changes = {}
        for key, value in values.items():
            key = key.replace("-", "_")
            if key not in fields:
                if strict:
                    known = ", ".join(sorted(fields))
                    raise ConfigError(f"unknown option '{key}' for this task; known: {known}")
                continue
            changes[key] = _convert(key, value, type(getattr(self, key)))
        return dataclasses.replace(self, **changes)


def _convert(key: str, value: Any, kind: type) -> Any:
    if not isinstance(value, str) or kind is str:
        if kind is float and isinstance(value, int):
            return float(value)
        return value
    try:
        if kind is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind in (list, tuple):
            return type(kind)(json.loads(value)) if value.startswith("[") else kind(value.split(","))
        return kind(value)
    except ValueError:
        raise ConfigError(f"option '{key}': {value!r} is not a valid {kind.__name__}") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or TOML file of config fields."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        if p.suffix.lower() == ".toml":
            return tomllib.loads(p.read_text(encoding="utf-8"))
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{p}: not a valid config file ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected an object of config fields")
    return data.get("config", data)


class Pipeline:
    """A task's reader, tensor encoder, model, decoder and metric, behind one interface.

    Subclasses set `name`, `Config`, `main_metric` and implement the hooks below.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    Config: ClassVar[type[TaskConfig]] = TaskConfig
    main_metric: ClassVar[str] = "f1"
    higher_is_better: ClassVar[bool] = True
    formats: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: TaskConfig, assets: dict[str, Any], model: nn.Module):
        self.config = config
        self.assets = assets
        self.model = model
        self.device = torch.device("cpu")

    # --- data -------------------------------------------------------------------------
    @classmethod
    def read(cls, path: str | Path, fmt: str | None = None, skip_bad: bool = False) -> tuple[list[Any], ReadStats]:
        """Read a data file into examples; bad records raise DataError or are counted."""
        raise NotImplementedError

    @classmethod
    def check_examples(cls, config: TaskConfig, examples: list[Any], stats: ReadStats | None) -> list[Any]:
        """Examples that fit the config (e.g. a schema file); misfits raise DataError, or are counted in
        `stats` (given with --skip-bad) and dropped. The default keeps everything."""
        return examples

    def training_examples(self, examples: list[Any]) -> list[Any]:
        """Examples as the model trains on them (e.g. long texts cut into windows)."""
        return examples

    def example_length(self, example: Any) -> int:
        """Length used for bucketing."""
        return 1

    def collate(self, examples: list[Any]) -> dict[str, Any]:
        """Tensors for a batch; an int under '_tokens' counts tokens for speed reports."""
        raise NotImplementedError

    # --- model ------------------------------------------------------------------------
    @classmethod
    def create(cls, config: TaskConfig, train_examples: list[Any]) -> "Pipeline":
        """Build vocabularies from training data and a freshly initialised model."""
        raise NotImplementedError

    @classmethod
    def build(cls, config: TaskConfig, assets: dict[str, Any], checkpoint_dir: Path | None = None) -> "Pipeline":
        """Rebuild the pipeline (untrained weights) from a config and saved assets."""
        raise NotImplementedError

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, overrides: dict[str, Any] | None = None) -> "Pipeline":
        config = cls.Config.from_dict(ckpt.config, strict=False)
        if overrides:
            config = config.updated(overrides)
        pipe = cls.build(config, ckpt.assets, ckpt.path)
        pipe.model.load_state_dict(ckpt.state_dict())
        pipe.model.eval()
        return pipe

    def write_extra(self, directory: Path) -> None:
        """Write task files (e.g. a tokenizer) into a checkpoint directory being saved."""

    def loss(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """Training loss for a batch; `model` may be the DDP wrapper of self.model."""
        raise NotImplementedError

    def to(self, device: torch.device) -> "Pipeline":
        self.device = device
        self.model.to(device)
        return self

    # --- evaluation and prediction -----------------------------------------------------
    def evaluate(self, examples: list[Any], batch_size: int | None = None) -> dict[str, Any]:
        """Metrics on gold examples; must include `main_metric`."""
        raise NotImplementedError

    def predict_records(
        self, records: Iterable[dict[str, Any]], batch_size: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Input records (dicts) -> the same records with predictions added, in order."""
        raise NotImplementedError

    def validate_record(self, record: dict[str, Any], path: str, line: int) -> None:
        """Check one prediction input record; raise DataError naming path and line.

        The default, for tasks that read one text per record, wants a string `text`.
        """
        if not isinstance(record.get("text"), str):
            raise DataError(path, "missing string field 'text'", line)

    def record_chunks(
        self, records: Iterable[dict[str, Any]], batch_size: int | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Prediction input in chunks of several batches, so length bucketing has room to work."""
        it = iter(records)
        size = max(256, (batch_size or getattr(self.config, "eval_batch_size", 64)) * 4)
        while chunk := list(islice(it, size)):
            yield chunk

    def param_groups(self) -> list[dict[str, Any]] | None:
        """Optimizer groups (an `lr_scale` key scales the group's learning rate); None: the default."""
        return None

    def to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
