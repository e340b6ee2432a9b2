"""Task configs in sections: trainer, encoder, model and inference.

- `trainer`: how to train (epochs ... log_every, device, threads, precision). Some fields may change on
  --resume (`TrainerConfig.RESUMABLE`); the rest would change the run and are refused.
- `encoder`: the shared char+word DGCNN / Hugging Face encoder block of ner, ie and qa (`nn.encoder`).
- `model`: the task's model, fixed when the model is built (a checkpoint keeps it; --resume refuses changes).
- `windows`: how tasks that read long texts (ner, ie, qa) cut them into overlapping windows; may change at
  predict time.
- `inference`: thresholds, batch size, sampler and decoding settings; may change at predict time.

Values come from the task's defaults, then a config file (TOML/JSON, with `[section]` tables or flat keys),
then the command line: `--field value` (looked up in trainer, model, encoder, windows, inference, in that order)
or `--section.field value`. Renamed fields keep their old names as aliases (`TaskConfig.MOVED`), so presets,
options and checkpoints that use them still mean what they meant.

Above the usual size: sections, the lookup of options (with old names), value ranges and the file readers are
one mechanism that every task's config goes through.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

from .errors import ConfigError, UnknownOption

S = TypeVar("S", bound="Section")
C = TypeVar("C", bound="TaskConfig")
T = TypeVar("T")


def opt(
    default: T,
    help: str,
    *,
    low: float | None = 0,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> T:
    """A config field with its one-line description (`nlpcli info TASK` and `--toml` show it) and, for a
    number, the range it must lie in: finite, and by default at least 0 (`low=None`: no lower bound;
    `low_open`/`high_open`: the bound itself is out). Values outside are a ConfigError when set.

    Every field of every section is declared this way (a test holds them to it); a list default is copied
    for each instance."""
    meta = {"help": help, "range": Range(low, high, low_open, high_open)}
    if isinstance(default, list):
        items = list(default)
        return cast(T, field(default_factory=lambda: list(items), metadata=meta))
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Range:
    """The values a numeric config field takes: finite, and within these bounds."""

    low: float | None = 0
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def problem(self, value: Any) -> str | None:
        """Why `value` is out of range (None when it is in, or not a number)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if not math.isfinite(value):
            return "must be a finite number"
        low, high = self.low, self.high
        if low is not None and (value <= low if self.low_open else value < low):
            return f"must be {'above' if self.low_open else 'at least'} {low:g}" + self._and_high()
        if high is not None and (value >= high if self.high_open else value > high):
            return f"must be {'below' if self.high_open else 'at most'} {high:g}" + self._and_low()
        return None

    def _and_high(self) -> str:
        return "" if self.high is None else f" and {'below' if self.high_open else 'at most'} {self.high:g}"

    def _and_low(self) -> str:
        return "" if self.low is None else f" and {'above' if self.low_open else 'at least'} {self.low:g}"


# Ranges that recur: a count of at least one, a probability, a dropout rate (1 would drop everything).
POSITIVE: dict[str, Any] = {"low": 1}
PROBABILITY: dict[str, Any] = {"low": 0, "high": 1}
DROPOUT: dict[str, Any] = {"low": 0, "high": 1, "high_open": True}


@dataclass(frozen=True)
class Rule:
    """A constraint between fields of one section (declared in the section's RULES)."""

    fields: tuple[str, ...]
    holds: Callable[..., bool]
    message: str


def smaller(small: str, large: str) -> Rule:
    """`small` below `large` (a window's overlap below its size)."""
    return Rule((small, large), lambda a, b: a < b, f"{small} must be smaller than {large}")


def even_when(name: str, flag: str) -> Rule:
    """`name` even when `flag` is on (rotary position embeddings rotate pairs of dimensions)."""
    return Rule((name, flag), lambda n, f: not f or n % 2 == 0, f"{name} must be even when {flag} is on")


@dataclass(frozen=True)
class FieldInfo:
    """What `nlpcli info TASK` shows of a config field."""

    section: str
    name: str
    type: str
    default: Any
    help: str


@dataclass
class Section:
    """A config section: typed fields with defaults (the default's type is the field's type)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def describe(self, section: str = "") -> list[FieldInfo]:
        """Each field with its type, value (the default, for a fresh section) and one-line description."""
        return [
            FieldInfo(section, f.name, str(f.type), getattr(self, f.name), f.metadata.get("help", ""))
            for f in dataclasses.fields(self)
        ]

    # Constraints between this section's fields (`smaller`, `even_when`), checked whenever values are set.
    RULES: ClassVar[tuple[Rule, ...]] = ()

    def updated(self: S, values: dict[str, Any], where: str = "") -> S:
        """A copy with values set; strings (command line) are converted to the field's type, and every value
        must lie in its field's range and fit the section's RULES (a ConfigError naming the option)."""
        names = set(self.field_names())
        changes = {}
        for key, value in values.items():
            if key not in names:
                close = difflib.get_close_matches(key, sorted(names), n=1)
                hint = f"; did you mean {where}{close[0]}?" if close else ""
                raise UnknownOption(f"unknown option '{where}{key}'{hint}")
            changes[key] = convert(where + key, value, getattr(self, key))
        new = dataclasses.replace(self, **changes)
        new.check_values(where, set(changes))
        return new

    def check_values(self, where: str = "", changed: set[str] | None = None) -> None:
        """Every value (of the `changed` fields, when given) in range, and the RULES that involve them."""
        for f in dataclasses.fields(self):
            if changed is not None and f.name not in changed:
                continue
            bounds = f.metadata.get("range")
            value = getattr(self, f.name)
            for item in value if isinstance(value, list) else [value]:
                problem = bounds.problem(item) if bounds is not None else None
                if problem:
                    raise ConfigError(f"option '{where}{f.name}': {item!r} is out of range ({problem})")
        for rule in self.RULES:
            if changed is not None and not changed & set(rule.fields):
                continue
            values = [getattr(self, name) for name in rule.fields]
            if not rule.holds(*values):
                shown = ", ".join(f"{where}{n} = {v!r}" for n, v in zip(rule.fields, values, strict=True))
                raise ConfigError(f"{rule.message.replace(rule.fields[0], where + rule.fields[0], 1)} ({shown})")


@dataclass
class TrainerConfig(Section):
    """How to train; shared by every task (tasks change the defaults)."""

    epochs: int = opt(10, "Passes over the training data.", **POSITIVE)
    max_steps: int = opt(0, "Stop after this many optimiser steps; 0: no limit.")
    time_budget: float = opt(0.0, "Stop after this many minutes (the learning rate decays to fit); 0: no limit.")
    batch_size: int = opt(32, "Training examples per optimiser step.", **POSITIVE)
    lr: float = opt(1e-3, "Peak learning rate (AdamW).", low_open=True)
    weight_decay: float = opt(0.01, "AdamW weight decay (never on biases, norms and other 1-d parameters).")
    warmup_steps: int = opt(100, "Steps of linear learning-rate warm-up.")
    schedule: str = opt("linear", "Decay after warm-up: linear | cosine | constant (over the steps or time budget).")
    grad_clip: float = opt(1.0, "Clip the gradient norm to this; 0: off.")
    ema_decay: float = opt(
        0.0, "EMA of the weights (evaluation and the best checkpoint use it); 0: off.", high=1, high_open=True
    )
    eval_every: int = opt(0, "Steps between dev evaluations; 0: once per epoch.")
    patience: int = opt(0, "Evaluations without improvement before stopping early; 0: never.")
    dev_ratio: float = opt(0.1, "Share of train carved out as dev when no --dev is given.", high=1, high_open=True)
    dev_max: int = opt(2000, "Cap on the size of the carved dev split.")
    save_every: int = opt(200, "Steps between resume states saved in last/.")
    seed: int = opt(42, "Seed of the data order, the carved dev split and the initial weights.", low=None)
    device: str = opt("auto", "auto | cpu | cuda | cuda:N | mps (auto: CUDA, then MPS, then CPU).")
    precision: str = opt(
        "auto",
        "auto | fp32 | bf16 | fp16 (auto: bf16 or fp16 autocast on CUDA; bf16 for a pretrained encoder on a CPU "
        "that multiplies bf16 natively; fp32 elsewhere).",
    )
    threads: int = opt(0, "Torch intra-op threads; 0: torch's default.")
    log_every: int = opt(20, "Steps between train_log.jsonl lines (and progress lines when stderr is no terminal).")
    tensorboard: str = opt("", "Directory for TensorBoard event files (needs the tensorboard package); empty: off.")

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
            "tensorboard",
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
    windows: Section | None = None

    # What `--encoder auto` may take, best first (nn.encoder.AutoChoice; tasks with the encoder block).
    AUTO_ENCODER: ClassVar[tuple[Any, ...]] = ()
    # The from-scratch encoders the task's model is built for (nn.encoder: the DGCNN; ner also the BiLSTM).
    SCRATCH_ENCODERS: ClassVar[tuple[str, ...]] = ("dgcnn",)
    # Whether its model feeds char bigrams to the from-scratch encoder (ner; ie and qa embed chars themselves).
    BIGRAMS: ClassVar[bool] = False
    # Lookup order of a bare `--field`: the first section that has it.
    ORDER: ClassVar[tuple[str, ...]] = ("trainer", "model", "encoder", "windows", "inference")
    # Flat names of format-1 checkpoints and older option spellings -> "section.field".
    RENAMES: ClassVar[dict[str, str]] = {
        "encoder": "encoder.name",
        "encoder_lr": "encoder.lr",
        "eval_batch_size": "inference.batch_size",
    }
    # Fields renamed or moved since (format-2 checkpoints, presets, options): old "section.field" -> the new
    # "section.field"(s) it sets. A bare old name is found where it was, in section order: `--max-len` still
    # lands where it landed.
    MOVED: ClassVar[dict[str, tuple[str, ...]]] = {}

    def sections(self) -> dict[str, Section]:
        return {name: s for name in self.ORDER if (s := getattr(self, name)) is not None}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: s.to_dict() for name, s in self.sections().items()}

    @classmethod
    def from_dict(cls: type[C], values: dict[str, Any], strict: bool = True) -> C:
        return cls().updated(values, strict=strict)

    def describe(self) -> list[FieldInfo]:
        """Every field of every section, in section order, with type, value and description."""
        return [info for name, section in self.sections().items() for info in section.describe(name)]

    def option_name(self, section: str, name: str) -> str:
        """The shortest command-line option that reaches a field: `--name` when the bare name finds this
        section first, else `--section.name`."""
        bare = self.locate(name) == (section, name)
        return "--" + (name if bare else f"{section}.{name}").replace("_", "-")

    def to_toml(self, header: str = "", comments: bool = True) -> str:
        """The whole config as TOML (`[section]` tables, every field, its description as a comment above it),
        which `--config` reads back to the same config."""
        lines = [f"# {line}" if line else "#" for line in header.splitlines()]
        for name, section in self.sections().items():
            lines += ["", f"[{name}]"] if lines else [f"[{name}]"]
            for info in section.describe(name):
                if comments and info.help:
                    lines.append(f"# {info.help}")
                lines.append(f"{info.name} = {toml_value(info.default)}")
        return "\n".join(lines) + "\n"

    def dotted_names(self) -> list[str]:
        return [f"{name}.{f}" for name, s in self.sections().items() for f in s.field_names()]

    def locate(self, key: str, only: tuple[str, ...] | None = None) -> tuple[str, str]:
        """(section, field) of an option: `section.field`, an old flat name, or the first section having it."""
        return self.targets(key, only)[0]

    def targets(self, key: str, only: tuple[str, ...] | None = None) -> list[tuple[str, str]]:
        """The (section, field)s an option sets: one, or for an old name several (`MOVED`), in `only`'s sections."""
        key = key.replace("-", "_")
        key = self.RENAMES.get(key, key)
        sections = self.sections()
        allowed = only or tuple(sections)
        candidates = [key] if "." in key else [f"{name}.{key}" for name in allowed]
        for dotted in candidates:
            name, _, fname = dotted.partition(".")
            if name in allowed and name in sections and fname in sections[name].field_names():
                return [(name, fname)]
            moved = [t.partition(".") for t in self.MOVED.get(dotted, ())]
            found = [(s, f) for s, _, f in moved if s in allowed and s in sections]
            if found:
                return found
        raise UnknownOption(self._unknown(key, allowed))

    def _unknown(self, key: str, allowed: tuple[str, ...]) -> str:
        names = [n for n in self.dotted_names() if n.split(".")[0] in allowed]
        flat = sorted({n.split(".", 1)[1] for n in names})
        close = difflib.get_close_matches(key.split(".")[-1], flat, n=1) or difflib.get_close_matches(key, names, n=1)
        hint = f"; did you mean --{close[0].replace('_', '-')}?" if close else ""
        where = "" if allowed == tuple(self.sections()) else f" in section(s) {', '.join(allowed)}"
        return f"unknown option --{key.replace('_', '-')}{where}{hint} (`nlpcli info TASK` lists the options)"

    def canonical(self, values: dict[str, Any]) -> dict[str, Any]:
        """The same settings keyed `section.field` (flat and old names resolved, section tables spread), so that
        two spellings of one field, merged as dicts, are one key and the later one wins."""
        sections = self.sections()
        out: dict[str, Any] = {}
        for key, value in values.items():
            pairs = (
                [(f"{key}.{k}", v) for k, v in value.items()]
                if isinstance(value, dict) and key in sections
                else [(key, value)]
            )
            for k, v in pairs:
                out.update({f"{name}.{fname}": v for name, fname in self.targets(k)})
        return out

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
                    found = self.targets(k, only)
                except ConfigError:
                    if strict:
                        raise
                    continue
                for name, fname in found:
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


def toml_value(value: Any) -> str:
    """A config value as a TOML literal (strings as basic strings: JSON's escapes are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise ValueError(f"no TOML form for {value!r}")


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
