"""Helpers shared by the verbs: error handling, extra --field options, consoles."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

err_console = Console(stderr=True)
out_console = Console(soft_wrap=True)  # long paths stay on one line for scripts


def cli_errors(fn: F) -> F:
    """Turn library errors into a one-line message and exit code 1 (130 for Ctrl-C)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..errors import NlpcliError, TrainingInterrupted

        try:
            return fn(*args, **kwargs)
        except TrainingInterrupted as e:
            err_console.print(f"[yellow]stopped:[/] {e}", highlight=False)
            raise typer.Exit(130) from None
        except NlpcliError as e:
            err_console.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]  # same signature: functools.wraps


def parse_extra(args: list[str]) -> tuple[dict[str, Any], list[str]]:
    """`--field value`, `--field=value`, bare `--flag` (true) and `--no-flag` (false); bare words are returned apart."""
    options: dict[str, Any] = {}
    bare: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        if tok.startswith("--") and len(tok) > 2:
            key, eq, value = tok[2:].partition("=")
            key = key.replace("-", "_")
            if eq:
                options[key] = value
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                options[key] = args[i + 1]
                i += 1
            elif key.startswith("no_"):
                options[key[3:]] = "false"
            else:
                options[key] = "true"
        else:
            bare.append(tok)
        i += 1
    return options, bare


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()


TASK_HELP = "The task: ner, ie, qa, lm or chat."

EXTRA_HELP = (
    "Any field of the task's config can be set too, as --field-name VALUE or --section.field-name VALUE "
    "(e.g. --head standard, --encoder bert-base-chinese, --inference.batch-size 128); `nlpcli info TASK` lists "
    "them by section (trainer, encoder, model, inference) with their defaults; --config FILE reads a preset."
)
