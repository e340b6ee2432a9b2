"""Exceptions that the CLI turns into one-line messages and exit code 1."""

from __future__ import annotations

from pathlib import Path


class NlpcliError(Exception):
    """Base class: a user-facing failure with a clear one-line message."""


class DataError(NlpcliError):
    """Bad input data; names the file and, where known, the line."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.reason = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class CheckpointError(NlpcliError):
    """A checkpoint that is missing, of another task, or of an unknown format."""


class ConfigError(NlpcliError):
    """An option or config value that does not fit the task."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same clean-up runs (training saves last/, outputs roll back)."""


class TrainingInterrupted(NlpcliError):
    """Ctrl-C (or SIGTERM) during training; the state was saved before raising."""

    def __init__(self, step: int, saved_to: str):
        self.step = step
        self.saved_to = saved_to
        super().__init__(f"interrupted at step {step}; state saved to {saved_to} (continue with --resume)")


class UnknownOption(ConfigError):
    """An option or config field that no section of the task has (a usage error on the command line: exit 2)."""
