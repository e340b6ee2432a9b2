"""The tasks by name. A task class registers itself where it is defined (`@register_task`); `get_task`
imports a task only when it is asked for, so the CLI starts without torch.

Where a task is found: the built-in index (`nlpcli.tasks.BUILTIN`), the entry points of installed
packages in the group `nlpcli.tasks` (name = "module:Class"), and classes registered at run time (a task
defined in a script or a test). Nothing here names a task.
"""

from __future__ import annotations

import functools
import importlib
from importlib import metadata
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import ConfigError
from .tasks import BUILTIN

if TYPE_CHECKING:
    from .tasks.base import Pipeline

ENTRY_POINT_GROUP = "nlpcli.tasks"
T = TypeVar("T", bound=type)

_registered: dict[str, Any] = {}  # name -> task class, as registered (imported) so far


def register_task(cls: T) -> T:
    """Class decorator: make a `Pipeline` subclass known by its `name` (`nlpcli predict NAME`, `nlpcli.load`
    of its checkpoints). Registering another class under a name already taken is an error; the same
    class again (a module imported twice) replaces it."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__}: a task class needs a `name` to be registered")
    known = _registered.get(name)
    if known is not None and _where(known) != _where(cls):
        raise ConfigError(f"two tasks are named {name!r}: {_where(known)} and {_where(cls)}")
    _registered[name] = cls
    return cls


def task_names(plugins: bool = True) -> list[str]:
    """Every task's name: the built-in ones in their index order, then those of installed packages and
    those registered at run time. `plugins=False` leaves out installed packages not imported yet (reading
    every package's entry points takes a while: help texts built at each start of the CLI skip it)."""
    found = [*BUILTIN, *(_plugins() if plugins else ()), *_registered]
    return list(dict.fromkeys(found))


def get_task(name: str) -> type[Pipeline]:
    """The pipeline class of a task, imported now if it was not yet; a clear error for an unknown one."""
    cls = _registered.get(name)
    if cls is not None:
        return cls  # registered classes are Pipeline subclasses
    where = BUILTIN.get(name) or _plugins().get(name)
    if where is None:
        raise ConfigError(f"unknown task '{name}'; known tasks: {', '.join(task_names())}")
    module, _, attr = where.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if getattr(cls, "name", None) != name:
        raise ConfigError(f"{where}: that class is the task {getattr(cls, 'name', None)!r}, not {name!r}")
    return register_task(cls)  # a plugin's class may skip the decorator


@functools.cache
def _plugins() -> dict[str, str]:
    """Entry points of installed packages in the `nlpcli.tasks` group: name -> "module:Class"."""
    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _where(cls: Any) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"
