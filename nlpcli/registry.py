"""The one registry of tasks: name -> pipeline class (imported lazily, so the CLI starts fast)."""

from __future__ import annotations

import importlib

from .errors import ConfigError
from .tasks.base import Pipeline

TASKS: dict[str, str] = {
    "ner": "nlpcli.tasks.ie.ner:NerPipeline",
    "lm": "nlpcli.tasks.gen.lm:LmPipeline",
    "qa": "nlpcli.tasks.qa.pipeline:QaPipeline",
    "chat": "nlpcli.tasks.gen.chat:ChatPipeline",
    "ie": "nlpcli.tasks.ie.relation:IePipeline",
}

# Tasks of the command-line contract that are not built yet, with what they will be.
PLANNED: dict[str, str] = {
}


def task_names() -> list[str]:
    return sorted(TASKS)


def get_task(name: str) -> type[Pipeline]:
    """The pipeline class of a task; a clear error for unknown or not-yet-built tasks."""
    if name in TASKS:
        module, _, attr = TASKS[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    if name in PLANNED:
        raise ConfigError(f"task '{name}' ({PLANNED[name]}) is not built yet in this version of nlpcli")
    raise ConfigError(f"unknown task '{name}'; known tasks: {', '.join(task_names())}")
