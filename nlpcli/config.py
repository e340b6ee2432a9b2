"""Task configs in sections: trainer, encoder, model and inference.

- `trainer`: how to train (epochs ... log_every, device, threads, precision). Some fields may change on
  --resume (`TrainerConfig.RESUMABLE`); the rest would change the run and are refused.
- `encoder`: the shared char+word DGCNN / Hugging Face encoder block of ner, ie and qa (`nn.encoder`).
- `model`: the task's model, fixed when the model is built (a checkpoint keeps it; --resume refuses changes).
- `inference`: thresholds, batch size, sampler and decoding settings; may change at predict time.

Values come from the task's defaults, then a config file (TOML/JSON, with `[section]` tables or flat keys),
then the command line: `--field value` (looked up in trainer, model, encoder, inference, in that order) or
`--section.field value`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from .errors import ConfigError

S = TypeVar("S", bound="Section")
C = TypeVar("C", bound="TaskConfig")


@dataclass
class Section:
    """A config section: typed fields with defaults (the default's type is the field's type)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def updated(self: S, values: dict[str, Any], where: str = "") -> S:
        """A copy with values set; strings (command line) are converted to the field's type."""
        names = set(self.field_names())
        changes = {}
        for key, value in values.items():
            if key not in names:
                raise ConfigError(f"unknown option '{where}{key}'")
            changes[key] = convert(where + key, value, getattr(self, key))
        return dataclasses.replace(self, **changes)


@dataclass
class TrainerConfig(Section):
    """How to train; shared by every task (tasks change the defaults)."""

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

    # What may change on --resume without changing the run's model or its optimisation path.
    RESUMABLE: ClassVar[frozenset[str]] = frozenset(
        {
            "epochs",
            "max_steps",
            "time_budget",
            "device",
            "precision",
            "threads",
            "eval_every",
            "patience",
            "save_every",
            "log_every",
        }
    )


@dataclass
class TaskConfig:
    """A task's whole config: one instance of each section. Tasks subclass it with their own sections
    and defaults; `encoder` is None for tasks without the shared encoder block."""

    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    model: Section = field(default_factory=Section)
    inference: Section = field(default_factory=Section)
    encoder: Section | None = None

    # What `--encoder auto` may take, best first (nn.encoder.AutoChoice; tasks with the encoder block).
    AUTO_ENCODER: ClassVar[tuple[Any, ...]] = ()
    # Lookup order of a bare `--field`: the first section that has it.
    ORDER: ClassVar[tuple[str, ...]] = ("trainer", "model", "encoder", "inference")
    # Flat names of format-1 checkpoints and older option spellings -> "section.field".
    RENAMES: ClassVar[dict[str, str]] = {
        "encoder": "encoder.name",
        "encoder_lr": "encoder.lr",
        "eval_batch_size": "inference.batch_size",
    }

    def sections(self) -> dict[str, Section]:
        return {name: s for name in self.ORDER if (s := getattr(self, name)) is not None}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: s.to_dict() for name, s in self.sections().items()}

    @classmethod
    def from_dict(cls: type[C], values: dict[str, Any], strict: bool = True) -> C:
        return cls().updated(values, strict=strict)

    def dotted_names(self) -> list[str]:
        return [f"{name}.{f}" for name, s in self.sections().items() for f in s.field_names()]

    def locate(self, key: str, only: tuple[str, ...] | None = None) -> tuple[str, str]:
        """(section, field) of an option: `section.field`, an old flat name, or the first section having it."""
        key = key.replace("-", "_")
        key = self.RENAMES.get(key, key)
        sections = self.sections()
        allowed = only or tuple(sections)
        if "." in key:
            name, _, fname = key.partition(".")
            if name in allowed and name in sections and fname in sections[name].field_names():
                return name, fname
        else:
            for name in allowed:
                if name in sections and key in sections[name].field_names():
                    return name, key
        raise ConfigError(self._unknown(key, allowed))

    def _unknown(self, key: str, allowed: tuple[str, ...]) -> str:
        names = [n for n in self.dotted_names() if n.split(".")[0] in allowed]
        flat = sorted({n.split(".", 1)[1] for n in names})
        close = difflib.get_close_matches(key.split(".")[-1], flat, n=1) or difflib.get_close_matches(key, names, n=1)
        hint = f"; did you mean --{close[0].replace('_', '-')}?" if close else ""
        where = "" if allowed == tuple(self.sections()) else f" in section(s) {', '.join(allowed)}"
        return f"unknown option --{key.replace('_', '-')}{where}{hint} (`nlpcli info TASK` lists the options)"

    def updated(self: C, values: dict[str, Any], strict: bool = True, only: tuple[str, ...] | None = None) -> C:
        """A copy with values set. Keys: a section name holding a table, `section.field`, or a flat field
        name; unknown keys raise ConfigError (or are ignored when not strict)."""
        changes: dict[str, dict[str, Any]] = {}
        sections = self.sections()
        for key, value in values.items():
            if isinstance(value, dict) and key in sections:
                pairs = [(f"{key}.{k}", v) for k, v in value.items()]
            else:
                pairs = [(key, value)]
            for k, v in pairs:
                try:
                    name, fname = self.locate(k, only)
                except ConfigError:
                    if strict:
                        raise
                    continue
                changes.setdefault(name, {})[fname] = v
        replaced = {name: sections[name].updated(vals, name + ".") for name, vals in changes.items()}
        return dataclasses.replace(self, **replaced)  # type: ignore[arg-type]  # sections by name

    def differences(self, other: TaskConfig) -> list[str]:
        """Dotted names of the fields whose values differ."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{s}.{k}" for s in a for k in a[s] if a[s][k] != b.get(s, {}).get(k)]


def convert(key: str, value: Any, default: Any) -> Any:
    """A value converted to the type of the field's default; strings come from the command line."""
    kind = type(default)
    if isinstance(value, str) and kind is not str:
        return _from_string(key, value, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is list and isinstance(value, (list, tuple)):
        return [_element(key, v, default) for v in value]
    if default is not None and not isinstance(value, kind):
        raise ConfigError(f"option '{key}': {value!r} is not a valid {kind.__name__}")
    return value


def _from_string(key: str, value: str, default: Any) -> Any:
    kind = type(default)
    try:
        if kind is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind is list:
            items = json.loads(value) if value.strip().startswith("[") else [v for v in value.split(",") if v.strip()]
            return [_element(key, v, default) for v in items]
        return kind(value)
    except (ValueError, json.JSONDecodeError):
        raise ConfigError(f"option '{key}': {value!r} is not a valid {kind.__name__}") from None


def _element(key: str, value: Any, default: list) -> Any:
    kind = type(default[0]) if default else str
    try:
        return kind(value.strip()) if isinstance(value, str) else kind(value)
    except ValueError:
        raise ConfigError(f"option '{key}': {value!r} is not a valid {kind.__name__}") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or TOML file of config values: `[section]` tables and/or flat keys."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        if p.suffix.lower() == ".toml":
            return tomllib.loads(p.read_text(encoding="utf-8"))
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not a valid config file ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected an object of config values")
    return data.get("config", data)
