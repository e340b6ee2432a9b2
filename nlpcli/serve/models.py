"""The models a server answers for: `--model DIR` or `--model NAME=DIR`, each loaded once, and what /info says."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..tasks.base import Pipeline

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
CARD_NAMES = ("README.md", "MODEL_CARD.md")  # a model card beside the weights (or the training output)
CARD_MAX_CHARS = 20_000


@dataclass
class ServedModel:
    name: str
    path: str  # as given on the command line
    pipe: Pipeline

    @property
    def task(self) -> str:
        return self.pipe.name

    def info(self) -> dict[str, Any]:
        """Task, checkpoint directory, metrics.json, model card and config: what a client needs to know."""
        from ..checkpoint import load_checkpoint

        ckpt = load_checkpoint(self.path)  # config.json and metrics.json only; the weights are in memory already
        return {
            "name": self.name,
            "task": self.task,
            "model": self.path,
            "checkpoint": str(ckpt.path),
            # lm and chat sample: a reply may differ from `nlpcli predict`'s (the seed is drawn per batch)
            "sampled": self.pipe.sampled,
            "metrics": ckpt.metrics or None,
            "model_card": _model_card(ckpt.path, Path(self.path)),
            "config": self.pipe.config.to_dict(),
        }


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


def load_models(specs: list[str], device: str = "auto") -> dict[str, ServedModel]:
    """Each model loaded once, under its name (default: its task); two models under one name are refused."""
    from .. import api

    if not specs:
        raise ConfigError("no model to serve; give --model DIR (or NAME=DIR, several times for several models)")
    models: dict[str, ServedModel] = {}
    for name, path in parse_model_specs(specs):
        pipe = api.load(path, device=device).pipeline
        name = name or pipe.name
        if name in models:
            raise ConfigError(
                f"two models would be served as {name!r} ({models[name].path} and {path}); "
                "name them with --model NAME=DIR"
            )
        models[name] = ServedModel(name, path, pipe)
    return models


def _model_card(checkpoint: Path, given: Path) -> str | None:
    for directory in dict.fromkeys([checkpoint, given]):  # the checkpoint, then the training output above it
        for card in CARD_NAMES:
            p = directory / card
            if p.is_file():
                try:
                    return p.read_text(encoding="utf-8", errors="replace")[:CARD_MAX_CHARS]
                except OSError:
                    return None
    return None
