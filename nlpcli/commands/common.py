"""Helpers shared by the verbs: error handling, extra --field options, consoles."""

from __future__ import annotations

import functools
import sys
from typing import Any

import typer
from rich.console import Console

err_console = Console(stderr=True)
out_console = Console(soft_wrap=True)  # long paths stay on one line for scripts


def cli_errors(fn):
    """Turn library errors into a one-line message and exit code 1 (130 for Ctrl-C)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
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

    return wrapper


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


EXTRA_HELP = (
    "Any field of the task's config can be set too, as --field-name VALUE "
    "(e.g. --head standard, --encoder bert-base-chinese); `nlpcli info TASK` lists them with their defaults."
)
