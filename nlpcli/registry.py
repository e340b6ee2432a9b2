"""The one registry of tasks: name -> pipeline class (imported lazily, so the CLI starts fast)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .tasks.base import Pipeline

TASKS: dict[str, str] = {
    "ner": "nlpcli.tasks.ie.ner.pipeline:NerPipeline",
    "ie": "nlpcli.tasks.ie.relation.pipeline:IePipeline",
    "qa": "nlpcli.tasks.qa.pipeline:QaPipeline",
    "lm": "nlpcli.tasks.gen.lm.pipeline:LmPipeline",
    "chat": "nlpcli.tasks.gen.chat.pipeline:ChatPipeline",
}


def task_names() -> list[str]:
    return sorted(TASKS)


def get_task(name: str) -> type[Pipeline]:
    """The pipeline class of a task; a clear error for an unknown one."""
    if name in TASKS:
        module, _, attr = TASKS[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    raise ConfigError(f"unknown task '{name}'; known tasks: {', '.join(task_names())}")
