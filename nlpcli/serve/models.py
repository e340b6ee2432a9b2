"""The models a server answers for: `--model DIR` or `--model NAME=DIR`, each loaded once, and what /info says."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..tasks.base import Pipeline

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
CARD_MAX_CHARS = 20_000


@dataclass
class ServedModel:
    name: str
    path: str  # as given on the command line
    pipe: Pipeline
    device: str = "auto"  # as loaded (a model process loads it again so)
    precision: str = "auto"

    @property
    def task(self) -> str:
        return self.pipe.name

    def info(self) -> dict[str, Any]:
        """Task, checkpoint directory, metrics.json, model card and config: what a client needs to know."""
        from ..checkpoint import load_checkpoint

        ckpt = load_checkpoint(self.path)  # config.json and metrics.json only; the weights are in memory already
        card = _model_card(ckpt.path, Path(self.path))
        # No absolute path, command line or working directory of the serving machine leaves it: a client
        # learns the model's name and the checkpoint's kind, not where it lives or who trained it how.
        return {
            "name": self.name,
            "task": self.task,
            "model": Path(self.path).name,
            "checkpoint": ckpt.path.name,
            # lm and chat sample: a reply may differ from `nlpcli predict`'s (the seed is drawn per batch)
            "sampled": self.pipe.sampled,
            "metrics": ckpt.metrics or None,
            "model_card": redact_card(card) if card is not None else None,
            "config": redact(self.pipe.config.to_dict()),
        }


# An absolute path (/..., ~/..., C:\\...) not inside a URL or a word (tokens/s): shown by its last part.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])(?:/|~/|[A-Za-z]:\\)[^\s`|)'\"<>]+")
HIDDEN_SECTIONS = ("## Training data", "## Training")  # data paths; commands and working directory


def redact(value: Any) -> Any:
    """A JSON value with every absolute path cut to its last part (config fields such as a local encoder)."""
    if isinstance(value, str):
        return ABSOLUTE_PATH.sub(_last_part, value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _last_part(m: re.Match[str]) -> str:
    parts = [p for p in re.split(r"[/\\]", m.group(0)) if p and p != "~" and not p.endswith(":")]
    return ".../" + parts[-1] if parts else "..."


def redact_card(card: str) -> str:
    """A model card as /info serves it: the training data and training sections (paths, command lines,
    working directory) left out, and any other absolute path cut to its last part."""
    out: list[str] = []
    hidden = False
    for line in card.splitlines():
        if line.startswith("## "):
            hidden = line.strip() in HIDDEN_SECTIONS
            if hidden:
                out += [
                    line,
                    "",
                    "Not served (paths and commands of the training machine); see the checkpoint's README.md.",
                    "",
                ]
                continue
        if not hidden:
            out.append(ABSOLUTE_PATH.sub(_last_part, line))
    return "\n".join(out) + ("\n" if card.endswith("\n") else "")


def parse_model_specs(specs: list[str]) -> list[tuple[str | None, str]]:
    """`DIR` or `NAME=DIR` -> (name or None, dir). A DIR that exists as given wins over a NAME= reading."""
    out: list[tuple[str | None, str]] = []
    for spec in specs:
        name, eq, path = spec.partition("=")
        if eq and NAME.fullmatch(name) and not Path(spec).exists():
            if not path:
                raise ConfigError(f"--model {spec}: no directory after '{name}='")
            out.append((name, path))
        else:
            out.append((None, spec))
    return out


def load_models(specs: list[str], device: str = "auto", precision: str = "auto") -> dict[str, ServedModel]:
    """Each model loaded once, under its name (default: its task); two models under one name are refused.
    Each pipe's `precision_note` says what precision auto chose."""
    from .. import api

    if not specs:
        raise ConfigError("no model to serve; give --model DIR (or NAME=DIR, several times for several models)")
    models: dict[str, ServedModel] = {}
    for name, path in parse_model_specs(specs):
        pipe = api.load(path, device=device, precision=precision).pipeline
        name = name or pipe.name
        if name in models:
            raise ConfigError(
                f"two models would be served as {name!r} ({models[name].path} and {path}); "
                "name them with --model NAME=DIR"
            )
        models[name] = ServedModel(name, path, pipe, device, precision)
    return models


def _model_card(checkpoint: Path, given: Path) -> str | None:
    """The card `nlpcli info --model` prints (cut short), or None: /info answers even when it is unreadable."""
    from ..card import read_card
    from ..errors import CheckpointError

    try:
        text = read_card(checkpoint, given)  # the checkpoint, then the training output above it
    except CheckpointError:
        return None
    return None if text is None else text[:CARD_MAX_CHARS]
